"""Training in a child process, so napari keeps its GIL, its matplotlib and its memory.

The child runs the core `Trainer` and prints its events, one `training.events.to_json` line
each (the last is `Done`, or `Failed` with the error). It starts in one of two ways:

* cold, `python -m napari_ambiseg.training.train_process RUN_JSON OUT STOP_FILE [--resume]`:
  the run's train data loads in a thread while PyTorch imports and the model is built (the
  CLI, the tests, the benchmark);
* warm, `python -m napari_ambiseg.training.train_process --serve`: spawned by the training
  dock when it opens (`WarmTrainer`), before Start. It imports PyTorch and the trainer at
  once, then reads JSON-line commands on stdin: ``prepare`` {data, allow_pickle} loads the
  train set in a thread (at most one set: a new one drops the old), ``run`` {run_json, out,
  stop_file, resume} does what the cold child does, with the prepared set if the data on disk
  is still what was prepared (`data_key`: path, size, mtime, pickle flag), else loading it
  afresh. Start then waits only for the first iteration. An idle warm child holds PyTorch
  (~300 MB) and the prepared train set (~0.8 GB for the LIDC train.npz). stdin's end (the
  parent closed it, exited or crashed) ends an idle child at once and stops a run as Cancel
  does: a child never outlives napari.

Either way the validation set loads only after the first iteration, and one child serves one
run. Stopping:

* once training has begun (the trainer's "training" or "validation" phase event), the parent
  creates STOP_FILE; the child looks for it every STOP_POLL_S from the trainer's stop hooks
  (inside forward, backward and validation), writes the checkpoint of its last completed
  iteration, prints a `Cancelled` event and exits: well within a second on every preset;
* before that (starting Python, loading data, building the model) there is nothing to save,
  so the parent ends the child at once.

`run_training` is the parent side: it runs the warm child it is given if that one still lives,
else a cold one, forwards the events to `emit` and turns the child's end into a `TrainResult`
or the same error type the trainer raised (`Cancelled`, `InputError`, ...).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import errors
from . import events as ev

GRACE_S = 20.0  # after Cancel, how long the child may take to checkpoint before it is killed
CLOSE_S = 2.0  # after stdin closes, how long an idle warm child may take to exit
STOP_POLL_S = 0.01  # how often the child looks for the stop file
TRAINING = ("training", "validation")  # phases in which a stop is graceful
STATUS = '{"warm"'  # how a warm child's status lines begin (not events: never forwarded)
IN_ADVANCE = "loaded in advance"  # the run's data phase text when it uses the prepared set


def _error(event: ev.Failed) -> errors.AmbisegError:
    cls = getattr(errors, event.type, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.AmbisegError)):
        cls = errors.AmbisegError
    return cls(event.message or "training failed")


# ---------------------------------------------------------------------------- parent side
_LIVE: weakref.WeakSet[TrainingProcess] = weakref.WeakSet()


class TrainingProcess:
    """The parent's handle on one training child (it serves one run). `warm_child()` spawns
    it before Start; `run_training` then sends it the run, or spawns a `cold` one with the run
    in argv. Its stdout is read in a thread: status lines update `state` / `data_state`
    (and call `on_status`), event lines wait in a queue for `run_training`. `close()` (also
    at interpreter exit) ends it."""

    def __init__(self, args: list[str], warm: bool):
        self.warm, self.used = warm, not warm
        self.state = "starting"  # warm: "ready" once PyTorch and the trainer are imported
        self.data_state: dict[str, Any] = {}  # the last "preparing"/"prepared"/"failed"
        self.on_status: Callable[[TrainingProcess], None] | None = None
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._err = tempfile.TemporaryFile("w+", prefix="ambiseg-train-stderr-")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, *args], text=True, bufsize=1,
            stdin=subprocess.PIPE if warm else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._err)
        _LIVE.add(self)
        threading.Thread(target=self._read, name="ambiseg-train-read", daemon=True).start()

    @classmethod
    def warm_child(cls) -> TrainingProcess:
        """A child that imports PyTorch now and waits for `prepare` / a run (returns at
        once: it never waits for the child)."""
        return cls(["--serve"], warm=True)

    @classmethod
    def cold(cls, run: dict[str, Any]) -> TrainingProcess:
        """A child that runs `run` (see `run_command`) from its argv."""
        return cls([run["run_json"], run["out"], run["stop_file"]]
                   + (["--resume"] if run["resume"] else []), warm=False)

    def _read(self) -> None:
        for line in self.proc.stdout:
            if not line.startswith(STATUS):
                self._lines.put(line)
                continue
            try:
                status = json.loads(line)
                if status["warm"] == "ready":
                    self.state = "ready"
                else:
                    self.data_state = status
                if self.on_status is not None:
                    self.on_status(self)
            except Exception:  # noqa: BLE001 - e.g. its dock is gone: keep reading the events
                pass
        self._lines.put(None)
        if self.on_status is not None and self.warm and not self.used:
            try:
                self.proc.wait(CLOSE_S)  # its exit code tells why
                self.on_status(self)  # the standby child died
            except Exception:  # noqa: BLE001
                pass

    def lines(self) -> Iterator[str]:
        """The child's event lines (and strays), until its stdout ends."""
        while (line := self._lines.get()) is not None:
            yield line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def usable(self) -> bool:
        """A warm child that lives and has not been given a run."""
        return self.warm and not self.used and self.alive()

    def _send(self, command: dict[str, Any]) -> bool:
        with self._send_lock:
            try:
                self.proc.stdin.write(json.dumps(command) + "\n")
                self.proc.stdin.flush()
                return True
            except (OSError, ValueError):  # the child is gone (or stdin was closed)
                return False

    def prepare(self, data: str, allow_pickle: bool = False) -> bool:
        """Load `data` in the idle warm child (a no-op if that is what it holds)."""
        if not data or not self.usable():
            return False
        return self._send({"cmd": "prepare", "data": str(data),
                           "allow_pickle": bool(allow_pickle)})

    def start_run(self, run: dict[str, Any]) -> bool:
        """Hand `run` to this warm child; False (and the child closed) if it cannot take it."""
        if not self.usable():
            return False
        self.used = True
        if self._send({"cmd": "run", **run}):
            return True
        self.close()
        return False

    def error_tail(self) -> str:
        self._err.flush()
        self._err.seek(0)
        return self._err.read()[-1500:].strip()

    def close(self, timeout: float = CLOSE_S) -> None:
        """End the child: stdin's end stops it (an idle one at once, a run as Cancel does);
        killed if it has not gone after `timeout`."""
        if self.proc.stdin is not None:
            with self._send_lock:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _LIVE.discard(self)


class WarmTrainer:
    """The training dock's standby child: one warm `TrainingProcess` at a time, told to
    prepare the data the dock shows. `take()` hands it to a run (see `run_training`);
    `spawn()` makes the next one (preparing the same data); `close()` ends it."""

    def __init__(self, on_status: Callable[[TrainingProcess], None] | None = None):
        self.process: TrainingProcess | None = None
        self.on_status = on_status
        self._data: tuple[str, bool] | None = None

    def spawn(self) -> TrainingProcess:
        """A warm child (the current one if it still waits); never waits for it."""
        if self.process is not None and self.process.usable():
            return self.process
        self.close()
        self.process = TrainingProcess.warm_child()
        self.process.on_status = self.on_status
        if self._data is not None:
            self.process.prepare(*self._data)
        return self.process

    def prepare(self, data: str, allow_pickle: bool = False) -> None:
        """Have the standby child load `data` (a no-op in the child if it holds it as it is
        on disk now)."""
        self._data = (data, allow_pickle) if data else None
        if self.process is not None and self._data is not None:
            self.process.prepare(*self._data)

    def take(self) -> TrainingProcess | None:
        process, self.process = self.process, None
        return process

    def describe(self) -> str:
        """One line for the dock: what the standby child is doing."""
        p = self.process
        code = None if p is None else p.proc.poll()
        if code:
            last = (p.error_tail().splitlines() or ["no message"])[-1]
            return f"Training process could not start ({last}); Start tries again."
        if p is None or code is not None:
            return "Training process: not running (Start starts one)."
        text = f"Training process {'ready' if p.state == 'ready' else 'starting'}"
        d = p.data_state
        if self._data is None or d.get("data") != self._data[0]:
            return text + "."
        name = Path(d["data"]).name
        if d["warm"] == "preparing":
            return f"{text}; loading {name}."
        if d["warm"] == "prepared":
            return f"{text}; {name} in memory ({d['cases']:,} cases)."
        return f"{text}; could not load {name} (Start will say why)."

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None


@atexit.register
def _close_all() -> None:
    for process in list(_LIVE):
        process.close(timeout=0.5)


def run_training(model_cfg, train_cfg, out_dir: str | os.PathLike, resume: bool,
                 emit: Callable[[ev.Event], None], stop: threading.Event,
                 process: TrainingProcess | None = None):
    """Train in a child process: `process` if it is a warm child still able to run, else a
    new cold one; `emit` gets the trainer's events; `stop.set()` cancels. The child is ended
    when this returns. Returns the run's `TrainResult`."""
    from .config import save_run_config

    with tempfile.TemporaryDirectory(prefix="ambiseg-train-") as tmp:
        run_json, stop_file = Path(tmp, "run.json"), Path(tmp, "stop")
        save_run_config(model_cfg, train_cfg, run_json)
        run = {"run_json": str(run_json), "out": str(out_dir), "stop_file": str(stop_file),
               "resume": bool(resume)}
        if process is not None and process.start_run(run):
            emit(ev.Phase("start", "using the training process started when the dock opened"
                          + ("" if process.state == "ready" else
                             " (still importing PyTorch)")))
        else:
            process = TrainingProcess.cold(run)
            emit(ev.Phase("start", "starting the training process"))
        proc = process.proc
        began = threading.Event()  # the trainer can now stop gracefully

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
            for line in process.lines():
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
            process.close()
            if not stop.is_set():
                stop.set()  # release the watcher
        tail = process.error_tail()
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


# ---------------------------------------------------------------------------- child side
class StopFile:
    """should_stop for the child: true once `path` exists (or `parent_gone` is set); looks
    at most every STOP_POLL_S (the trainer asks before every layer)."""

    def __init__(self, path: str | os.PathLike, parent_gone: threading.Event | None = None):
        self.path, self.stopped, self.last = path, False, -float("inf")
        self.parent_gone = parent_gone

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.stopped and now - self.last >= STOP_POLL_S:
            self.last = now
            self.stopped = os.path.exists(self.path) or (
                self.parent_gone is not None and self.parent_gone.is_set())
        return self.stopped


def data_key(path: str, allow_pickle: bool) -> tuple | None:
    """What a loaded data set is checked against before a run uses it: the absolute path,
    size and mtime_ns (for a case folder, those of every file below it) and the pickle flag.
    None when it cannot be read (the run's own load then says why)."""
    if not path:
        return None
    try:
        p = Path(path).resolve()
        if p.is_dir():
            files = tuple(sorted((str(f.relative_to(p)), s.st_size, s.st_mtime_ns)
                                 for f in p.rglob("*") if f.is_file() for s in [f.stat()]))
            return str(p), files, bool(allow_pickle)
        s = p.stat()
        return str(p), s.st_size, s.st_mtime_ns, bool(allow_pickle)
    except OSError:
        return None


_out_lock = threading.Lock()


def _print(line: str) -> None:
    with _out_lock:  # whole lines, also from the prepare thread
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _status(state: str, **fields: Any) -> None:
    _print(json.dumps({"warm": state, **fields}))


class Prepared:
    """A warm child's train set, loaded ahead of the run (`training.background.Background`):
    at most one; a `prepare` of other data drops it (its memory goes when its load ends)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._load = None

    def prepare(self, data: str, allow_pickle: bool) -> None:
        from .background import Background
        from .data import load_data

        key = data_key(data, allow_pickle)  # before reading: a later change shows
        with self._lock:
            if key is not None and key == self._key and not self._load.failed():
                return
            self._key, self._load = key, None
            if key is None:
                _status("failed", data=data, error=f"cannot read {data}")
                return

            def load():
                try:
                    value = load_data(data, allow_pickle)
                except Exception as e:
                    with self._lock:
                        if self._key == key:
                            _status("failed", data=data, error=str(e))
                    raise
                with self._lock:
                    if self._key == key:
                        _status("prepared", data=data, cases=len(value))
                return value

            self._load = Background(load, "ambiseg-prepare-train").start()
            _status("preparing", data=data)

    def take(self, data: str, allow_pickle: bool):
        """The prepared load if it is of `data` as it is on disk now (and did not fail),
        else None; either way the child holds no other set afterwards."""
        key = data_key(data, allow_pickle)
        with self._lock:
            load = self._load if key is not None and key == self._key else None
            self._key, self._load = None, None
        return None if load is None or load.failed() else load


def run_command(run_json: str, out: str, stop_file: str, resume: bool,
                prepared: Prepared | None = None,
                parent_gone: threading.Event | None = None) -> int:
    """Child side of one run: the trainer's events as JSON lines, the stop file honoured.
    Returns the exit code (0 done, 2 failed, 3 cancelled)."""
    from .background import Background
    from .data import load_data  # numpy only: the first event comes at once

    def emit(event: ev.Event) -> None:
        _print(ev.to_json(event))

    try:
        # the training data loads while PyTorch imports and the model is built (each takes
        # seconds on the LIDC set) unless it was prepared; the validation set after the
        # first iteration
        raw = json.loads(Path(run_json).read_text()).get("train", {})
        data, pickles = raw.get("data", ""), bool(raw.get("allow_pickle"))
        train_data = prepared.take(data, pickles) if prepared is not None else None
        if train_data is not None:
            emit(ev.Phase("data", f"{data}: {IN_ADVANCE}" if train_data.done() else
                          f"{data}: still being {IN_ADVANCE}"))
        else:
            torch = "" if "torch" in sys.modules else " and PyTorch"
            emit(ev.Phase("data", f"loading {data}{torch}"))
            train_data = Background(lambda: load_data(data, pickles),
                                    "ambiseg-load-train").start()
        val_data = None
        if raw.get("val_data"):
            val_data = Background(lambda: load_data(raw["val_data"], pickles),
                                  "ambiseg-load-val")

        def tell(event: ev.Event) -> None:
            emit(event)
            if val_data is not None and isinstance(event, ev.Progress):
                val_data.start()  # after the first iteration; then a no-op

        from .config import load_run_config
        from .trainer import Trainer

        model_cfg, train_cfg = load_run_config(run_json)
        import torch._dynamo  # noqa: F401 - the optimiser imports it (1 s): here, beside the load

        trainer = Trainer(model_cfg, train_cfg, out, callback=tell,
                          should_stop=StopFile(stop_file, parent_gone))
        trainer.use_data(train_data, val_data)
        trainer.begin(resume)
        trainer.fit()  # its last event, Done, carries the result
    except errors.AmbisegError as e:
        emit(ev.Failed(type(e).__name__, str(e)))
        return 3 if isinstance(e, errors.Cancelled) else 2
    return 0


def serve() -> int:
    """The warm child: commands from stdin (read in a thread from the first moment, so an
    early `prepare` loads beside the imports and stdin's end is seen at once), PyTorch and
    the trainer imported now, then the one run."""
    runs: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    prepared, running, parent_gone = Prepared(), threading.Event(), threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            try:
                command = json.loads(line)
            except ValueError:
                continue
            if running.is_set():
                continue  # one run per child: nothing else once it has begun
            if command.get("cmd") == "prepare":
                prepared.prepare(command.get("data", ""), bool(command.get("allow_pickle")))
            elif command.get("cmd") == "run":
                running.set()
                runs.put(command)
        if not running.is_set():
            os._exit(0)  # the parent is done with us (or gone)
        parent_gone.set()  # the run stops at its next stop check, checkpoint saved

    threading.Thread(target=commands, name="ambiseg-commands", daemon=True).start()
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401

    from . import trainer  # noqa: F401

    _status("ready")
    run = runs.get()
    return run_command(run["run_json"], run["out"], run["stop_file"], bool(run.get("resume")),
                       prepared, parent_gone)


def main(argv: list[str] | None = None) -> int:
    """Child side: a cold run from argv, or `--serve` (warm)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_json", nargs="?")
    p.add_argument("out", nargs="?")
    p.add_argument("stop_file", nargs="?")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--serve", action="store_true",
                   help="warm child: wait for prepare/run commands on stdin")
    a = p.parse_args(argv)
    if a.serve:
        return serve()
    if not a.stop_file:
        p.error("RUN_JSON OUT STOP_FILE are required without --serve")
    return run_command(a.run_json, a.out, a.stop_file, a.resume)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every file is written and closed; skip seconds of interpreter teardown
