"""Work done in a background thread and awaited where its value is first needed: the dock's
training process loads the data this way while PyTorch imports and the model is built."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """`fn()` in a daemon thread, started by `start()` (once; `result()` starts it too).
    `result()` waits and returns its value or re-raises its error; `failed()` and `done()`
    tell without waiting."""

    def __init__(self, fn: Callable[[], T], name: str = "ambiseg-background"):
        self._fn, self._name = fn, name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._value: T | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as e:  # noqa: BLE001 - re-raised by result()
            self._error = e

    def start(self) -> Background[T]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return self

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def failed(self) -> bool:
        return self.done() and self._error is not None

    def result(self) -> T:
        self.start()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
