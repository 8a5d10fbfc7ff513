"""Seconds from Start to the training dock's first feedback (a Progress event: iteration, s/it,
ETA) on the standard preset, run as the dock runs it (`widgets.train_process.run_training`, a
child process), with the phase timeline.

    python benchmarks/bench_train_start.py [--data ../shared/data/lidc/train.npz]
        [--val ../shared/data/lidc/val.npz] [--batch-size 32] [--repeats 3] [--write-doc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from napari_ambiseg.config import ModelConfig  # noqa: E402
from napari_ambiseg.training import events as ev  # noqa: E402
from napari_ambiseg.training.config import TrainConfig  # noqa: E402
from napari_ambiseg.widgets.train_process import run_training  # noqa: E402

LIDC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lidc"


def one_start(data: str, val: str | None, batch_size: int) -> dict[str, float]:
    """Seconds after Start at which each phase began and the first Progress arrived."""
    stop, t0, seen = threading.Event(), time.perf_counter(), {}

    def emit(event) -> None:
        name = type(event).__name__
        key = f"{name} {event.phase}" if isinstance(event, ev.Phase) else name
        seen.setdefault(key, round(time.perf_counter() - t0, 2))
        if isinstance(event, ev.Progress):
            stop.set()  # cancel: the first feedback is what is measured

    cfg = TrainConfig(data=data, val_data=val, batch_size=batch_size, iterations=1000)
    with tempfile.TemporaryDirectory(prefix="ambiseg-bench-") as out:
        try:
            run_training(ModelConfig(), cfg, out, False, emit, stop)
        except Exception:  # noqa: BLE001 - the run is cancelled on purpose
            pass
    return seen


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(LIDC / "train.npz"))
    p.add_argument("--val", default=str(LIDC / "val.npz"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write-doc", action="store_true")
    args = p.parse_args()
    runs = [one_start(args.data, args.val, args.batch_size) for _ in range(args.repeats)]
    for r in runs:
        print(r, flush=True)
    first = [r["Progress"] for r in runs if "Progress" in r]
    lines = ["## Training dock: first feedback", "",
             f"Standard preset (`ModelConfig()`), batch {args.batch_size}, data `{args.data}` "
             f"(val `{args.val}`), as the dock runs it (child process); {args.repeats} starts "
             "in a row, nothing else running.", "",
             f"- first Progress (iteration 1, s/it, ETA) after Start: median "
             f"{statistics.median(first):.1f} s (min {min(first):.1f}, max {max(first):.1f}); "
             "target <= 5 s",
             f"- timeline of the last start (s): {runs[-1]}",
             f"- machine: {machine()}",
             "- command: `python benchmarks/bench_train_start.py"
             f" --batch-size {args.batch_size} --repeats {args.repeats} --write-doc`"]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        print(f"written to {write_section('train_start', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
