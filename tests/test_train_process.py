"""The training dock's warm child (`training.train_process`): prepared before Start, it runs
exactly as a cold child does, uses the prepared train set only while the file is unchanged,
cancels like a cold child, and never outlives its parent."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from napari_ambiseg.config import ModelConfig
from napari_ambiseg.errors import Cancelled
from napari_ambiseg.training import events as ev
from napari_ambiseg.training.config import TrainConfig
from napari_ambiseg.training.presets import TINY
from napari_ambiseg.training.train_process import (
    IN_ADVANCE,
    Prepared,
    TrainingProcess,
    data_key,
    run_training,
)

WAIT_S = 300  # a generous bound for a child importing PyTorch on a busy machine


def case_set(path, k, size=32, raters=2, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, raters, size, size), np.uint8)
    masks[:, 0, 12:20, 12:20] = 1
    np.savez(path, images=rng.integers(0, 255, (k, size, size), dtype=np.uint8), masks=masks)
    return str(path)


def config(data, **kw):
    fields = dict(data=data, iterations=2, batch_size=2, warmup=1, log_every=1, device="cpu",
                  threads=1)
    return TrainConfig(**{**fields, **kw})


def wait_for(condition, what):
    end = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def prepared(process, data):
    """A warm child that has loaded `data`."""
    process.prepare(data)
    wait_for(lambda: process.data_state.get("data") == data
             and process.data_state["warm"] != "preparing" or not process.alive(),
             f"{data} prepared")
    assert process.data_state["warm"] == "prepared", process.data_state
    return process


def train(cfg, out, process=None, stop=None):
    events = []
    result = run_training(ModelConfig(**TINY), cfg, out, False, events.append,
                          stop or threading.Event(), process)
    return result, events


def data_phases(events):
    return [e.text for e in events if isinstance(e, ev.Phase) and e.phase == "data"]


def test_a_warm_child_runs_as_a_cold_one_with_the_prepared_data(tmp_path):
    data = case_set(tmp_path / "train.npz", 6)
    cold, cold_events = train(config(data), tmp_path / "cold")
    process = prepared(TrainingProcess.warm_child(), data)
    assert process.data_state["cases"] == 6  # loaded beside the imports
    wait_for(lambda: process.state == "ready", "the child's imports")
    warm, warm_events = train(config(data), tmp_path / "warm", process)

    assert not process.alive()  # one child, one run
    assert any(IN_ADVANCE in t for t in data_phases(warm_events))
    assert not any(IN_ADVANCE in t for t in data_phases(cold_events))
    assert "6 cases x 2 readers" in data_phases(warm_events)
    same = lambda es: [(e.kind, getattr(e, "step", None)) for e in es  # noqa: E731
                       if not (isinstance(e, ev.Phase) and e.phase in ("start", "data"))]
    assert same(warm_events) == same(cold_events)
    assert warm.step == cold.step == 2 and warm.out == tmp_path / "warm"
    losses = lambda es: [e.loss for e in es if isinstance(e, ev.Step)]  # noqa: E731
    assert losses(warm_events) == pytest.approx(losses(cold_events))  # same data, same run
    assert warm.weights.is_file()


def test_a_data_file_changed_after_prepare_is_loaded_again(tmp_path):
    data = case_set(tmp_path / "train.npz", 6)
    process = prepared(TrainingProcess.warm_child(), data)
    case_set(tmp_path / "train.npz", 5, seed=1)  # rewritten: new content, new size
    _, events = train(config(data), tmp_path / "run", process)
    assert not any(IN_ADVANCE in t for t in data_phases(events))
    assert "5 cases x 2 readers" in data_phases(events)  # trained on what is on disk now


def test_prepare_keeps_one_set_and_checks_the_file(tmp_path, capsys):
    a, b = case_set(tmp_path / "a.npz", 6), case_set(tmp_path / "b.npz", 4)
    p = Prepared()
    p.prepare(a, False)
    p.prepare(b, False)  # replaces a's load
    assert p.take(a, False) is None
    p.prepare(b, False)
    p._load.result()
    p.prepare(b, False)  # the same set, unchanged: kept
    assert len(p.take(b, False).result()) == 4
    assert p.take(b, False) is None  # taken: the child holds nothing more
    p.prepare(a, False)
    assert p.take(a, True) is None  # the pickle flag is part of the key
    p.prepare(a, False)
    p._load.result()
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched, same size
    assert p.take(a, False) is None
    status = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"warm": "prepared", "data": b, "cases": 4} in status
    assert status.count({"warm": "preparing", "data": b}) == 2  # not for the unchanged set


def test_data_key_covers_every_file_of_a_case_folder(tmp_path):
    (tmp_path / "cases" / "case_0001").mkdir(parents=True)
    f = tmp_path / "cases" / "case_0001" / "image.npy"
    np.save(f, np.zeros(4))
    before = data_key(str(tmp_path / "cases"), False)
    np.save(f, np.ones(4))
    os.utime(f, ns=(0, 1))
    assert data_key(str(tmp_path / "cases"), False) != before
    assert data_key("", False) is None and data_key(str(tmp_path / "nothing"), False) is None


def test_cancel_on_a_warm_child_before_and_after_training_began(tmp_path):
    data = case_set(tmp_path / "train.npz", 6)
    stop = threading.Event()
    process = prepared(TrainingProcess.warm_child(), data)

    def stop_at_once(e):
        stop.set()

    with pytest.raises(Cancelled, match="before its first iteration"):
        run_training(ModelConfig(**TINY), config(data), tmp_path / "run", False, stop_at_once,
                     stop, process)
    assert process.proc.poll() is not None
    assert not (tmp_path / "run" / "checkpoint.pt").exists()

    stop, seen = threading.Event(), []

    def stop_after_first(e):
        seen.append(e)
        if isinstance(e, ev.Progress):
            stop.set()

    process = prepared(TrainingProcess.warm_child(), data)
    with pytest.raises(Cancelled, match="training stopped at iteration"):
        run_training(ModelConfig(**TINY), config(data, iterations=100_000), tmp_path / "run",
                     False, stop_after_first, stop, process)
    assert isinstance(seen[-1], ev.Cancelled) and seen[-1].step >= 1
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert process.proc.poll() is not None


def test_a_dead_warm_child_falls_back_to_a_cold_one(tmp_path):
    data = case_set(tmp_path / "train.npz", 6)
    process = TrainingProcess.warm_child()
    process.proc.kill()
    process.proc.wait()
    result, events = train(config(data), tmp_path / "run", process)
    assert result.step == 2 and events[0].text == "starting the training process"


@pytest.mark.parametrize("when", ["starting", "ready"])
def test_the_child_exits_when_stdin_closes(when):
    process = TrainingProcess.warm_child()
    if when == "ready":
        wait_for(lambda: process.state == "ready", "the child's imports")
    process.proc.stdin.close()  # what the parent's exit or crash does
    wait_for(lambda: process.proc.poll() is not None, "the child to exit")
    assert process.proc.returncode == 0


def test_without_pytorch_the_standby_says_so_and_start_reports_it(tmp_path, monkeypatch):
    """A child that cannot import PyTorch: the dock's line says why, Start falls back to a
    cold child and fails with its message (as without a standby child)."""
    from napari_ambiseg.errors import AmbisegError
    from napari_ambiseg.training.train_process import WarmTrainer

    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no PyTorch here (test)')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    changed = threading.Event()
    warm = WarmTrainer(on_status=lambda _: changed.set())
    process = warm.spawn()
    wait_for(lambda: process.proc.poll() is not None and changed.is_set(), "the child to fail")
    assert "could not start (ImportError: no PyTorch here (test))" in warm.describe()
    with pytest.raises(AmbisegError, match="no PyTorch here"):
        train(config(case_set(tmp_path / "train.npz", 4)), tmp_path / "run", warm.take())


def test_a_run_stops_with_its_checkpoint_when_stdin_closes(tmp_path):
    """The parent gone mid-run (its end of stdin closed): the child stops as Cancel does."""
    data = case_set(tmp_path / "train.npz", 6)
    process = TrainingProcess.warm_child()

    def emit(e):
        if isinstance(e, ev.Progress) and not process.proc.stdin.closed:
            process.proc.stdin.close()

    with pytest.raises(Cancelled, match="training stopped at iteration"):
        run_training(ModelConfig(**TINY), config(data, iterations=100_000), tmp_path / "run",
                     False, emit, threading.Event(), process)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
