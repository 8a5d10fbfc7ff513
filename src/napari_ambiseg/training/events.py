"""What a training run tells its caller: small typed events, and one JSON-line form of them
for the dock's child-process pipe.

    Phase        what the run is doing before an iteration ends (start, model, data,
                 training, validation), as a sentence
    Resume       continuing a run from its checkpoint at `step`
    Progress     after iteration `step` (the first, then at most twice a second): s/it, ETA
    Step         a log row (window mean and median loss) at `step`
    ValProgress  a validation under way after iteration `step` (at its start, then at most
                 twice a second): `done` of `count` cases (fractional within a batch of
                 cases), ETA (None while there is nothing to go by)
    Val          validation metrics at `step`
    Cancelled    stopped at `step` (its checkpoint is saved), `where` it stopped
    Done         the run ended: its `TrainResult` (files and figures)
    Failed       (pipe only) the child's error, re-raised by the parent as the same type

`to_json(event)` / `from_json(line)` are the pipe's only (de)serialisation.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .rundir import TrainResult


@dataclass(frozen=True)
class Phase:
    kind: ClassVar[str] = "phase"
    phase: str                     # start, model, data, training, validation
    text: str = ""
    step: int | None = None        # "training": the iterations done so far
    total: int | None = None


@dataclass(frozen=True)
class Resume:
    kind: ClassVar[str] = "resume"
    step: int
    total: int


@dataclass(frozen=True)
class Progress:
    kind: ClassVar[str] = "progress"
    step: int
    total: int
    loss: float                    # of the last iteration
    s_per_it: float | None
    eta_s: float


@dataclass(frozen=True)
class Step:
    kind: ClassVar[str] = "step"
    step: int
    total: int
    loss: float                    # mean over the log window
    loss_median: float
    lr: float | None
    s_per_it: float | None
    eta_s: float


@dataclass(frozen=True)
class ValProgress:
    kind: ClassVar[str] = "val_progress"
    step: int                      # the iteration after which it validates
    total: int
    done: float                    # validation cases done (fractional)
    count: int                     # validation cases
    eta_s: float | None            # None: no pace known yet (the run's first validation)


@dataclass(frozen=True)
class Val:
    kind: ClassVar[str] = "val"
    step: int
    total: int
    val: dict[str, Any] = field(default_factory=dict)  # evaluate_model's figures (ged, hm_iou..)


@dataclass(frozen=True)
class Cancelled:
    kind: ClassVar[str] = "cancelled"
    step: int
    total: int
    where: str                     # "between iterations", "inside iteration k", ...


@dataclass(frozen=True)
class Done:
    kind: ClassVar[str] = "done"
    result: TrainResult


@dataclass(frozen=True)
class Failed:
    kind: ClassVar[str] = "failed"
    type: str                      # the errors.AmbisegError subclass's name
    message: str


Event = Phase | Resume | Progress | Step | ValProgress | Val | Cancelled | Done | Failed
KINDS: dict[str, type] = {c.kind: c for c in (Phase, Resume, Progress, Step, ValProgress, Val,
                                                Cancelled, Done, Failed)}


def _plain(o: Any) -> Any:
    """numpy scalars (in the metrics) as Python numbers; anything else as text."""
    return o.item() if hasattr(o, "item") else str(o)


def to_json(event: Event) -> str:
    """One line of JSON: {"kind": ..., fields...}."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    if isinstance(event, Done):
        fields["result"] = event.result.to_dict()
    return json.dumps({"kind": event.kind, **fields}, default=_plain)


def from_json(line: str) -> Event | None:
    """The event a `to_json` line holds; None for any other line (a library's stray print)."""
    try:
        raw = json.loads(line)
        cls = KINDS[raw.pop("kind")]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if cls is Done:
        return Done(TrainResult.from_dict(raw["result"]))
    return cls(**raw)
