"""Cancel through the dock's child process on the standard preset (the LIDC recipe's model):
a stop asked for inside an iteration ends that iteration unfinished, the checkpoint and the
weights are the last completed iteration's, and the process is gone when the call returns.
How fast (the dock promises within a second) is measured by benchmarks/bench_train_start.py,
not asserted here."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from napari_ambiseg.config import ModelConfig
from napari_ambiseg.errors import Cancelled
from napari_ambiseg.training import events as ev
from napari_ambiseg.training.config import TrainConfig
from napari_ambiseg.training.presets import PRESETS
from napari_ambiseg.training.train_process import TrainingProcess, run_training
from napari_ambiseg.weights_io import load_weights


def test_cancel_inside_an_iteration_on_the_standard_preset(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 128, 128), dtype=np.uint8)  # the LIDC crop size
    masks = np.zeros((8, 4, 128, 128), np.uint8)
    masks[:, :2, 56:72, 56:72] = 1
    np.savez(tmp_path / "data.npz", images=images, masks=masks)
    model_cfg = ModelConfig(**PRESETS["standard (LIDC recipe)"])
    train_cfg = TrainConfig(data=str(tmp_path / "data.npz"), batch_size=8, device="cpu",
                            threads=1)  # one core of the test machine
    stop, events, children = threading.Event(), [], []
    cold = TrainingProcess.cold
    monkeypatch.setattr(TrainingProcess, "cold",
                        classmethod(lambda cls, run: children.append(cold(run)) or children[-1]))

    def emit(e):
        events.append(e)
        if isinstance(e, ev.Progress) and sum(isinstance(x, ev.Progress) for x in events) == 1:
            def later():  # a fifth into iteration 2 (the first one includes warm-up)
                time.sleep(e.s_per_it / 5)
                stop.set()
            threading.Thread(target=later, daemon=True).start()

    with pytest.raises(Cancelled, match="inside iteration"):
        run_training(model_cfg, train_cfg, tmp_path / "run", False, emit, stop)
    assert children[0].proc.poll() is not None  # the process is gone
    last = events[-1]
    assert isinstance(last, ev.Cancelled) and last.where == f"inside iteration {last.step + 1}"
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == last.step >= 1 and ck["model_config"] == model_cfg.to_dict()
    _, cfg, info = load_weights(tmp_path / "run" / "last.safetensors")
    assert cfg == model_cfg and info["step"] == last.step  # weights to try, with their config


def test_cancel_while_starting_ends_the_child_at_once(tmp_path):
    """Before the first iteration there is nothing to save: the child is ended right away."""
    np.savez(tmp_path / "data.npz", images=np.zeros((2, 32, 32), np.uint8),
             masks=np.zeros((2, 1, 32, 32), np.uint8))
    stop, phases = threading.Event(), []

    def emit(e):
        phases.append(e.phase)
        stop.set()  # on the parent's own first event, before the child reported anything

    with pytest.raises(Cancelled, match="before its first iteration"):
        run_training(ModelConfig(**PRESETS["tiny (smoke tests)"]),
                     TrainConfig(data=str(tmp_path / "data.npz"), device="cpu"),
                     tmp_path / "run", False, emit, stop)
    assert phases[0] == "start"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
