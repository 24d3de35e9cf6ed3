"""``quipu demo``: a short, real session on the embedded defaults (SQLite, local files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quipu.bootstrap import DATA_DIR, init_project

__all__ = ["run_demo"]

_TRAIN_V1 = '''"""Train a classifier on scikit-learn's bundled digits."""
LEARNING_RATE = 0.1
EPOCHS = 10


def main() -> None:
    print(f"training for {EPOCHS} epochs at lr={LEARNING_RATE}")


if __name__ == "__main__":
    main()
'''


def run_demo(path: Path, *, actor: str, echo: Callable[[str], None] = print) -> int:
    """Build a demo project at ``path``; return 0 when the audit at the end passes."""
    from quipu.adapters.seals.local import LocalSealKeeper
    from quipu.core.audit import make_seal, verify_log

    def step(title: str) -> None:
        echo(f"\n=== {title} ===")

    step(f"init a project at {path}")
    q = init_project(path, name="digits", goal="reach 98% test accuracy on sklearn digits",
                     actor=actor)
    try:
        w1, w2 = q.slots.path("w1"), q.slots.path("w2")

        step("create workspace 'baseline' and mount it in slot w1")
        q.create_workspace("baseline", "a small MLP as the baseline",
                           "every comparison needs a baseline first")
        q.mount("baseline", "w1", "write the first training script")
        (w1 / "train.py").write_text(_TRAIN_V1)
        (w1 / "configs").mkdir()
        (w1 / "configs" / "train.yaml").write_text("batch_size: 64\n")
        echo(str(q.save_version("w1", "first training script with lr 0.1")))

        step("edit, save v2 and diff it against v1")
        (w1 / "train.py").write_text(_TRAIN_V1.replace("0.1", "0.03"))
        q.log_thought("loss oscillates at lr 0.1; a smaller step should settle it",
                      workspace="baseline")
        echo(str(q.save_version("w1", "lower the learning rate to 0.03")))
        echo(q.diff("baseline@v2")["diff_text"])

        step("an unchanged slot saves to the existing version")
        echo(str(q.save_version("w1", "saving again without any change")))

        step("fork 'wide' from baseline@v1 into slot w2")
        q.create_workspace("wide", "a wider hidden layer",
                           "test whether capacity limits accuracy", from_workspace="baseline",
                           from_version="v1")
        q.mount("wide", "w2", "widen the hidden layer of the v1 script")
        (w2 / "train.py").write_text(_TRAIN_V1.replace("EPOCHS = 10", "EPOCHS = 10\nHIDDEN = 512"))
        echo(str(q.save_version("w2", "hidden layer of 512 units")))
        echo(str(q.hibernate("w2", "park the wide idea until the baseline is tuned")))

        step("a bad edit in w1, then roll back to v1 (the edit is auto-saved first)")
        (w1 / "train.py").write_text("this is broken\n")
        (w1 / "notes.txt").write_text("scratch\n")
        echo(str(q.rollback("w1", "v1", "the edit broke the script; go back to v1")))
        restored = (w1 / "train.py").read_text() == _TRAIN_V1
        echo(f"train.py restored exactly: {restored}; notes.txt removed: "
             f"{not (w1 / 'notes.txt').exists()}")

        step("tag the best version and look at the history")
        q.manage_versions("baseline", "tag", version="v2", tag="best-lr",
                          reason="lowest loss so far in the sweep")
        for v in q.manage_versions("baseline", "list")["versions"]:
            echo(f"  {v['version']}: {v['message']} {v['tags'] or ''}")

        step("STATE.md (what an agent reads after forgetting everything)")
        echo(q.status()["state_md"])

        step("audit: verify the hash chain and seal the head")
        report = verify_log(q.store)
        seal = make_seal(q.store, q.service.clock.now())
        LocalSealKeeper(path / DATA_DIR / "seals.jsonl").append(seal)
        ok = report.ok and verify_log(q.store, [seal]).ok and restored
        echo(f"audit verify: {'OK' if report.ok else 'FAILED'} ({report.events_checked} events, "
             f"head position {report.head_position}); sealed at {seal.position}")
        echo(f"\nproject kept at {path}" if path.exists() else "")
        return 0 if ok else 1
    finally:
        q.close()
