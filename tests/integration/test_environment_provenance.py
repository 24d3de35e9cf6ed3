"""Every launched run records the environment it ran with: small facts in the log, the package
list in the blob store, names of variables but never their values."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_executor_helpers import ONE_STAGE, drive, ended, executor, make_project, start

from quipu.adapters.blobs import LocalBlobStore
from quipu.adapters.executors import LocalExecutor
from quipu.adapters.executors._environment import (
    EnvironmentProbe,
    gpu_facts,
    relevant_env_names,
)
from quipu.app.bootstrap import Quipu
from quipu.core.errors import InvalidInput
from quipu.core.log import decode
from quipu.core.runs.events import RunLaunched

SOLO = """\
    from quipu import sdk

    sdk.save_output("result", {"answer": 42})
    """

# What `nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader` prints.
NVIDIA_CSV = ("NVIDIA A100-SXM4-40GB, 535.104.05, 40960 MiB\n"
              "NVIDIA A100-SXM4-40GB, 535.104.05, 40960 MiB\n")


def _fake_tool(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def _launched(q: Quipu, run_id: str) -> RunLaunched:
    found = [r.event for r in map(decode, q.store.read())
             if isinstance(r.event, RunLaunched) and r.event.run_id == run_id]
    assert len(found) == 1 and isinstance(found[0], RunLaunched)
    return found[0]


class TestTheProbe:
    def test_only_relevant_names_are_kept_and_never_values(self) -> None:
        env = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "CUDA_VISIBLE_DEVICES": "0,1",
               "OMP_NUM_THREADS": "4", "QUIPU_TOKEN": "tok-123", "PYTHONHASHSEED": "0",
               "AWS_SECRET_ACCESS_KEY": "s3cr3t", "GITHUB_TOKEN": "ghp_x", "USER": "me"}
        names = relevant_env_names(env)
        assert names == ["CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "PATH",
                         "PYTHONHASHSEED", "QUIPU_TOKEN"]

    @given(st.dictionaries(st.text("ABCDHLMOPQTUY_", min_size=1, max_size=12),
                           st.text(min_size=1, max_size=20), max_size=20))
    def test_names_are_a_sorted_subset_of_the_names_given(self, env: dict[str, str]) -> None:
        names = relevant_env_names(env)
        assert names == sorted(set(names)) and set(names) <= set(env)
        assert all(n.endswith("PATH") or n in ("HOME", "LANG", "TZ") or n.startswith(
            ("CUDA_", "PYTHON", "OMP_", "MKL_", "QUIPU_", "LD_", "HF_", "TORCH", "LC_"))
            for n in names)
        assert {n for n in env if n.endswith("PATH") or n.startswith("QUIPU_")} <= set(names)

    def test_gpus_are_read_from_nvidia_smi_csv(self, tmp_path: Path) -> None:
        _fake_tool(tmp_path / "bin", f"printf '{NVIDIA_CSV}'")
        assert gpu_facts(str(tmp_path / "bin")) == [
            {"name": "NVIDIA A100-SXM4-40GB", "driver": "535.104.05", "memory": "40960 MiB"}] * 2

    def test_no_gpu_without_nvidia_smi_or_when_it_fails_or_hangs(self, tmp_path: Path) -> None:
        assert gpu_facts(str(tmp_path / "empty")) is None
        _fake_tool(tmp_path / "failing", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
        assert gpu_facts(str(tmp_path / "failing")) is None
        _fake_tool(tmp_path / "hanging", "exec sleep 30")
        assert gpu_facts(str(tmp_path / "hanging"), timeout=0.2) is None

    def test_the_interpreter_is_probed_once_until_its_site_packages_change(
            self, tmp_path: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")],
                       check=True)
        python = str(tmp_path / "venv" / "bin" / "python")
        blobs = LocalBlobStore(tmp_path / "blobs")
        probe = EnvironmentProbe(blobs)
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
        first = probe.facts(python, env)
        assert probe.facts(python, env) == first and probe.probes == 1
        assert first["packages"]["count"] == 0

        # Installing a distribution adds a .dist-info directory to site-packages.
        site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
        info = site / "tiny_thing-1.2.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny_thing\nVersion: 1.2\n")
        second = probe.facts(python, env)
        assert probe.probes == 2
        assert second["packages"]["count"] == 1
        listing = blobs.get_bytes(second["packages"]["sha256"])
        assert listing == b"tiny_thing==1.2\n"
        assert second["packages"]["sha256"] == hashlib.sha256(listing).hexdigest()

    def test_the_in_stage_probe_leaves_out_the_stages_code_and_every_value(
            self, tmp_path: Path) -> None:
        """``environment_facts`` (what the wrapper writes inside a container) lists the
        distributions the interpreter imports from, not one in an excluded directory (the
        stage's code), and names variables without their values."""
        def dist(folder: Path, name: str, version: str) -> None:
            info = folder / f"{name}-{version}.dist-info"
            info.mkdir(parents=True)
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")

        dist(tmp_path / "site", "kept_thing", "2.0")
        dist(tmp_path / "code", "vendored_thing", "0.1")
        script = ("import json, sys\n"
                  "from quipu.adapters.executors._probe import environment_facts\n"
                  "print(json.dumps(environment_facts(exclude=sys.argv[1:])))\n")
        env = {"PATH": os.environ["PATH"], "HF_TOKEN": "fake-hf-Token-77aa",
               "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(tmp_path / "code"),
                                              *sys.path[1:]])}

        def probe(*exclude: Path) -> dict[str, Any]:
            done = subprocess.run([sys.executable, "-c", script, *map(str, exclude)],
                                  capture_output=True, text=True, env=env, check=True)
            assert "fake-hf-Token-77aa" not in done.stdout
            return dict(json.loads(done.stdout))

        everything, without_code = probe(), probe(tmp_path / "code")
        assert {"kept_thing==2.0", "vendored_thing==0.1"} <= set(everything["packages"])
        assert "kept_thing==2.0" in without_code["packages"]
        assert "vendored_thing==0.1" not in without_code["packages"]
        assert set(everything["packages"]) - set(without_code["packages"]) == {
            "vendored_thing==0.1"}
        assert {"HF_TOKEN", "PATH", "PYTHONPATH"} <= set(without_code["env_names"])
        assert without_code["python"] == ".".join(map(str, sys.version_info[:3]))
        assert "paths" not in without_code

    def test_an_interpreter_that_cannot_be_probed_gives_an_error_not_a_failure(
            self, tmp_path: Path) -> None:
        broken = tmp_path / "python"
        broken.write_text("#!/bin/sh\necho 'no such interpreter' >&2\nexit 3\n")
        broken.chmod(0o755)
        facts = EnvironmentProbe(LocalBlobStore(tmp_path / "blobs")).facts(
            str(broken), {"PATH": "/usr/bin"})
        assert facts["error"] == "RuntimeError: exit 3: no such interpreter"
        assert "packages" not in facts and facts["env_names"] == ["PATH"]


class TestALaunchRecordsItsEnvironment:
    def test_the_launch_event_holds_the_facts_and_the_package_blob(self, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
        # A GPU machine, as far as the stage's PATH can tell.
        tool = _fake_tool(tmp_path / "gpu-bin", f"printf '{NVIDIA_CSV}'")
        monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
        q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
        try:
            first = start(q)["solo"]
            ex = executor(q)
            drive(ex, ended(q, first))
            env = _launched(q, first).environment
            assert env is not None
            assert env["python"] == ".".join(map(str, sys.version_info[:3]))
            assert env["executable"] == sys.executable
            assert env["cpu_count"] == os.cpu_count() and env["machine"] == os.uname().machine
            assert env["gpu"] == [{"name": "NVIDIA A100-SXM4-40GB", "driver": "535.104.05",
                                   "memory": "40960 MiB"}] * 2
            assert {"PATH", "PYTHONPATH", "QUIPU_RUN_ID"} <= set(env["env_names"])
            listing = q.blobs.get_bytes(env["packages"]["sha256"]).decode()
            lines = listing.splitlines()
            assert len(lines) == env["packages"]["count"] > 0
            assert any(line.startswith("quipu==") for line in lines)
            assert all(line.count("==") == 1 for line in lines)
            keys = [line.split("==")[0].lower().replace("_", "-").replace(".", "-")
                    for line in lines]
            assert keys == sorted(keys)

            # The second launch with the same interpreter costs no probe.
            q.finalize_run(first, {"ml_outcome": "unknown", "notes": "only the record matters"})
            second = start(q)["solo"]
            drive(ex, ended(q, second))
            assert ex.probe.probes == 1
            assert _launched(q, second).environment == env

            seen = q.inspect_run(first, include=["provenance"])["provenance"]["environment"]
            assert seen == env
        finally:
            q.close()

    def test_inspect_run_pages_the_package_list(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
        try:
            run_id = start(q)["solo"]
            drive(executor(q), ended(q, run_id))
            env = _launched(q, run_id).environment
            assert env is not None
            lines = q.blobs.get_bytes(env["packages"]["sha256"]).decode().splitlines()
            got: list[str] = []
            offset: int | None = 0
            while offset is not None:
                page = q.inspect_run(run_id, include=["environment"], packages_offset=offset,
                                     packages_limit=50)["environment"]["packages"]
                assert len(page["items"]) <= 50 and page["count"] == len(lines)
                got += page["items"]
                offset = page["next_offset"]
            assert got == lines
            with pytest.raises(InvalidInput) as bad:
                q.inspect_run(run_id, include=["environment"], packages_limit=0)
            assert bad.value.code == "invalid_page"
        finally:
            q.close()


IMAGE_SECRET = "fake-image-Token-5e21c0d7"
"""The value an image's ENV gives ``HF_TOKEN`` in the Docker case: the stage sees it, the record
never does."""


def _secrets_executor(request: pytest.FixtureRequest, q: Quipu, backend: str) -> LocalExecutor:
    """The local executor (``local``), or one whose stage runs on the Docker backend in the
    test image plus an ``ENV HF_TOKEN=<secret>`` (``docker``)."""
    if backend == "local":
        return executor(q)
    from docker_image import build_derived_image

    from quipu.adapters.docker import DockerBackend
    from quipu.core.ports import Resources

    client = request.getfixturevalue("docker_client")
    image = build_derived_image(client, request.getfixturevalue("python_image"),
                                "quipu-test-secrets:env", env={"HF_TOKEN": IMAGE_SECRET})
    request.addfinalizer(lambda: client.images.remove(image, force=True))
    profile = Resources(profile="box", backend="docker", image=image, memory_mb=512)
    return executor(q, backends={"docker": DockerBackend(project="proj", blobs=q.blobs)},
                    profiles=lambda _config: profile)


@pytest.mark.parametrize("backend", ["local", pytest.param("docker", marks=[
    pytest.mark.docker, pytest.mark.timeout(300)])])
def test_secrets_in_the_engines_environment_never_enter_the_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
        backend: str) -> None:
    """Fake secrets in the environment of the engine (one in a variable whose name is
    recorded, one hidden in PATH, which a local stage is given) and, for a Docker run, in the
    image's ENV (whose names the in-container probe records) appear in no file Quipu wrote:
    the log, views, snapshots, blobs, STATE.md, nor the run directory's side files."""
    secrets = {"AWS_SECRET_ACCESS_KEY": "fake-aws-Secret-7f3a9c1e",
               "QUIPU_TOKEN": "fake-quipu-Token-b5d20e88",
               "HF_TOKEN": "fake-hf-Token-0c4e6a12"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    hidden = "fake-path-Secret-91ab3f"
    monkeypatch.setenv("PATH", f"{os.environ['PATH']}{os.pathsep}/nonexistent/{hidden}")
    q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
    try:
        run_id = start(q)["solo"]
        drive(_secrets_executor(request, q, backend), ended(q, run_id))
        env = _launched(q, run_id).environment
        assert env is not None and "PATH" in env["env_names"] and "error" not in env
        if backend == "docker":
            assert "HF_TOKEN" in env["env_names"] and env["backend"] == "docker"
        q.finalize_run(run_id, {"ml_outcome": "unknown", "notes": "only the record matters"})
        q.inspect_run(run_id, include=["provenance", "environment", "events"])
        q.status()
    finally:
        q.close()

    written = [p for p in (tmp_path / "proj").rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"events.db", "views.db", "snapshots.db", "STATE.md"} <= names
    assert any("blobs" in p.parts for p in written)
    if backend == "docker":
        assert "environment.json" in names
    for path in written:
        data = path.read_bytes()
        for value in [*secrets.values(), hidden, IMAGE_SECRET]:
            assert value.encode() not in data, f"{value} leaked into {path}"


CHECKPOINTING = """\
    import numpy as np
    from quipu import sdk

    for step in range(2):
        sdk.save_checkpoint("weights", np.full(4, step, dtype=np.int64), step=step)
    sdk.save_checkpoint("state", {"epoch": 0})
    sdk.save_checkpoint("state", {"epoch": 1})  # replaces the first 'latest'
    sdk.save_output("result", {"answer": 42})
    """


def test_checkpoints_a_stage_saved_are_recorded_with_their_blobs(tmp_path: Path) -> None:
    """Each save still on disk becomes a CheckpointSaved whose manifest restores the same
    directory; a 'latest' replaced by a later save is recorded once, as it was last saved."""
    import json

    from quipu.adapters.executors._rundir import restore_manifest
    from quipu.core.runs.events import CheckpointSaved
    from quipu.core.workspaces.versions import Manifest
    from quipu.rundir import tree_digest

    q = make_project(tmp_path, ONE_STAGE, {"solo": CHECKPOINTING})
    try:
        run_id = start(q)["solo"]
        ex = executor(q)
        drive(ex, ended(q, run_id))
        points = [r.event for r in map(decode, q.store.read())
                  if isinstance(r.event, CheckpointSaved)]
        assert [(p.name, p.step) for p in points] == [("weights", 0), ("weights", 1),
                                                     ("state", None)]
        run_dir = Path(q.runs.load_run(run_id).run_dir or "")
        lines = [json.loads(x) for x in (run_dir / ".quipu" / "checkpoints.jsonl")
                 .read_text().splitlines()]
        assert {(p.sha256, p.size) for p in points} == {
            (x["sha256"], x["size"]) for x in lines[:2] + lines[3:]}
        for point in points:
            dest = tmp_path / "restored" / point.name / str(point.step)
            restore_manifest(q.blobs, Manifest.from_bytes(q.blobs.get_bytes(point.manifest)),
                             dest)
            assert tree_digest(dest) == (point.sha256, point.size)
        # Watching the same run directory again (a restarted executor) records nothing twice.
        before = q.store.head()
        stage_runs = q.runs
        stage_runs.record_checkpoint(run_id, actor="test:1", **{
            k: getattr(points[0], k)
            for k in ("name", "step", "sha256", "size", "manifest", "files", "path")})
        assert q.store.head() == before
        shown = q.inspect_run(run_id, include=["provenance"])["provenance"]["checkpoints"]
        assert {n: (c["saves"], c["step"]) for n, c in shown.items()} == {
            "weights": (2, 1), "state": (1, None)}
        assert shown["weights"]["sha256"] == points[1].sha256
    finally:
        q.close()
