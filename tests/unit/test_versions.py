"""Manifests and diffs: the pure half of versions without git."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from quipu.core.workspaces.versions import (
    EMPTY_MANIFEST,
    FileEntry,
    Manifest,
    diff_manifests,
    text_diff,
)


def entry(content: bytes, mode: int = 0o644) -> FileEntry:
    return FileEntry(sha256=hashlib.sha256(content).hexdigest(), size=len(content), mode=mode)


def link(target: str) -> FileEntry:
    return FileEntry(kind="symlink", target=target, mode=0o777)


# --- Manifest ----------------------------------------------------------------------------------


class TestManifest:
    def test_the_digest_does_not_depend_on_insertion_order(self):
        files = {"b.txt": entry(b"b"), "a/x.py": entry(b"x", 0o755), "link": link("b.txt")}
        forwards = Manifest(files=dict(files.items()))
        backwards = Manifest(files=dict(reversed(files.items())))

        assert forwards.to_bytes() == backwards.to_bytes()
        assert forwards.digest() == backwards.digest()

    def test_the_digest_is_the_sha256_of_the_canonical_bytes(self):
        manifest = Manifest(files={"a": entry(b"a")})

        assert manifest.digest() == hashlib.sha256(manifest.to_bytes()).hexdigest()
        assert b" " not in manifest.to_bytes()

    def test_a_mode_change_changes_the_digest(self):
        plain = Manifest(files={"run.sh": entry(b"#!/bin/sh\n", 0o644)})
        executable = Manifest(files={"run.sh": entry(b"#!/bin/sh\n", 0o755)})

        assert plain.digest() != executable.digest()

    def test_total_bytes_sums_file_sizes(self):
        manifest = Manifest(files={"a": entry(b"abc"), "b": entry(b"de"), "l": link("a")})

        assert manifest.total_bytes == 5
        assert EMPTY_MANIFEST.total_bytes == 0


paths = st.text(alphabet="abcxyz._-/", min_size=1, max_size=20)
entries = st.one_of(
    st.builds(FileEntry, kind=st.just("file"),
              sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
              size=st.integers(min_value=0, max_value=2**53),
              mode=st.integers(min_value=0, max_value=0o7777)),
    st.builds(FileEntry, kind=st.just("symlink"), target=st.text(max_size=30), mode=st.just(0o777)),
)
trees = st.dictionaries(paths, entries, max_size=12)


@given(trees)
def test_a_manifest_round_trips_through_its_bytes(files):
    manifest = Manifest(files=files)

    back = Manifest.from_bytes(manifest.to_bytes())

    assert back == manifest
    assert back.to_bytes() == manifest.to_bytes()


@given(trees, st.randoms(use_true_random=False))
def test_equal_trees_have_equal_digests(files, random):
    """However the same entries were gathered, the digest names the tree, not the walk."""
    items = list(files.items())
    random.shuffle(items)

    assert Manifest(files=dict(items)).digest() == Manifest(files=files).digest()


@given(trees, trees)
def test_different_trees_have_different_digests(a, b):
    if a != b:
        assert Manifest(files=a).digest() != Manifest(files=b).digest()


# --- diff_manifests ----------------------------------------------------------------------------


class TestDiffManifests:
    def test_identical_trees_have_no_changes(self):
        manifest = Manifest(files={"a": entry(b"a")})

        diff = diff_manifests(manifest, manifest)

        assert not diff.has_changes and diff.summary() == "no changes"

    def test_added_removed_modified_and_mode_changes_are_told_apart(self):
        old = Manifest(files={"keep": entry(b"k"), "gone": entry(b"g"), "edit": entry(b"1"),
                              "run.sh": entry(b"sh", 0o644)})
        new = Manifest(files={"keep": entry(b"k"), "edit": entry(b"2"), "new": entry(b"n"),
                              "run.sh": entry(b"sh", 0o755)})

        diff = diff_manifests(old, new)

        assert [(f.path, f.change) for f in diff.files] == [
            ("edit", "modified"), ("gone", "removed"), ("new", "added"), ("run.sh", "mode")]
        assert diff.summary() == "1 added, 1 mode, 1 modified, 1 removed"

    def test_a_retargeted_symlink_is_modified(self):
        old = Manifest(files={"latest": link("a.csv")})
        new = Manifest(files={"latest": link("b.csv")})

        assert [f.change for f in diff_manifests(old, new).files] == ["modified"]

    def test_a_file_replaced_by_a_symlink_is_modified(self):
        old = Manifest(files={"data": entry(b"x")})
        new = Manifest(files={"data": link("elsewhere")})

        change = diff_manifests(old, new).files[0]

        assert (change.change, change.old, change.new) == ("modified", old.files["data"],
                                                           new.files["data"])

    def test_the_entries_on_each_side_are_attached(self):
        new = Manifest(files={"a": entry(b"a")})

        change = diff_manifests(EMPTY_MANIFEST, new).files[0]

        assert change.old is None and change.new == new.files["a"]


# --- text_diff ---------------------------------------------------------------------------------


class TestTextDiff:
    def test_text_changes_are_a_unified_diff_with_labelled_sides(self):
        text = text_diff("model.py", b"a = 1\nb = 2\n", b"a = 1\nb = 3\n", left="ws@v1",
                         right="ws@v2")

        assert text.splitlines()[:2] == ["--- ws@v1/model.py", "+++ ws@v2/model.py"]
        assert "-b = 2\n+b = 3\n" in text

    def test_an_added_file_is_all_additions(self):
        text = text_diff("new.txt", None, b"one\ntwo\n", left="l", right="r")

        assert "+one\n+two\n" in text and "-one" not in text

    def test_a_removed_file_is_all_deletions(self):
        text = text_diff("old.txt", b"one\n", None, left="l", right="r")

        assert "-one\n" in text

    def test_a_missing_final_newline_is_marked(self):
        text = text_diff("a.txt", b"x\n", b"x\ny", left="l", right="r")

        assert text.endswith("+y\n\\ No newline at end of file\n")

    def test_binary_content_shows_hash_and_size(self):
        old, new = b"\x00\x01", b"\x00\x02\x03"

        text = text_diff("w.bin", old, new, left="l", right="r", old_entry=entry(old),
                         new_entry=entry(new))

        assert text == (f"Binary file w.bin changed: sha256 {entry(old).sha256[:12]} (2 B) -> "
                        f"sha256 {entry(new).sha256[:12]} (3 B)\n")

    def test_invalid_utf8_counts_as_binary(self):
        text = text_diff("x", b"\xff\xfe", b"ok\n", left="l", right="r", old_entry=entry(b"1"),
                         new_entry=entry(b"ok\n"))

        assert text.startswith("Binary file x changed:")

    def test_a_binary_file_that_appears_is_described_as_absent_before(self):
        text = text_diff("w.bin", None, b"\x00", left="l", right="r",
                         new_entry=entry(b"\x00"))

        assert "absent -> sha256" in text

    def test_a_mode_only_change_is_described(self):
        text = text_diff("run.sh", b"sh\n", b"sh\n", left="l", right="r",
                         old_entry=entry(b"sh\n", 0o644), new_entry=entry(b"sh\n", 0o755))

        assert text == "mode of run.sh: 644 -> 755\n"

    def test_identical_content_has_no_diff(self):
        assert text_diff("a", b"same\n", b"same\n", left="l", right="r") == ""
