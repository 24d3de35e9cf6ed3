"""A second host joins a project: two project directories on one PostgreSQL log and one GCS
bucket (a real fake-gcs-server process), driven through the real `quipu` entry point.

A version saved on host a mounts on host b, a stage there consumes an output host a's run
produced (its bytes come from the bucket), and host a sees b's run, its lineage and its
output. Every refusal of `quipu init --join` leaves the directory as it was and records
nothing.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cli_runner import as_json, quipu, refused
from gcs_emulator import Emulator
from psycopg import sql
from toy_pipeline import PIPELINE, SPEC, TRAIN, write_toy_pipeline

pytestmark = pytest.mark.timeout(600)

WHY = "share this project between two hosts"
PREP_ONLY = {"ml_outcome": "unknown", "notes": "preprocessing only: nothing to judge"}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = Emulator(tmp_path_factory.mktemp("gcs")).start()
    yield running
    running.stop()


class Shared:
    """A fresh PostgreSQL database and bucket: what two hosts share."""

    def __init__(self, postgres_url: str, emulator: Emulator) -> None:
        self.server = postgres_url
        self.emulator = emulator
        self.databases: list[str] = []

    def log(self) -> str:
        """The URL of a new, empty database."""
        name = f"quipu_join_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        return self.server.rsplit("/", 1)[0] + "/" + name

    def bucket(self) -> str:
        """The URL of a new, empty bucket prefix."""
        name = f"q-{uuid.uuid4().hex[:10]}"
        self.emulator.create_bucket(name)
        return f"gs://{name}/lab"

    def drop(self) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            for name in self.databases:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


@pytest.fixture()
def shared(postgres_url: str, emulator: Emulator,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Shared]:
    # What a real host sets to reach an emulator; every `quipu` subprocess inherits it.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    made = Shared(postgres_url, emulator)
    yield made
    made.drop()


def host_a(tmp_path: Path, shared: Shared) -> tuple[Path, str, str]:
    """Host a's project on a fresh log and bucket, with workspace 'toy' saved in w1."""
    log, bucket = shared.log(), shared.bucket()
    quipu("init", "a", "--goal", "learn digits on two machines", "--eventstore", log,
          "--blobs", bucket, "--host", "a", cwd=tmp_path)
    root = tmp_path / "a"
    quipu("workspace", "create", "toy", "--goal", "a toy pipeline", "--reason", WHY, cwd=root)
    quipu("workspace", "mount", "toy", "w1", "--reason", WHY, cwd=root)
    write_toy_pipeline(root / "workspaces" / "w1")
    quipu("workspace", "save", "w1", "--message", "the toy pipeline, saved on host a",
          cwd=root)
    return root, log, bucket


def joined_hosts(root: Path) -> list[dict[str, Any]]:
    return list(as_json("status", cwd=root)["project"].get("hosts", []))


def test_a_version_saved_on_one_host_runs_on_another(tmp_path: Path, shared: Shared) -> None:
    a, _, bucket = host_a(tmp_path, shared)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    prep = as_json("run", "start", "w1", "--stage", "prep", "--reason", "make features on a",
                   "--spec", str(spec), "--wait", cwd=a)
    prep_id = prep["queued"][0]["stage_run_id"]
    assert prep["stage_runs"][0]["state"] == "succeeded"
    quipu("run", "finalize", prep_id, "--results", json.dumps(PREP_ONLY), cwd=a)
    quipu("workspace", "hibernate", "w1", "--reason", "hand the workspace to host b", cwd=a)

    # host b: a copy of a's quipu.yaml, then --join
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(a / "quipu.yaml", b / "quipu.yaml")
    out = quipu("init", str(b), "--join", "--host", "b", "--slots", "2", cwd=tmp_path).stdout
    assert "Joined project 'a'" in out and "b-w1, b-w2" in out
    config = yaml.safe_load((b / "quipu.yaml").read_text())
    assert config["slots"] == ["b-w1", "b-w2"] and config["blobs"]["url"] == bucket
    assert sorted(p.name for p in (b / "workspaces").iterdir()) == ["b-w1", "b-w2"]
    assert joined_hosts(b) == [{"host": "a", "slots": ["w1", "w2", "w3"]},
                               {"host": "b", "slots": ["b-w1", "b-w2"]}]

    quipu("workspace", "mount", "toy", "b-w1", "--reason", "continue training on host b",
          cwd=b)
    slot = b / "workspaces" / "b-w1"
    assert (slot / "pipeline.yaml").read_text() == PIPELINE  # a's version, from the bucket
    assert (slot / "modules" / "train.py").read_text() == TRAIN
    train = as_json("run", "start", "b-w1", "--stage", "train", "--reason",
                    "train on host b from a's features", "--spec", str(spec), "--wait", cwd=b)
    train_id = train["queued"][0]["stage_run_id"]
    assert train["stage_runs"][0]["state"] == "succeeded", train
    logs = quipu("run", "logs", train_id, cwd=b).stdout
    assert "trained on 10 rows" in logs  # a's features, read from the bucket

    # host a sees b's run, its lineage back to its own run, and b in STATE.md
    seen = as_json("run", "inspect", train_id, cwd=a)
    assert seen["state"] == "succeeded"
    assert "trained on 10 rows" in quipu("run", "logs", train_id, cwd=a).stdout  # the log blob
    lineage = quipu("lineage", train_id, "--direction", "upstream", cwd=a).stdout
    assert prep_id in lineage
    state_md = quipu("status", cwd=a).stdout
    assert "**Hosts:** a (w1, w2, w3); b (b-w1, b-w2)" in state_md
    assert "(mounted in b-w1)" in state_md
    # both hosts' doctors pass: log, chain and bucket
    for root in (a, b):
        doctor = quipu("doctor", cwd=root, check=False)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_every_refused_join_leaves_the_directory_and_the_log_as_they_were(
        tmp_path: Path, shared: Shared) -> None:
    a, _, _ = host_a(tmp_path, shared)
    target = tmp_path / "b"
    like = ("--like", str(a / "quipu.yaml"))

    def nothing_made() -> None:
        assert not target.exists(), sorted(p.name for p in target.rglob("*"))
        assert "hosts" not in as_json("status", cwd=a)["project"]

    refused("join_needs_config", "init", str(target), "--join", cwd=tmp_path)
    nothing_made()
    # the log must be one other hosts reach, and so must the blobs
    sqlite_project = tmp_path / "alone"
    quipu("init", str(sqlite_project), "--goal", "one machine only", cwd=tmp_path)
    refused("join_needs_shared_log", "init", str(target), "--join", "--like",
            str(sqlite_project / "quipu.yaml"), cwd=tmp_path)
    refused("join_needs_shared_blobs", "init", str(target), "--join", *like, "--blobs",
            "local", cwd=tmp_path)
    nothing_made()
    # a log without a project, settings naming another project, a bucket without its blobs
    refused("nothing_to_join", "init", str(target), "--join", *like, "--eventstore",
            shared.log(), cwd=tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load((a / "quipu.yaml").read_text()),
                                     "name": "elsewhere"}))
    refused("join_wrong_project", "init", str(target), "--join", "--like", str(other),
            cwd=tmp_path)
    refused("join_blobs_missing", "init", str(target), "--join", *like, "--blobs",
            shared.bucket(), cwd=tmp_path)
    nothing_made()
    # the host that created the project cannot join it again under its own name
    refused("host_taken", "init", str(target), "--join", *like, "--host", "a", cwd=tmp_path)
    nothing_made()
    # a directory that holds only the copied quipu.yaml keeps exactly that after a refusal
    target.mkdir()
    shutil.copy(a / "quipu.yaml", target / "quipu.yaml")
    refused("host_taken", "init", str(target), "--join", "--host", "a", cwd=tmp_path)
    assert sorted(p.name for p in target.iterdir()) == ["quipu.yaml"]
    assert (target / "quipu.yaml").read_bytes() == (a / "quipu.yaml").read_bytes()
    # and then joins
    quipu("init", str(target), "--join", "--host", "b", cwd=tmp_path)
    assert [h["host"] for h in joined_hosts(a)] == ["a", "b"]


def test_a_hand_copied_quipu_yaml_is_refused_until_the_directory_joins(
        tmp_path: Path, shared: Shared) -> None:
    """The issue's trap: quipu.yaml copied by hand would make host b use host a's slots on
    the shared log. Every command refuses such a directory, naming the fix."""
    a, _, _ = host_a(tmp_path, shared)
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(a / "quipu.yaml", b / "quipu.yaml")
    refused("not_joined", "status", cwd=b)
    refused("not_joined", "workspace", "mount", "toy", "w2", "--reason", WHY, cwd=b)
    assert "hosts" not in as_json("status", cwd=a)["project"]
    quipu("init", str(b), "--join", "--host", "b", cwd=tmp_path)  # the refusals left no trace
    assert as_json("status", cwd=b)["project"]["hosts"][1] == {
        "host": "b", "slots": ["b-w1", "b-w2", "b-w3"]}


def test_a_host_that_lost_its_directory_takes_its_slots_back(tmp_path: Path,
                                                             shared: Shared) -> None:
    a, _, _ = host_a(tmp_path, shared)
    b = tmp_path / "b"
    quipu("init", str(b), "--join", "--like", str(a / "quipu.yaml"), "--host", "b",
          "--slots", "1", cwd=tmp_path)
    hosts = joined_hosts(a)
    shutil.rmtree(b / ".quipu")  # derived: views, caches, and the host record
    refused("not_joined", "status", cwd=b)
    refused("unknown_host", "init", str(b), "--join", "--host", "bb", "--again", cwd=tmp_path)
    refused("host_taken", "init", str(b), "--join", "--host", "b", cwd=tmp_path)
    quipu("init", str(b), "--join", "--host", "b", "--again", cwd=tmp_path)
    assert yaml.safe_load((b / "quipu.yaml").read_text())["slots"] == ["b-w1"]
    assert joined_hosts(b) == hosts  # nothing new recorded
    # the slot is b's own again: a workspace mounts there
    quipu("workspace", "hibernate", "w1", "--reason", "hand the workspace to host b", cwd=a)
    quipu("workspace", "mount", "toy", "b-w1", "--reason", WHY, cwd=b)
