"""A training run's folder: the one place that names its files, and what a finished run returns.

    checkpoint.pt      everything for an exact resume (tensors and plain Python only)
    run.json           the run config {"model": ..., "train": ...}, written when the run begins
    log.csv            one row per log interval (training/runlog.py)
    training.png       the loss and validation curves (training/plots.py)
    best.safetensors   EMA weights with the best validation GED (+ .json)
    last.safetensors   EMA weights of the last saved iteration (+ .json): the end of the run,
                       else its last checkpoint (a cancelled or crashed run has them too)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def plot(self) -> Path:
        return self.root / "training.png"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.root / "last.safetensors"

    def can_resume(self) -> bool:
        return self.checkpoint.is_file()

    def weights(self) -> Path | None:
        """The weights to use: the best on validation, else the last; None before either."""
        return next((p for p in (self.best, self.last) if p.is_file()), None)

    def weight_files(self) -> tuple[Path, ...]:
        """best and last, each .safetensors and its .json."""
        return tuple(p.with_suffix(s) for p in (self.best, self.last)
                     for s in (".safetensors", ".json"))


@dataclass(frozen=True)
class TrainResult:
    """A finished run: where its files are and its figures (no modules: load the weights)."""
    out: Path
    best: Path                # best.safetensors (the last weights when nothing validated)
    last: Path
    log: Path
    plot: Path
    step: int
    elapsed_s: float
    best_val_ged: float       # inf without validation

    @classmethod
    def of(cls, run: RunDir, step: int, elapsed_s: float, best_val_ged: float) -> TrainResult:
        return cls(run.root, run.best, run.last, run.log, run.plot, step, elapsed_s, best_val_ged)

    @property
    def weights(self) -> Path:
        return self.best if self.best.is_file() else self.last

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "best": str(self.best), "last": str(self.last),
                "log": str(self.log), "plot": str(self.plot), "step": self.step,
                "elapsed_s": self.elapsed_s, "best_val_ged": self.best_val_ged}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        return cls(Path(d["out"]), Path(d["best"]), Path(d["last"]), Path(d["log"]),
                   Path(d["plot"]), int(d["step"]), float(d["elapsed_s"]),
                   float(d["best_val_ged"]))
