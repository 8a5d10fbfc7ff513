"""Inference for the widgets, free of Qt and napari: running the core off-thread.

* `Request`, `Prompt` and `run_request` are the core's (`napari_ambiseg.volume_sampling`):
  a 2D image, a slice range or "follow the finding", batched through the network; the
  result, `Outputs`, is the core's one result type `SampleResult` (masks, agreement,
  entropy, modes, sizes, consensus, z0/key for a slab).
* `stream` runs any long function in a helper thread and turns its callbacks into a generator,
  so a napari generator worker can yield progress and notice an abort within `tick` seconds,
  and tests can iterate it directly, without Qt.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

from ..result import SampleResult
from ..volume_sampling import Progress, Prompt, Request, sample_request

__all__ = ["Outputs", "Progress", "Prompt", "Request", "run_request", "sampling_job", "stream",
           "leave_a_core"]

Outputs = SampleResult  # the widgets' name for a sampling result


def run_request(seg, req: Request, progress: Progress | None = None,
                should_stop: Callable[[], bool] | None = None) -> Outputs:
    """Sample `req` with the segmenter `seg` (`volume_sampling.sample_request`);
    `progress(done, total, text)` per network step; raises `Cancelled` within one network
    evaluation of `should_stop()`."""
    return sample_request(seg, req, progress, should_stop)


_DONE = object()


def stream(fn: Callable[[Callable[[Any], None], Callable[[], bool]], Any],
           stop: threading.Event, tick: float = 0.05) -> Generator[Any, None, Any]:
    """Run ``fn(emit, should_stop)`` in a helper thread; yield what it emits, as it emits it.

    Yields None every `tick` seconds when nothing happens (so a napari worker checks its
    abort flag), returns fn's result, and re-raises fn's exception. Closing or abandoning
    the generator sets `stop`, which the work sees through `should_stop`.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn(events.put, stop.is_set)
        except BaseException as e:  # noqa: BLE001 - handed over to the consumer
            out["error"] = e
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name="ambiseg-work", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            try:
                item = events.get(timeout=tick)
            except queue.Empty:
                yield None
                continue
            if item is _DONE:
                finished = True
                break
            yield item
    finally:
        if not finished:
            stop.set()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def leave_a_core() -> int:
    """Intra-op threads for work behind a GUI: all cores but one, so the event loop always
    has a core. (On a busy 2-core machine, two spinning OpenMP threads beside the GUI
    thread made sampling 5-20x slower and the viewer jerky; see the responsiveness bench.)"""
    import torch

    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1))


def sampling_job(get_segmenter: Callable[[], Any], req: Request, stop: threading.Event,
                 tick: float = 0.05) -> Generator[dict | None, None, Outputs]:
    """Generator for a napari worker: yields {"done", "total", "text"} (or None), returns
    `Outputs`. The segmenter is loaded inside the helper thread (weights load off the GUI)."""

    def work(emit, should_stop):
        import torch

        torch.set_num_threads(leave_a_core())  # OpenMP: this thread's parallel regions
        emit({"done": 0, "total": 0, "text": "loading model"})
        seg = get_segmenter()
        return run_request(seg, req, lambda d, t, s: emit({"done": d, "total": t, "text": s}),
                           should_stop)

    return (yield from stream(work, stop, tick))
