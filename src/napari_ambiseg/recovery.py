"""Crash recovery: atomic snapshots of the labels a user adopted or edited, per viewer session.

Folder layout (the root is ``$AMBISEG_RECOVERY_DIR``, else the per-user state folder of
platformdirs, e.g. ``~/.local/state/napari-ambiseg/recovery``)::

    <root>/<session>/session.json   the owner: pid, process start time, host, boot id, start time
    <root>/<session>/<key>.npz      one per protected layer: its labels and a JSON record

A snapshot is one ``.npz`` file written through :func:`io.atomic.atomic_output` (and fsynced),
so it is either the previous complete snapshot or the new complete one, never half of each.
It holds the labels cropped to their labelled box (``labels`` + ``offset``; a mostly empty
volume costs little to write) and ``record``: JSON with the layer name, shape, dtype, transform
(scale, translate, rotate, shear, affine, axis labels, units), the JSON-friendly part of its
metadata (``metadata["ambiseg"]``, ``metadata["ambiseg_adopted"]``, ...) and the time.

A session whose owner is gone (process dead or replaced by another with the same pid, machine
rebooted; on another host: no heartbeat for :data:`STALE_S`) is orphaned: its layers can be
restored as napari LayerData, then discarded. A viewer that closes normally ends its session,
which removes its folder. Qt-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ReadError, WriteError
from .io.atomic import atomic_output

ENV = "AMBISEG_RECOVERY_DIR"
MANIFEST = "session.json"
FORMAT = 1
STALE_S = 600.0  # a session on another host with no heartbeat for this long is orphaned
TRANSFORM = ("scale", "translate", "rotate", "shear", "affine", "axis_labels", "units")
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

LayerData = tuple[np.ndarray, dict[str, Any], str]


def recovery_root() -> Path:
    """The folder holding the sessions (created on first use)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_state_dir

    return Path(user_state_dir("napari-ambiseg", appauthor=False)) / "recovery"


# ------------------------------------------------------------------------------ layer state
@dataclass
class LayerState:
    """What is needed to rebuild a Labels layer: name, voxels, transform, metadata."""

    name: str
    data: np.ndarray
    transform: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_layer_data(self) -> LayerData:
        kwargs = {"name": self.name, "metadata": dict(self.metadata),
                  **{k: v for k, v in self.transform.items() if k in TRANSFORM}}
        return self.data, kwargs, "labels"


@dataclass(frozen=True)
class Prepared:
    """A snapshot ready to write: a private copy of the labelled box and the JSON record."""

    key: str
    crop: np.ndarray
    offset: np.ndarray
    record: str
    content: str = ""  # the record without its time: what a snapshot says besides voxels

    def fingerprint(self) -> bytes:
        """Digest of everything the snapshot restores (voxels, where they go, dtype, name,
        transform, metadata) but not the time it was taken: equal fingerprints, same layer."""
        h = hashlib.blake2b(digest_size=20)
        for part in (self.content, self.crop.dtype.str, str(self.crop.shape)):
            h.update(part.encode())
        h.update(np.ascontiguousarray(self.offset, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.crop).data)
        return h.digest()


@dataclass(frozen=True)
class SnapshotInfo:
    """The record of one snapshot file (read without its voxels)."""

    path: Path
    name: str
    shape: tuple[int, ...]
    time: float


def _plain(value: Any) -> Any:
    """JSON-ready copy of metadata values: numpy arrays and scalars, tuples, paths."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _box(data: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every non-zero voxel (empty slices when there is none)."""
    if data.ndim == 0:
        return ()
    box = [slice(None)] * data.ndim
    for axis in range(data.ndim):  # each axis within the box found so far: one full pass
        others = tuple(a for a in range(data.ndim) if a != axis)
        part = data[tuple(box)]
        hit = np.flatnonzero(part.any(axis=others) if others else part)
        if not hit.size:
            return tuple(slice(0, 0) for _ in range(data.ndim))
        start = box[axis].start or 0
        box[axis] = slice(start + int(hit[0]), start + int(hit[-1]) + 1)
    return tuple(box)


def prepare(key: str, state: LayerState) -> Prepared:
    """Copy what a snapshot of `state` needs (fast: call it where the data is consistent)."""
    if not _KEY.match(key):
        raise ValueError(f"invalid snapshot key {key!r}")
    data = np.asarray(state.data)
    if data.dtype.kind not in "biu":
        raise WriteError(f"Cannot snapshot '{state.name}': labels must be integers, "
                         f"not {data.dtype}.")
    box = _box(data)
    metadata, dropped = {}, []
    for k, v in (state.metadata or {}).items():
        try:
            metadata[str(k)] = json.loads(json.dumps(_plain(v)))
        except (TypeError, ValueError):
            dropped.append(str(k))  # not JSON data: not part of what we promise to restore
    record = {
        "format": FORMAT, "key": key, "name": str(state.name),
        "shape": list(data.shape), "dtype": data.dtype.str,
        "transform": {k: _plain(v) for k, v in state.transform.items() if k in TRANSFORM},
        "metadata": metadata, "dropped_metadata": dropped,
    }
    content = json.dumps(record, sort_keys=True)
    return Prepared(key, np.array(data[box], copy=True),
                    np.array([s.start for s in box], dtype=np.int64),
                    json.dumps({**record, "time": time.time()}), content)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def read_record(path: Path) -> dict[str, Any]:
    """The JSON record of a snapshot file, without decompressing its voxels."""
    try:
        with np.load(path, allow_pickle=False) as z:
            record = json.loads(str(z["record"]))
    except Exception as e:  # noqa: BLE001 - any damage is one clear error
        raise ReadError(f"Cannot read the recovery snapshot {path.name}: {e}") from e
    if record.get("format") != FORMAT:
        raise ReadError(f"Cannot read the recovery snapshot {path.name}: format "
                        f"{record.get('format')!r} (this version reads {FORMAT}).")
    return record


def read_snapshot(path: Path) -> LayerState:
    """The layer state saved in a snapshot file (same voxels, dtype, transform, metadata)."""
    record = read_record(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            crop, offset = z["labels"], z["offset"]
        data = np.zeros(tuple(record["shape"]), dtype=np.dtype(record["dtype"]))
        data[tuple(slice(int(o), int(o) + n) for o, n in zip(offset, crop.shape))] = crop
    except Exception as e:  # noqa: BLE001
        raise ReadError(f"Cannot read the recovery snapshot {path.name}: {e}") from e
    return LayerState(record["name"], data, record["transform"], record["metadata"])


# ------------------------------------------------------------------------------ ownership
def _host() -> str:
    return socket.gethostname()


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p.create_time()
    except psutil.Error:
        return None


def owner_alive(manifest: Mapping[str, Any], heartbeat: float) -> bool:
    """Whether the process that wrote `manifest` may still be running (then: hands off)."""
    if manifest.get("host") != _host():
        return time.time() - heartbeat < STALE_S
    boot = _boot_id()
    if boot and manifest.get("boot_id") and manifest["boot_id"] != boot:
        return False
    started = _process_started(int(manifest.get("pid", -1)))
    return started is not None and abs(started - float(manifest.get("process_started", 0))) < 1.0


# ------------------------------------------------------------------------------ live session
class Session:
    """The recovery folder of one viewer in this process."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder, self.manifest = folder, manifest

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid snapshot key {key!r}")
        return self.folder / f"{key}.npz"

    def write(self, prepared: Prepared) -> Path:
        """Publish a prepared snapshot atomically (safe to call from a worker thread)."""
        path = self.path(prepared.key)
        with atomic_output(path) as tmp:
            np.savez_compressed(tmp, labels=prepared.crop, offset=prepared.offset,
                                record=np.array(prepared.record))
            _fsync(tmp)
        return path

    def snapshot(self, key: str, state: LayerState) -> Path:
        """Prepare and write a snapshot of `state` under `key` (replaces the previous one)."""
        return self.write(prepare(key, state))

    def forget(self, key: str) -> None:
        """Remove the snapshot of `key` (the layer was closed on purpose)."""
        self.path(key).unlink(missing_ok=True)

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.npz") if not p.name.startswith("."))

    def heartbeat(self) -> None:
        """Tell other hosts sharing the folder that this session is alive."""
        try:
            os.utime(self.folder / MANIFEST)
        except OSError:
            pass

    def end(self) -> None:
        """Normal end (viewer closed): remove the session's folder."""
        shutil.rmtree(self.folder, ignore_errors=True)


def start_session(root: str | os.PathLike | None = None) -> Session:
    """A new session folder for this process, created complete (manifest included) at once."""
    root = Path(root) if root is not None else recovery_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        import psutil

        now = time.time()
        manifest = {
            "format": FORMAT, "pid": os.getpid(),
            "process_started": psutil.Process().create_time(),
            "host": _host(), "boot_id": _boot_id(), "started": now,
        }
        name = "{}-{}-{}".format(time.strftime("%Y%m%d-%H%M%S", time.localtime(now)),
                                 os.getpid(), uuid.uuid4().hex[:8])
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=root))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.rename(staging, root / name)
    except OSError as e:
        raise WriteError(f"Cannot create a recovery folder in {root}: {e}") from e
    return Session(root / name, manifest)


# ------------------------------------------------------------------------------ orphans
@dataclass
class OrphanedSession:
    """A session whose owner is gone, with the snapshots it left."""

    folder: Path
    manifest: dict[str, Any]
    snapshots: list[SnapshotInfo]
    problems: list[str]

    @property
    def started(self) -> float:
        return float(self.manifest.get("started", 0.0))

    @property
    def last_saved(self) -> float:
        return max((s.time for s in self.snapshots), default=self.started)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.snapshots]


def _read_manifest(folder: Path) -> tuple[dict[str, Any], float] | None:
    try:
        path = folder / MANIFEST
        return json.loads(path.read_text()), path.stat().st_mtime
    except (OSError, ValueError):
        return None


def orphaned_sessions(root: str | os.PathLike | None = None) -> list[OrphanedSession]:
    """Sessions left by processes that are gone, oldest first. Orphaned sessions holding no
    snapshot at all are removed on the way (there is nothing in them to restore)."""
    root = Path(root) if root is not None else recovery_root()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        read = _read_manifest(folder)
        if read is None or owner_alive(*read):
            continue  # not a session folder, or its owner is running
        snapshots, problems = [], []
        for path in sorted(folder.glob("*.npz")):
            if path.name.startswith("."):
                continue
            try:
                r = read_record(path)
                snapshots.append(SnapshotInfo(path, r["name"], tuple(r["shape"]), r["time"]))
            except ReadError as e:
                problems.append(str(e))
        if not snapshots and not problems:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        found.append(OrphanedSession(folder, read[0], snapshots, problems))
    return sorted(found, key=lambda o: o.started)


def restore(orphan: OrphanedSession) -> tuple[list[LayerData], list[str]]:
    """napari LayerData of the orphan's labels (voxels, transform, metadata as snapshotted),
    oldest first, and a sentence for each snapshot that could not be read."""
    layers, problems = [], list(orphan.problems)
    for info in sorted(orphan.snapshots, key=lambda s: s.time):
        try:
            layers.append(read_snapshot(info.path).to_layer_data())
        except (ReadError, FileNotFoundError) as e:
            problems.append(str(e))
    return layers, problems


def discard(orphan: OrphanedSession, only_restored: bool = False) -> None:
    """Delete an orphaned session for good, or with `only_restored` just its readable
    snapshots (then the session goes when nothing else is left in it). Refused if its owner
    turned out to be alive."""
    read = _read_manifest(orphan.folder)
    if read is not None and owner_alive(*read):
        raise WriteError(f"Recovery session {orphan.folder.name} is in use by a running "
                         "napari: not discarded.")
    if only_restored:
        for info in orphan.snapshots:
            info.path.unlink(missing_ok=True)
        if orphan.folder.is_dir() and any(not p.name.startswith(".")
                                          for p in orphan.folder.glob("*.npz")):
            return
    shutil.rmtree(orphan.folder, ignore_errors=True)
