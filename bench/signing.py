"""Cost of signed artifacts: signing, verifying, and loading with and without a signature.

    python bench/signing.py [--runs 15]

Two artifacts: the demo router (lexical features + logistic quality model, ~50 KB) and the
same router with a 5 MB array component added (the size of a kNN router's stored
embeddings). Per artifact, the median over ``--runs`` of:

* ``sign``: ``routeiq sign`` (manifest check, hash every file, ECDSA P-256 signature);
* ``verify``: the signature check alone (private copy, re-hash, signature);
* ``load``: ``LearnedRouter.load`` (SHA-256 manifest check + parse), no keys pinned;
* ``load signed``: the load a server or the hot-reload watcher does with
  ``signing.require_signature`` (copy + signature check + load).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from routeiq.artifacts import read_artifact, write_artifact
from routeiq.integrations.litellm.demo import build_demo_router
from routeiq.router import LearnedRouter
from routeiq.security.signing import SigningSettings, sign_artifact, verify_artifact, write_keypair
from routeiq.serving.registry import load_router


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: imports, page cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        private, public = write_keypair(work / "key")
        demo = work / "demo"
        build_demo_router(demo)
        art = read_artifact(demo)
        big = work / "demo-5mb"
        index = np.random.default_rng(0).standard_normal(5 * 2**20 // 4, dtype=np.float32)
        write_artifact(big, art.metadata, {**art.arrays, "index": {"embeddings": index}})
        settings = SigningSettings(public_keys=(public,), require_signature=True)
        rows = []
        for path in (demo, big):
            sign_ms = median_ms(lambda p=path: sign_artifact(p, private), args.runs)
            rows.append(
                (
                    path.name,
                    size_of(path),
                    sign_ms,
                    median_ms(lambda p=path: verify_artifact(p, settings), args.runs),
                    median_ms(lambda p=path: LearnedRouter.load(p), args.runs),
                    median_ms(lambda p=path: load_router(p, settings), args.runs),
                )
            )
    print(f"median of {args.runs} runs, ms (ECDSA P-256, model-signing file hashing, sha256)")
    header = ("artifact", "bytes", "sign", "verify", "load", "load signed")
    print(
        f"{header[0]:<10} {header[1]:>10} {header[2]:>8} {header[3]:>8} {header[4]:>8} "
        f"{header[5]:>12}"
    )
    for name, size, *ms in rows:
        print(
            f"{name:<10} {size:>10,} " + " ".join(f"{v:>8.1f}" for v in ms[:3]) + f" {ms[3]:>12.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
