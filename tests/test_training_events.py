"""Typed training events: one JSON-line form for the dock's child-process pipe, round trip of
every kind, and the child's event order (model built while the data loads, validation set
loaded only after the first iteration)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_ambiseg.config import ModelConfig
from napari_ambiseg.training import events as ev
from napari_ambiseg.training import train_process
from napari_ambiseg.training.config import TrainConfig, save_run_config
from napari_ambiseg.training.presets import TINY
from napari_ambiseg.training.rundir import RunDir, TrainResult

RESULT = TrainResult.of(RunDir("/runs/a"), step=12, elapsed_s=3.5, best_val_ged=math.inf)
EVENTS = [ev.Phase("start", "starting"), ev.Phase("training", "iteration 1 running", 0, 12),
          ev.Resume(4, 12), ev.Progress(5, 12, 0.25, 0.5, 3.5),
          ev.Step(5, 12, 0.3, 0.2, 1e-3, 0.5, 3.5), ev.Step(6, 12, 0.3, 0.3, None, None, 0.0),
          ev.Val(6, 12, {"ged": 0.4, "hm_iou": 0.6, "n": 16, "sampler": "ddim"}),
          ev.ValProgress(6, 12, 0.0, 64, None), ev.ValProgress(6, 12, 12.5, 64, 30.0),
          ev.Cancelled(7, 12, "inside iteration 8"), ev.Done(RESULT),
          ev.Failed("InputError", "no cases")]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_every_event_round_trips_through_a_json_line(event):
    line = ev.to_json(event)
    assert "\n" not in line and ev.from_json(line + "\n") == event


def test_numpy_figures_and_stray_lines():
    val = ev.from_json(ev.to_json(ev.Val(3, 9, {"ged": np.float32(0.5), "n": np.int64(16)})))
    assert val.val == {"ged": 0.5, "n": 16} and type(val.val["n"]) is int
    assert ev.from_json(ev.to_json(ev.Done(RESULT))).result.best_val_ged == math.inf
    for stray in ("", "Using cache\n", "[1, 2]\n", '{"kind": "other"}\n', '{"step": 3}\n'):
        assert ev.from_json(stray) is None


def _case_set(path, k=6, size=32):
    rng = np.random.default_rng(0)
    masks = np.zeros((k, 2, size, size), np.uint8)
    masks[:, 0, 12:20, 12:20] = 1
    np.savez(path, images=rng.integers(0, 255, (k, size, size), dtype=np.uint8), masks=masks)
    return str(path)


def test_child_builds_the_model_while_loading_and_loads_val_after_iteration_one(
        tmp_path, monkeypatch, capsys):
    """The child's own order, in process: the data loads are marked on its stdout (stray
    lines for the pipe), between the events."""
    import napari_ambiseg.training.data as data

    real = data.load_data

    def marked(path, *a, **kw):
        print(f"LOADING {Path(path).name}", flush=True)
        return real(path, *a, **kw)

    monkeypatch.setattr(data, "load_data", marked)
    cfg = TrainConfig(data=_case_set(tmp_path / "train.npz"),
                      val_data=_case_set(tmp_path / "val.npz"), iterations=3, batch_size=2,
                      warmup=1, val_every=3, val_size=2, val_n=2, log_every=1, device="cpu",
                      threads=1)
    save_run_config(ModelConfig(**TINY), cfg, tmp_path / "run.json")
    code = train_process.main([str(tmp_path / "run.json"), str(tmp_path / "run"),
                               str(tmp_path / "stop")])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    events = [ev.from_json(x) for x in lines]
    at = {repr(e) if e else x: i for i, (e, x) in enumerate(zip(events, lines))}
    first = lambda cls, **f: next(i for i, e in enumerate(events)  # noqa: E731
                                  if isinstance(e, cls) and all(getattr(e, k) == v
                                                                for k, v in f.items()))
    readers = next(i for i, e in enumerate(events)
                   if isinstance(e, ev.Phase) and "readers" in e.text)
    assert first(ev.Phase, phase="model") < readers < first(ev.Phase, phase="training")
    assert at["LOADING train.npz"] < readers
    assert first(ev.Progress, step=1) < at["LOADING val.npz"] < first(ev.Val)
    done = events[-1]
    assert isinstance(done, ev.Done) and done.result.step == 3
    assert done.result.best.is_file() and done.result.log.is_file()


def test_a_run_through_the_pipe_gives_typed_events_and_its_result(tmp_path):
    cfg = TrainConfig(data=_case_set(tmp_path / "train.npz"),
                      val_data=_case_set(tmp_path / "val.npz"), iterations=2, batch_size=2,
                      warmup=1, val_every=2, val_size=2, val_n=2, log_every=1, device="cpu",
                      threads=1)
    seen = []
    result = train_process.run_training(ModelConfig(**TINY), cfg, tmp_path / "run", False,
                                        seen.append, threading.Event())
    assert all(isinstance(e, tuple(ev.KINDS.values())) for e in seen)
    kinds = [e.kind for e in seen]
    assert kinds[0] == "phase" and kinds[-1] == "done"
    assert kinds.count("step") == 2 and kinds.count("val") == 1 and "progress" in kinds
    assert isinstance(result, TrainResult) and result == seen[-1].result
    assert result.step == 2 and result.out == tmp_path / "run"
    assert result.weights == tmp_path / "run" / "best.safetensors" and result.plot.is_file()
