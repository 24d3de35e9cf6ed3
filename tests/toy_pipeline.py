"""A toy two-stage pipeline (prep makes features, train logs accuracy) shared by the run tests
that drive Quipu from outside: the MCP client (tests/e2e) and the command line (tests/integration).
"""

from __future__ import annotations

from pathlib import Path

PIPELINE = """\
stages:
  - name: prep
    outputs:
      features: {type: npy, schema: {shape: [null, 4], dtype: float64}}
  - name: train
    config_schema:
      epochs: {type: int, min: 1, default: 3}
    inputs:
      features: {type: npy, from_stage: prep, schema: {shape: [null, 4], dtype: float64}}
    outputs:
      model: {type: npy, schema: {shape: [4], dtype: float64}}
"""

PREP = """\
import numpy as np
from quipu import sdk


def main() -> None:
    sdk.runtime_log("making features")
    sdk.save_output("features", np.arange(40, dtype=np.float64).reshape(10, 4))
    sdk.finish()


if __name__ == "__main__":
    main()
"""

TRAIN = """\
import numpy as np
from quipu import sdk


def main() -> None:
    features = sdk.load_input("features")
    epochs = sdk.get_config()["epochs"]
    for epoch in range(epochs):
        sdk.log_metric("accuracy", 0.5 + 0.1 * epoch, step=epoch)
    print(f"trained on {features.shape[0]} rows for {epochs} epochs")
    sdk.save_output("model", features.mean(axis=0))
    sdk.finish()


if __name__ == "__main__":
    main()
"""

SPEC = {
    "primary_metric": "accuracy", "direction": "maximize", "min_value": 0.6,
    "goal_value": 0.8, "dataset_split": "val", "tolerance": 0.01,
    "context": "toy accuracy that climbs by 0.1 per epoch from 0.5",
}


def write_toy_pipeline(slot: Path) -> None:
    """Put the toy pipeline's files into a mounted slot directory."""
    (slot / "modules").mkdir(parents=True, exist_ok=True)
    (slot / "pipeline.yaml").write_text(PIPELINE)
    (slot / "modules" / "prep.py").write_text(PREP)
    (slot / "modules" / "train.py").write_text(TRAIN)


# A pipeline for tests that record executor facts by hand (no stage code needs to run).
FACTS_PIPELINE = """stages:
  - name: prep
    outputs:
      features: {type: npy, schema: null}
  - name: train
    inputs:
      features: {type: npy, from_stage: prep, schema: null}
    outputs:
      model: {type: file, schema: null}
"""
FACTS_SPEC = {"primary_metric": "val_acc", "direction": "maximize", "min_value": 0.8,
              "goal_value": 0.9, "dataset_split": "val", "tolerance": 0.01,
              "context": "validation accuracy of the digits classifier"}
