"""What an interpreter and its environment are: the facts a launch records.

Standard library only, and importing nothing of Quipu's: the same code runs in three places,
so the facts of a local stage and of a containerised one mean the same thing:

* the local backend runs this file's text in the stage's interpreter (``python -c``), once per
  interpreter (``_environment.EnvironmentProbe``);
* the stage wrapper (``_wrapper``) calls ``environment_facts`` inside a container before the
  stage starts, when the Docker backend asks for it, and writes them to
  ``.quipu/environment.json``;
* ``relevant_env_names`` and ``gpu_facts`` serve the engine side too.

Only the NAMES of relevant variables are kept, never their values: values hold tokens and keys.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["ENV_NAMES", "ENV_NAME_PREFIXES", "GPU_QUERY", "GPU_TIMEOUT", "environment_facts",
           "gpu_facts", "interpreter_facts", "relevant_env_names"]

ENV_NAME_PREFIXES = ("CUDA_", "NVIDIA_", "NCCL_", "CUDNN_", "PYTHON", "OMP_", "MKL_",
                     "OPENBLAS_", "QUIPU_", "TORCH", "TF_", "XLA_", "JAX_", "HF_", "LC_", "LD_")
"""A variable whose name starts with one of these is relevant to how a stage runs."""
ENV_NAMES = frozenset({"HOME", "LANG", "TZ", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV"})
"""Relevant variables named exactly; besides these, every name ending in ``PATH``."""

GPU_TIMEOUT = 5.0
GPU_QUERY = ("--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")


def relevant_env_names(env: Mapping[str, str]) -> list[str]:
    """The sorted names in ``env`` that bear on how a stage runs (values are never kept):
    those starting with ``ENV_NAME_PREFIXES``, those in ``ENV_NAMES``, and any ending in PATH."""
    return sorted(name for name in env
                  if name.startswith(ENV_NAME_PREFIXES) or name in ENV_NAMES
                  or name.endswith("PATH"))


def gpu_facts(path: str | None, *, timeout: float = GPU_TIMEOUT) -> list[dict[str, str]] | None:
    """The GPUs ``nvidia-smi`` (looked up on ``path``) reports: ``[{name, driver, memory}]``.

    None when there is no ``nvidia-smi`` on ``path``, or it fails, times out or prints nothing
    that parses (a machine without a usable NVIDIA GPU).
    """
    tool = shutil.which("nvidia-smi", path=path)
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, *GPU_QUERY], capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    gpus = []
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 2 and fields[0]:
            gpus.append({"name": fields[0], "driver": fields[1],
                         "memory": fields[2] if len(fields) > 2 else ""})
    return gpus or None


def interpreter_facts(exclude: Collection[str] = ()) -> dict[str, Any]:
    """This interpreter's facts: version, executable, platform, CPU count, the directories it
    imports from (``paths``, without those in ``exclude``: the stage's own code) and the
    installed distributions found there, ``name==version`` sorted by normalised name."""
    import importlib.metadata

    skip = {os.path.abspath(p) for p in exclude if p}
    paths = [p for p in sys.path
             if p and os.path.isdir(p) and os.path.abspath(p) not in skip]
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=paths):
        name = dist.metadata["Name"]
        if not name:
            continue
        key = name.lower().replace("_", "-").replace(".", "-")
        seen.setdefault(key, f"{name}=={dist.version}")  # the first on the path is imported
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "paths": paths,
        "packages": [seen[k] for k in sorted(seen)],
    }


def environment_facts(exclude: Collection[str] = ()) -> dict[str, Any]:
    """The whole environment this process runs in, as a stage sees it: ``interpreter_facts``
    plus its GPUs and the names of its relevant variables (``paths`` left out)."""
    facts = interpreter_facts(exclude)
    del facts["paths"]
    facts["gpu"] = gpu_facts(os.environ.get("PATH"))
    facts["env_names"] = relevant_env_names(os.environ)
    return facts


def _main() -> None:
    # ``python -c`` of this file's text (the local backend's probe): the interpreter's facts.
    import json

    print(json.dumps(interpreter_facts()))
