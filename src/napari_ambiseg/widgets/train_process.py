"""Training in a child process, so napari keeps its GIL, its matplotlib and its memory.

The child (``python -m napari_ambiseg.widgets.train_process RUN_JSON OUT STOP_FILE
[--resume]``) runs the core `Trainer` and prints its events, one `training.events.to_json`
line each (the last is `Done`, or `Failed` with the error). Its first feedback comes soon:
the training data loads in a thread while PyTorch imports and the model is built, and the
validation set loads only after the first iteration. Stopping:

* once training has begun (the trainer's "training" or "validation" phase event), the parent
  creates STOP_FILE; the child looks for it every STOP_POLL_S from the trainer's stop hooks
  (inside forward, backward and validation), writes the checkpoint of its last completed
  iteration, prints a `Cancelled` event and exits: well within a second on every preset;
* before that (starting Python, loading data, building the model) there is nothing to save,
  so the parent ends the child at once.

`run_training` is the parent side: it forwards the events to `emit` and turns the child's
end into a `TrainResult` or the same error type the trainer raised (`Cancelled`,
`InputError`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .. import errors
from ..training import events as ev

GRACE_S = 20.0  # after Cancel, how long the child may take to checkpoint before it is killed
STOP_POLL_S = 0.01  # how often the child looks for the stop file
TRAINING = ("training", "validation")  # phases in which a stop is graceful


def _error(event: ev.Failed) -> errors.AmbisegError:
    cls = getattr(errors, event.type, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.AmbisegError)):
        cls = errors.AmbisegError
    return cls(event.message or "training failed")


def run_training(model_cfg, train_cfg, out_dir: str | os.PathLike, resume: bool,
                 emit: Callable[[ev.Event], None], stop: threading.Event):
    """Train in a child process; `emit` gets the trainer's events; `stop.set()` cancels.
    Returns the run's `TrainResult`."""
    from ..training.config import save_run_config

    with tempfile.TemporaryDirectory(prefix="ambiseg-train-") as tmp:
        run_json, stop_file, log = Path(tmp, "run.json"), Path(tmp, "stop"), Path(tmp, "stderr")
        save_run_config(model_cfg, train_cfg, run_json)
        cmd = [sys.executable, "-m", __name__, str(run_json), str(out_dir), str(stop_file)]
        began = threading.Event()  # the trainer can now stop gracefully
        with open(log, "w+") as err:
            proc = subprocess.Popen(cmd + (["--resume"] if resume else []), text=True,
                                    stdout=subprocess.PIPE, stderr=err, bufsize=1)
            emit(ev.Phase("start", "starting the training process"))

            def watch() -> None:
                stop.wait()
                if proc.poll() is not None:
                    return
                if began.is_set():
                    stop_file.touch()
                else:
                    proc.terminate()  # still starting: nothing to save yet
                try:
                    proc.wait(GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()

            threading.Thread(target=watch, name="ambiseg-train-watch", daemon=True).start()
            result, failure = None, None
            try:
                for line in proc.stdout:
                    event = ev.from_json(line)  # None: a stray print from a library
                    if isinstance(event, ev.Failed):
                        failure = event
                        continue
                    if isinstance(event, ev.Done):
                        result = event.result
                    elif isinstance(event, ev.Phase) and event.phase in TRAINING:
                        began.set()
                    if event is not None:
                        emit(event)
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                if not stop.is_set():
                    stop.set()  # release the watcher
            err.seek(0)
            tail = err.read()[-1500:].strip()
    if failure is not None:
        raise _error(failure)
    if result is None or code != 0:
        if code < 0 and not began.is_set():
            raise errors.Cancelled("training stopped before its first iteration; nothing "
                                   "was trained")
        if code < 0:
            raise errors.Cancelled(f"training process stopped (signal {-code})")
        raise errors.AmbisegError(f"training process failed (exit code {code}): {tail}")
    return result


class StopFile:
    """should_stop for the child: true once `path` exists; looks at most every STOP_POLL_S
    (the trainer asks before every layer)."""

    def __init__(self, path: str | os.PathLike):
        self.path, self.stopped, self.last = path, False, -float("inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.stopped and now - self.last >= STOP_POLL_S:
            self.last = now
            self.stopped = os.path.exists(self.path)
        return self.stopped


def main(argv: list[str] | None = None) -> int:
    """Child side: run the trainer, print its events as JSON lines, honour the stop file."""
    from ..training.background import Background
    from ..training.data import load_data  # numpy only: the first event comes at once

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_json")
    p.add_argument("out")
    p.add_argument("stop_file")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)

    def emit(event: ev.Event) -> None:
        print(ev.to_json(event), flush=True)

    try:
        # the training data loads while PyTorch imports and the model is built (each takes
        # seconds on the LIDC set); the validation set after the first iteration
        raw = json.loads(Path(a.run_json).read_text()).get("train", {})
        pickles = bool(raw.get("allow_pickle"))
        emit(ev.Phase("data", f"loading {raw.get('data')} and PyTorch"))
        train_data = Background(lambda: load_data(raw.get("data", ""), pickles),
                                "ambiseg-load-train").start()
        val_data = None
        if raw.get("val_data"):
            val_data = Background(lambda: load_data(raw["val_data"], pickles),
                                  "ambiseg-load-val")

        def tell(event: ev.Event) -> None:
            emit(event)
            if val_data is not None and isinstance(event, ev.Progress):
                val_data.start()  # after the first iteration; then a no-op

        from ..training.config import load_run_config
        from ..training.trainer import Trainer

        model_cfg, train_cfg = load_run_config(a.run_json)
        import torch._dynamo  # noqa: F401 - the optimiser imports it (1 s): here, beside the load

        trainer = Trainer(model_cfg, train_cfg, a.out, callback=tell,
                          should_stop=StopFile(a.stop_file))
        trainer.use_data(train_data, val_data)
        trainer.begin(a.resume)
        trainer.fit()  # its last event, Done, carries the result
    except errors.AmbisegError as e:
        emit(ev.Failed(type(e).__name__, str(e)))
        return 3 if isinstance(e, errors.Cancelled) else 2
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every file is written and closed; skip seconds of interpreter teardown
