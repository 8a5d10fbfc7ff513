"""Recovery folder (Qt-free core): atomic snapshots, orphan detection, faithful restore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ambiseg import recovery as R
from napari_ambiseg.errors import WriteError
from napari_ambiseg.io import read_image, write_labels


def _oblique_nifti(path):
    """A 3D image with a rotated, flipped direction, anisotropic spacing and an origin."""
    img = sitk.GetImageFromArray(np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7))
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    img.SetDirection((rot @ np.diag([-1, 1, 1])).ravel().tolist())
    img.SetSpacing((0.8, 1.1, 3.0))
    img.SetOrigin((12.5, -40.0, 7.25))
    sitk.WriteImage(img, str(path))
    return img


def _state(tmp_path, name="ct labels"):
    """Labels on an oblique NIfTI's grid with its reference and an adoption record."""
    _oblique_nifti(tmp_path / "ct.nii.gz")
    [ct] = read_image(tmp_path / "ct.nii.gz")
    data = np.zeros(ct.data.shape, dtype=np.uint16)
    data[1:3, 2:5, 3:6] = 1
    data[4, 5, 6] = 300  # touches the far corner
    transform = {"scale": list(ct.spacing), "translate": list(ct.origin),
                 "rotate": np.eye(3).tolist(), "affine": np.eye(4).tolist(),
                 "axis_labels": ["z", "y", "x"], "units": ["millimeter"] * 3}
    metadata = {"ambiseg": ct.reference(),
                "ambiseg_adopted": {"source_name": "ct", "what": "mode 1", "time": 1.0},
                "opaque": object()}  # not JSON: dropped, never restored half-baked
    return ct, R.LayerState(name, data, transform, metadata)


def _orphan_with_dead_owner(session: R.Session) -> None:
    """Make `session` look left by a process that is gone: run a child, record its pid."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True, timeout=60)
    manifest = {**session.manifest, "pid": int(child.stdout)}
    (session.folder / R.MANIFEST).write_text(json.dumps(manifest))


def test_snapshot_restore_same_voxels_geometry_metadata(tmp_path):
    ct, state = _state(tmp_path)
    session = R.start_session(tmp_path / "rec")
    assert R.orphaned_sessions(tmp_path / "rec") == []  # our own session is alive
    session.snapshot("k1", state)
    _orphan_with_dead_owner(session)
    [orphan] = R.orphaned_sessions(tmp_path / "rec")
    assert orphan.names == ["ct labels"] and orphan.problems == []
    assert orphan.snapshots[0].shape == state.data.shape
    [(data, kwargs, kind)], problems = R.restore(orphan)
    assert kind == "labels" and problems == []
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, state.data)
    assert kwargs["name"] == "ct labels"
    for key in ("scale", "translate", "rotate", "affine", "axis_labels", "units"):
        np.testing.assert_equal(kwargs[key], state.transform[key])
    assert kwargs["metadata"]["ambiseg_adopted"] == state.metadata["ambiseg_adopted"]
    assert "opaque" not in kwargs["metadata"]
    # the restored reference writes the labels on the source grid, as the original would
    restored = write_labels(data > 0, tmp_path / "restored.nii.gz", kwargs["metadata"])[0]
    original = write_labels(data > 0, tmp_path / "original.nii.gz", ct)[0]
    a, b = sitk.ReadImage(restored), sitk.ReadImage(original)
    source = sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    for img in (a, b):
        np.testing.assert_allclose(img.GetOrigin(), source.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(img.GetSpacing(), source.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(img.GetDirection(), source.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    # discarding removes the whole session
    R.discard(orphan)
    assert not session.folder.exists() and R.orphaned_sessions(tmp_path / "rec") == []


def test_snapshot_keeps_only_the_labelled_box_and_empty_labels(tmp_path):
    session = R.start_session(tmp_path)
    data = np.zeros((40, 300, 300), dtype=np.int32)
    data[10:12, 100:110, 200:205] = 7
    path = session.snapshot("big", R.LayerState("big", data))
    with np.load(path) as z:
        assert z["labels"].shape == (2, 10, 5) and list(z["offset"]) == [10, 100, 200]
    assert np.array_equal(R.read_snapshot(path).data, data)
    zeros = R.LayerState("e", np.zeros((3, 4), np.uint8))
    empty = R.read_snapshot(session.snapshot("empty", zeros))
    assert empty.data.shape == (3, 4) and empty.data.dtype == np.uint8 and not empty.data.any()
    assert session.keys() == ["big", "empty"]
    session.forget("big")
    assert session.keys() == ["empty"]
    with pytest.raises(WriteError, match="integers"):
        session.snapshot("f", R.LayerState("f", np.zeros((3, 4), np.float32)))
    session.end()
    assert not session.folder.exists()


def test_failed_write_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    session = R.start_session(tmp_path)
    good = np.zeros((8, 8), dtype=np.uint8)
    good[2:4, 2:4] = 1
    path = session.snapshot("k", R.LayerState("labels", good))

    def half_written(file, **arrays):  # writes some bytes, then the disk "fills up"
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", half_written)
    with pytest.raises(WriteError, match="No space left"):
        session.snapshot("k", R.LayerState("labels", np.ones((8, 8), np.uint8)))
    monkeypatch.undo()
    np.testing.assert_array_equal(R.read_snapshot(path).data, good)
    assert [p.name for p in session.folder.iterdir()] in (["k.npz", R.MANIFEST],
                                                          [R.MANIFEST, "k.npz"])


def test_orphan_detection(tmp_path, monkeypatch):
    alive = R.start_session(tmp_path)
    alive.snapshot("a", R.LayerState("mine", np.ones((2, 2), np.uint8)))
    assert R.orphaned_sessions(tmp_path) == []

    def rewrite(session, **changes):
        (session.folder / R.MANIFEST).write_text(json.dumps({**session.manifest, **changes}))

    # same pid, but another process (pid reused): orphaned
    rewrite(alive, process_started=alive.manifest["process_started"] - 3600)
    assert [o.folder for o in R.orphaned_sessions(tmp_path)] == [alive.folder]
    # the machine was rebooted since
    rewrite(alive, boot_id="another-boot")
    monkeypatch.setattr(R, "_boot_id", lambda: "this-boot")
    assert len(R.orphaned_sessions(tmp_path)) == 1
    # another host sharing the folder: alive while its heartbeat is fresh
    rewrite(alive, host="elsewhere")
    assert R.orphaned_sessions(tmp_path) == []
    old = time.time() - R.STALE_S - 60
    os.utime(alive.folder / R.MANIFEST, (old, old))
    assert len(R.orphaned_sessions(tmp_path)) == 1
    alive.heartbeat()
    assert R.orphaned_sessions(tmp_path) == []
    # a running owner's session is never discarded
    rewrite(alive)
    monkeypatch.undo()
    orphan = R.OrphanedSession(alive.folder, alive.manifest, [], [])
    with pytest.raises(WriteError, match="in use"):
        R.discard(orphan)
    assert alive.folder.is_dir()


def test_dead_process_leaves_an_orphan_empty_ones_are_swept(tmp_path):
    """A real process snapshots and exits without ending its session (a crash)."""
    script = textwrap.dedent(f"""
        import numpy as np
        from napari_ambiseg import recovery as R
        s = R.start_session({str(tmp_path)!r})
        s.snapshot("k", R.LayerState("crashed", np.arange(12, dtype=np.uint8).reshape(3, 4)))
        R.start_session({str(tmp_path)!r})  # a second session with nothing in it
        """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    [orphan] = R.orphaned_sessions(tmp_path)
    assert orphan.names == ["crashed"]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # the empty one is gone
    [(data, _, _)], _ = R.restore(orphan)
    np.testing.assert_array_equal(data, np.arange(12).reshape(3, 4))


def test_damaged_snapshot_is_reported_others_restored(tmp_path):
    session = R.start_session(tmp_path)
    session.snapshot("good", R.LayerState("good", np.ones((2, 3), np.uint8)))
    (session.folder / "bad.npz").write_bytes(b"not a zip")
    _orphan_with_dead_owner(session)
    [orphan] = R.orphaned_sessions(tmp_path)
    assert orphan.names == ["good"] and "bad.npz" in orphan.problems[0]
    layers, problems = R.restore(orphan)
    assert [kw["name"] for _, kw, _ in layers] == ["good"] and len(problems) == 1
    R.discard(orphan, only_restored=True)  # the unreadable file stays for the user to decide
    [left] = R.orphaned_sessions(tmp_path)
    assert left.names == [] and left.problems
    R.discard(left)
    assert not session.folder.exists()


def test_recovery_root_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv(R.ENV, str(tmp_path / "x"))
    assert R.recovery_root() == tmp_path / "x"
    monkeypatch.delenv(R.ENV)
    assert R.recovery_root().name == "recovery" and "napari-ambiseg" in str(R.recovery_root())


def test_fingerprint_ignores_the_time_only(tmp_path):
    """A snapshot equal to the last one written is skipped: its fingerprint says 'same'."""
    _, state = _state(tmp_path)
    first = R.prepare("k", state)
    time.sleep(0.01)
    again = R.prepare("k", state)
    assert first.record != again.record and first.fingerprint() == again.fingerprint()
    painted = state.data.copy()
    painted[0, 0, 0] = 2
    renamed = R.LayerState("other", state.data, state.transform, state.metadata)
    moved = R.LayerState(state.name, state.data, {**state.transform, "translate": [0, 0, 0]},
                         state.metadata)
    for changed in (R.LayerState(state.name, painted, state.transform, state.metadata),
                    renamed, moved):
        assert R.prepare("k", changed).fingerprint() != first.fingerprint()
