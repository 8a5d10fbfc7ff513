"""Loss and validation curves of a model trained in stages (e.g. a run, then a fine-tuning run
started from its weights), on one iteration axis.

    python benchmarks/plot_training.py RUN1/log.csv RUN2/log.csv --out docs/img/training_lidc.png

Each later log's iterations and times are shifted by the end of the previous one;
--start-step shifts the first one (a later stage plotted alone, at its total iterations):

    python benchmarks/plot_training.py RUN3/log.csv --start-step 14000 --out stage3.png
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from napari_ambiseg.training.plots import plot_log
from napari_ambiseg.training.runlog import LOG_FIELDS


def chain_logs(logs: list[Path], out_csv: Path, start_step: int = 0) -> None:
    step0, time0 = float(start_step), 0.0
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        w.writeheader()
        for log in logs:
            rows = list(csv.DictReader(open(log)))
            for r in rows:
                w.writerow(r | {"step": int(r["step"]) + int(step0),
                                "time_s": float(r["time_s"]) + time0})
            if rows:
                step0 += int(rows[-1]["step"])
                time0 += float(rows[-1]["time_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("logs", nargs="+", type=Path, help="log.csv files, in training order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--start-step", type=int, default=0,
                    help="iterations trained before the first log (earlier stages)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        chained = Path(tmp) / "log.csv"
        chain_logs(args.logs, chained, args.start_step)
        plot_log(chained, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
