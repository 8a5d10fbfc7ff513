"""Training in a child process, so napari keeps its GIL, its matplotlib and its memory.

The child (``python -m napari_ambiseg.widgets.train_process RUN_JSON OUT STOP_FILE
[--resume]``) runs the core trainer and prints one JSON event per line. Stopping:

* once training has begun (the trainer's "training" or "validation" phase event), the parent
  creates STOP_FILE; the child looks for it every STOP_POLL_S from the trainer's stop hooks
  (inside forward, backward and validation), writes the checkpoint of its last completed
  iteration, prints a "cancelled" event and exits: well within a second on every preset;
* before that (starting Python, loading data, building the model) there is nothing to save,
  so the parent ends the child at once.

`run_training` is the parent side: it forwards the events to `emit` and turns the child's
end into a return value or the same error type the trainer raised (`Cancelled`,
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
from typing import Any

from .. import errors

GRACE_S = 20.0  # after Cancel, how long the child may take to checkpoint before it is killed
STOP_POLL_S = 0.01  # how often the child looks for the stop file
TRAINING = ("training", "validation")  # phases in which a stop is graceful


def _json_default(o: Any) -> Any:
    return o.item() if hasattr(o, "item") else str(o)


def _error(event: dict) -> errors.AmbisegError:
    cls = getattr(errors, str(event.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.AmbisegError)):
        cls = errors.AmbisegError
    return cls(event.get("message", "training failed"))


def run_training(model_cfg, train_cfg, out_dir: str | os.PathLike, resume: bool,
                 emit: Callable[[dict], None], stop: threading.Event) -> dict:
    """Train in a child process; `emit` gets the trainer's events; `stop.set()` cancels."""
    from ..training.config import save_run_config

    with tempfile.TemporaryDirectory(prefix="ambiseg-train-") as tmp:
        run_json, stop_file, log = Path(tmp, "run.json"), Path(tmp, "stop"), Path(tmp, "stderr")
        save_run_config(model_cfg, train_cfg, run_json)
        cmd = [sys.executable, "-m", __name__, str(run_json), str(out_dir), str(stop_file)]
        began = threading.Event()  # the trainer can now stop gracefully
        with open(log, "w+") as err:
            proc = subprocess.Popen(cmd + (["--resume"] if resume else []), text=True,
                                    stdout=subprocess.PIPE, stderr=err, bufsize=1)
            emit({"kind": "phase", "phase": "start", "text": "starting the training process"})

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
            summary, failure = None, None
            try:
                for line in proc.stdout:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue  # a stray print from a library
                    if event.get("kind") == "summary":
                        summary = event
                    elif event.get("kind") == "error":
                        failure = event
                    else:
                        if event.get("phase") in TRAINING:
                            began.set()
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
    if summary is None or code != 0:
        if code < 0 and not began.is_set():
            raise errors.Cancelled("training stopped before its first iteration; nothing "
                                   "was trained")
        if code < 0:
            raise errors.Cancelled(f"training process stopped (signal {-code})")
        raise errors.AmbisegError(f"training process failed (exit code {code}): {tail}")
    summary.pop("kind", None)
    return summary


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
    """Child side: run the trainer, print events as JSON lines, honour the stop file."""
    from ..training.data import load_data  # numpy only: the first event comes at once

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_json")
    p.add_argument("out")
    p.add_argument("stop_file")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)

    def emit(event: dict) -> None:
        print(json.dumps(event, default=_json_default), flush=True)

    try:
        # the data loads while PyTorch imports (each takes seconds on the LIDC set)
        raw = json.loads(Path(a.run_json).read_text()).get("train", {})
        emit({"kind": "phase", "phase": "data", "text": f"loading {raw.get('data')} and PyTorch"})
        data: dict[str, Any] = {}

        def load() -> None:
            try:
                data["train"] = load_data(raw.get("data", ""), bool(raw.get("allow_pickle")))
                if raw.get("val_data"):
                    data["val"] = load_data(raw["val_data"], bool(raw.get("allow_pickle")))
            except BaseException as e:  # noqa: BLE001 - re-raised below
                data["error"] = e

        loader = threading.Thread(target=load, name="ambiseg-load", daemon=True)
        loader.start()
        from ..training.config import load_run_config
        from ..training.trainer import train

        model_cfg, train_cfg = load_run_config(a.run_json)

        import torch._dynamo  # noqa: F401 - the optimiser imports it (1 s): here, beside the load
        loader.join()
        if "error" in data:
            raise data["error"]
        summary = train(model_cfg, train_cfg, a.out, resume=a.resume, callback=emit,
                        should_stop=StopFile(a.stop_file), train_data=data["train"],
                        val_data=data.get("val"))
    except errors.AmbisegError as e:
        emit({"kind": "error", "type": type(e).__name__, "message": str(e)})
        return 3 if isinstance(e, errors.Cancelled) else 2
    emit({"kind": "summary", **{k: v for k, v in summary.items() if k not in ("model", "ema")}})
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every file is written and closed; skip seconds of interpreter teardown
