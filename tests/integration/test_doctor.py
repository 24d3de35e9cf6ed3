"""``quipu doctor``: every configured part checked, each problem with its fix, exit code 1.

Real projects and the real ``quipu`` entry point in a subprocess; the faults are real too (a
head event edited in the SQLite file, a blob store that is a file, a PostgreSQL port nobody
listens on, a profile on a backend that is not configured).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import yaml
from cli_runner import quipu

from quipu.app.bootstrap import init_project
from quipu.app.doctor import CHECKS, Finding, diagnose, doctor_check


def project(tmp_path: Path) -> Path:
    q = init_project(tmp_path / "proj", name="proj", goal="check the doctor")
    q.create_workspace("ws", "a workspace to give the log a few events", "events for doctor")
    q.close()
    return tmp_path / "proj"


def findings(root: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        proc = quipu("doctor", "--json", *extra, cwd=root, check=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return proc.returncode, json.loads(proc.stdout)


def bad_parts(answer: Any) -> dict[str, dict[str, Any]]:
    return {f["part"]: f for f in answer["findings"] if not f["ok"]}


def test_a_healthy_project_passes_every_check(tmp_path: Path) -> None:
    root = project(tmp_path)
    code, answer = findings(root)
    assert code == 0 and answer["ok"] is True
    parts = [f["part"] for f in answer["findings"]]
    assert parts == ["config", "log", "blobs", "executor.local", "profiles"]
    proc = quipu("doctor", cwd=root)
    assert "everything checked is fine" in proc.stdout


def test_a_damaged_head_event_is_a_broken_chain(tmp_path: Path) -> None:
    root = project(tmp_path)
    db = sqlite3.connect(root / ".quipu" / "events.db", isolation_level=None)
    rowid, state = db.execute("SELECT rowid, state FROM stored_events ORDER BY rowid DESC "
                              "LIMIT 1").fetchone()
    db.execute("UPDATE stored_events SET state=? WHERE rowid=?",
               (bytes(state).replace(b"ws", b"wz"), rowid))
    db.close()
    code, answer = findings(root)
    assert code == 1
    log = bad_parts(answer)["log"]
    assert f"broken at position {rowid}" in log["message"]
    assert "quipu audit verify" in log["fix"]


def test_a_blob_store_that_cannot_be_written_is_named_with_the_fix(tmp_path: Path) -> None:
    root = project(tmp_path)
    blobs = root / ".quipu" / "blobs"
    shutil.rmtree(blobs, ignore_errors=True)
    blobs.write_text("not a directory")
    code, answer = findings(root)
    assert code == 1
    problem = bad_parts(answer)["blobs"]
    assert "not writable" in problem["message"] and "writable" in problem["fix"]


def test_an_unreachable_log_is_reported_not_raised(tmp_path: Path) -> None:
    root = project(tmp_path)
    code, answer = findings(root, env={
        "QUIPU_EVENTSTORE_URL": "postgresql://postgres:postgres@127.0.0.1:1/quipu_test"})
    assert code == 1
    problem = bad_parts(answer)["log"]
    assert "cannot be opened" in problem["message"] and problem["fix"]


def test_a_backend_that_is_not_available_and_a_profile_without_its_backend(
        tmp_path: Path) -> None:
    root = project(tmp_path)
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["profiles"] = {"boxed": {"backend": "docker", "image": "python:3.11"}}
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    code, answer = findings(root)
    assert code == 1
    problem = bad_parts(answer)["profiles"]
    assert "'boxed'" in problem["message"] and "executor.backend: docker" in problem["fix"]


def test_an_invalid_config_is_the_one_finding(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "quipu.yaml").write_text("name: proj\nexecutor: {backend: kubernetes}\n")
    code, answer = findings(root)
    assert code == 1
    [finding] = answer["findings"]
    assert finding["part"] == "config" and "executor.backend" in finding["message"]
    proc = quipu("doctor", cwd=root, check=False)
    assert proc.returncode == 1 and "FAIL config" in proc.stdout


def test_an_adapter_adds_its_own_check_and_a_broken_check_is_a_finding(
        tmp_path: Path) -> None:
    root = project(tmp_path)

    @doctor_check("extra")
    def extra(_root: Path, _config: Any) -> list[Finding]:
        return [Finding("extra", True, "checked by an adapter")]

    @doctor_check("broken")
    def broken(_root: Path, _config: Any) -> list[Finding]:
        raise RuntimeError("boom")

    try:
        found = diagnose(root)
    finally:
        CHECKS.pop("extra")
        CHECKS.pop("broken")
    assert Finding("extra", True, "checked by an adapter") in found
    [failed] = [f for f in found if f.part == "broken"]
    assert not failed.ok and "RuntimeError: boom" in failed.message


def test_a_bucket_that_is_missing_denied_or_unreachable_is_named_with_the_fix(
        tmp_path: Path) -> None:
    """The GCS blob store, checked against a real fake-gcs-server: a bucket that does not
    exist, one that refuses access (403 from the fault proxy in front of the emulator), and
    an endpoint nobody answers on; and a healthy bucket passes."""
    from gcs_emulator import Emulator, FaultProxy, free_port

    emulator = Emulator(tmp_path / "gcs")
    proxy = FaultProxy(lambda: emulator.url).start()
    emulator.external_url = proxy.url
    emulator.start()
    try:
        emulator.create_bucket("lab-bucket")
        root = project(tmp_path)
        config_file = root / "quipu.yaml"
        base = yaml.safe_load(config_file.read_text())

        def blobs_finding(bucket: str, endpoint: str) -> tuple[int, dict[str, Any] | None]:
            config_file.write_text(yaml.safe_dump({**base, "blobs": {
                "url": f"gs://{bucket}/proj", "endpoint": endpoint, "retry_seconds": 1}}))
            code, answer = findings(root)
            return code, bad_parts(answer).get("blobs")

        assert blobs_finding("lab-bucket", proxy.url) == (0, None)
        code, missing = blobs_finding("no-such-bucket", proxy.url)
        assert code == 1 and missing is not None
        assert "no-such-bucket" in missing["message"] and missing["fix"]
        proxy.rules.append(lambda method, path: 403)
        code, denied = blobs_finding("lab-bucket", proxy.url)
        assert code == 1 and denied is not None
        assert "access" in (denied["message"] + denied["fix"]).lower()
        proxy.rules.clear()
        code, down = blobs_finding("lab-bucket", f"http://127.0.0.1:{free_port()}")
        assert code == 1 and down is not None and down["fix"]
    finally:
        emulator.stop()
        proxy.stop()
