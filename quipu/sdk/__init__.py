"""What stage code imports inside a Quipu run.

A stage reads its inputs and config, writes its outputs, and reports progress::

    from quipu import sdk

    def main() -> None:
        digits = sdk.load_input("digits")
        epochs = sdk.get_config()["epochs"]
        for epoch in range(epochs):
            ...
            sdk.log_metric("loss", loss, step=epoch)
            sdk.heartbeat()
            if sdk.should_stop():
                sdk.save_checkpoint("model", weights, step=epoch)
                break
        sdk.save_output("model", weights)
        sdk.finish()

Everything goes through files in the run directory (``$QUIPU_RUN_DIR``), so the same stage runs
as a local process, in a container or on a remote machine. Outside a run every call raises
:class:`NotInRun`; to test a stage, use :func:`quipu.sdk.testing.stage`.
"""

from quipu.sdk._checkpoints import Checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from quipu.sdk._context import (
    CheckpointNotFound,
    NotInRun,
    SchemaMismatch,
    SdkError,
    SdkWarning,
    UnknownSignal,
    finish,
    get_config,
    heartbeat,
    runtime_log,
    should_stop,
)
from quipu.sdk._io import get_input_path, get_output_path, load_input, log_artifact, save_output
from quipu.sdk._metrics import log_metric, log_metrics

__all__ = [
    "Checkpoint",
    "CheckpointNotFound",
    "NotInRun",
    "SchemaMismatch",
    "SdkError",
    "SdkWarning",
    "UnknownSignal",
    "finish",
    "get_config",
    "get_input_path",
    "get_output_path",
    "heartbeat",
    "list_checkpoints",
    "load_checkpoint",
    "load_input",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "runtime_log",
    "save_checkpoint",
    "save_output",
    "should_stop",
]
