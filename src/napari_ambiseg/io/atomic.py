"""Atomic writes: write into a temporary folder beside the target, then rename into place.

A failed write never leaves a broken file over a good one: the target is only replaced
(``os.replace``, atomic on one file system) once the writer has finished without error.
Writers that produce several files (MetaImage ``.mhd`` + ``.raw``) write them all into the
temporary folder; the companions are moved first and the requested file last.
`atomic_write_bytes` is the same for bytes already in memory (weights, checkpoints, logs).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import AmbisegError, WriteError


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path with the same file name as ``path``; publish it on success.

    Raises :class:`WriteError` when the folder is not writable or the writer failed
    (the original exception is chained); the temporary folder is always removed.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise WriteError(f"Cannot write {target.name}: folder {folder} does not exist.")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    except OSError as e:
        raise WriteError(f"Cannot write {target.name}: folder {folder} is not writable ({e}).") from e
    try:
        tmp = tmpdir / target.name
        try:
            yield tmp
        except AmbisegError:
            raise
        except Exception as e:  # noqa: BLE001 - any writer failure becomes one clear error
            raise WriteError(f"Cannot write {target.name}: {type(e).__name__}: {e}") from e
        if not tmp.is_file():
            raise WriteError(f"Cannot write {target.name}: the writer produced no file.")
        companions = [p for p in tmpdir.iterdir() if p.name != target.name]
        for p in companions:
            os.replace(p, folder / p.name)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through :func:`atomic_output`, fsynced before it is published;
    the folder is created if needed. Raises :class:`WriteError`."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"Cannot write {target.name}: cannot create folder {target.parent} ({e}).") from e
    with atomic_output(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return target
