"""Training in a child process, so napari keeps its GIL, its matplotlib and its memory.

The child (``python -m napari_ambiseg.widgets.train_process RUN_JSON OUT STOP_FILE
[--resume]``) runs the core trainer and prints one JSON event per line; it stops, after
writing a resumable checkpoint, when STOP_FILE appears. `run_training` is the parent side:
it forwards the events to `emit` and turns the child's end into a return value or the same
error type the trainer raised (`Cancelled`, `InputError`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import errors

GRACE_S = 60.0  # after Cancel, how long the child may take to checkpoint before it is killed


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
        with open(log, "w+") as err:
            proc = subprocess.Popen(cmd + (["--resume"] if resume else []), text=True,
                                    stdout=subprocess.PIPE, stderr=err, bufsize=1)

            def watch() -> None:
                stop.wait()
                if proc.poll() is None:
                    stop_file.touch()
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
        if code < 0:
            raise errors.Cancelled(f"training process stopped (signal {-code})")
        raise errors.AmbisegError(f"training process failed (exit code {code}): {tail}")
    summary.pop("kind", None)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Child side: run the trainer, print events as JSON lines, honour the stop file."""
    from ..training.config import load_run_config
    from ..training.trainer import train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_json")
    p.add_argument("out")
    p.add_argument("stop_file")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)

    def emit(event: dict) -> None:
        print(json.dumps(event, default=_json_default), flush=True)

    try:
        model_cfg, train_cfg = load_run_config(a.run_json)
        summary = train(model_cfg, train_cfg, a.out, resume=a.resume, callback=emit,
                        should_stop=lambda: os.path.exists(a.stop_file))
    except errors.AmbisegError as e:
        emit({"kind": "error", "type": type(e).__name__, "message": str(e)})
        return 3 if isinstance(e, errors.Cancelled) else 2
    emit({"kind": "summary", **summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
