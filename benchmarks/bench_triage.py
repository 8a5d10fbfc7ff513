"""Triage speed: cases per minute of `ambiseg triage` on the first N slices of the LIDC test
set (the .npz input, each slice prompted at its centre), in one process (PyTorch's own
thread count, and one thread) and in two (`torchrun --nproc_per_node 2`, cores / 2 threads
each), wall clock from the command's start to its worklist (Python
and PyTorch start, model load, sampling, thumbnails, merge and report). The two runs must
give the same worklist.csv (prompt i is sampled with seed + i wherever it runs).

    python benchmarks/bench_triage.py [--data ../shared/data/lidc/test.npz] [--slices 64]
        [--samples N] [--steps S] [--write-doc]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

LIDC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lidc"
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(LIDC / "test.npz"))
    ap.add_argument("--slices", type=int, default=64, help="the first N slices")
    ap.add_argument("--samples", type=int, default=None, help="default: the model's")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--weights", default=None, help="default: the bundled model")
    ap.add_argument("--write-doc", action="store_true",
                    help="write the figures into docs/benchmarks.md (section triage_speed)")
    args = ap.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"{args.data} not found (pass --data)")
    if not Path(TORCHRUN).is_file():
        raise SystemExit("torchrun not found beside this Python")

    from napari_ambiseg.config import sampling_counts
    from napari_ambiseg.weights_io import load_config, resolve_weights

    cfg, _ = load_config(resolve_weights(args.weights))
    n, steps = sampling_counts(cfg, args.samples, args.steps)
    common = ["triage", args.data, "--limit", str(args.slices), "--samples", str(n),
              "--steps", str(steps)] + (["--weights", args.weights] if args.weights else [])
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        env = dict(os.environ)
        env.pop("OMP_NUM_THREADS", None)  # one process: PyTorch's own thread count
        warm = common[:2] + ["--limit", "1"] + common[4:]  # file caches warm for both runs
        timed([sys.executable, "-m", "napari_ambiseg.cli", *warm, "--out", str(Path(tmp) / "w")],
              env)
        s1 = timed([sys.executable, "-m", "napari_ambiseg.cli", *common, "--out", str(one)], env)
        rows.append((1, f"PyTorch's default ({cores} cores)", s1))
        single = timed([sys.executable, "-m", "napari_ambiseg.cli", *common, "--out",
                        str(Path(tmp) / "one_thread")], env | {"OMP_NUM_THREADS": "1"})
        rows.append((1, "1", single))
        env2 = dict(os.environ) | {"OMP_NUM_THREADS": str(max(1, cores // 2))}
        s2 = timed([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                    "--master_port", str(free_port()), "-m", "napari_ambiseg.cli", *common,
                    "--out", str(two)], env2)
        rows.append((2, f"{max(1, cores // 2)} each", s2))
        same = (one / "worklist.csv").read_text() == (two / "worklist.csv").read_text()
    lines = [f"`ambiseg triage` on the first {args.slices} slices of "
             f"{Path(args.data).name} (each at its centre, given a finding), N = {n}, "
             f"{steps} steps; wall clock from the command's start to worklist.csv and "
             "report.html (start-up and model load included).", "",
             "| processes | threads | seconds | cases / minute | speed-up |",
             "|---|---|---|---|---|"]
    for procs, threads, seconds in rows:
        lines.append(f"| {procs} | {threads} | {seconds:.1f} | "
                     f"{60 * args.slices / seconds:.1f} | {rows[0][2] / seconds:.2f}x |")
    lines += ["", f"Same worklist.csv from 1 and 2 processes: {'yes' if same else 'NO'}. "
              f"Machine: {machine()}.", "",
              "`python benchmarks/bench_triage.py --slices "
              f"{args.slices} --write-doc`"]
    body = "\n".join(lines)
    print(body)
    if args.write_doc:
        path = write_section("triage_speed", "### Triage speed\n\n" + body)
        print(f"written to {path}")
    if not same:
        raise SystemExit("the worklists of 1 and 2 processes differ")


if __name__ == "__main__":
    main()
