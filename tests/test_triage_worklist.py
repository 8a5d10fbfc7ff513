"""napari_ambiseg/worklist.py: the reading side of a run folder (run.json, worklist.csv, the
dock's state file, labels beside the run), on a folder written by hand to the contract."""

import csv
import json
import sys

import numpy as np
import pytest

from napari_ambiseg import worklist as wl
from napari_ambiseg.errors import InputError


def _hand_made_run(root, images):
    """A two-prompt run on a .npz input, written as docs/triage.md says."""
    data = root / "data.npz"
    np.savez(data, images=images, masks=np.zeros((len(images), 2) + images.shape[1:], np.uint8))
    (root / "run").mkdir()
    run = root / "run"
    (run / "run.json").write_text(json.dumps({
        "format": wl.FORMAT, "model": {"name": "tiny.safetensors", "sha256": "0" * 64},
        "n": 4, "steps": 2, "seed": 0, "inputs": {"kind": "npz", "path": str(data)}}))
    rows = [wl.Row(1, "1", 0.5, 0.8, 0.3, 12.0, "mm^2", "", 2, "ok", "centre", "1"),
            wl.Row(2, "0", 0.1, 0.9, 0.05, 10.0, "mm^2", "", 1, "ok", "centre", "0"),
            wl.Row(None, "2", None, None, None, None, "", "", None, "error", "centre", "2",
                   "cannot read")]
    with open(run / "worklist.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=wl.COLUMNS)
        w.writeheader()
        w.writerows(r.to_csv() for r in rows)
    for i in (0, 1):
        d = run / "cases" / str(i)
        d.mkdir(parents=True)
        masks = np.zeros((4, 8, 8), np.uint8)
        masks[:, 2:5, 2:5] = 1
        np.savez_compressed(d / "samples.npz", masks=masks,
                            agreement=masks.mean(0).astype(np.float32))
        (d / "result.json").write_text(json.dumps({"case": str(i), "key": str(i),
                                                   "source": {"npz_index": i}}))
    d = run / "cases" / "2"
    d.mkdir()
    (d / "error.json").write_text(json.dumps({"key": "2", "error": "cannot read"}))
    return run


def test_read_run_and_load_case(tmp_path):
    images = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    run = wl.read_run(_hand_made_run(tmp_path, images))
    assert run.keys == ["1", "0", "2"] and run.n == 4 and run.steps == 2
    assert run.rows[0].rank == 1 and run.rows[0].score == 0.5 and run.rows[0].modes == 2
    assert run.rows[2].rank is None and not run.rows[2].ok and run.rows[2].error == "cannot read"
    image, samples, agreement, result = wl.load_case(run, "1")
    np.testing.assert_array_equal(image.data, images[1])
    assert samples.shape == (4, 8, 8) and agreement.dtype == np.float32
    assert result["key"] == "1" and run.done("1") and not run.done("2")
    with pytest.raises(InputError, match="failed: cannot read"):
        wl.load_case(run, "2")


def test_not_a_run(tmp_path):
    with pytest.raises(InputError, match="not a triage run"):
        wl.read_run(tmp_path)


def test_state_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AMBISEG_ANNOTATOR", "dr who")
    assert wl.read_state(tmp_path) == {}
    wl.set_status(tmp_path, "a", "done")
    wl.set_status(tmp_path, "b~1", "skipped", who="ann", when="2025-01-01T00:00:00+00:00")
    state = wl.read_state(tmp_path)
    assert state["a"].status == "done" and state["a"].who == "dr_who" and state["a"].when
    assert state["b~1"] == wl.CaseState("skipped", "ann", "2025-01-01T00:00:00+00:00")
    wl.set_status(tmp_path, "a", "todo")
    assert wl.read_state(tmp_path)["a"].status == "todo"
    assert json.loads((tmp_path / "worklist_state.json").read_text())["cases"]["b~1"]["who"] == "ann"
    with pytest.raises(InputError, match="not one of"):
        wl.set_status(tmp_path, "a", "finished")


def test_labels_beside_the_run(tmp_path):
    from napari_ambiseg.io import MedicalImage, read_image

    img = MedicalImage(np.zeros((3, 8, 8), np.int16), (2.0, 0.5, 0.5), (1.0, 2.0, 3.0),
                       axes=("z", "y", "x"), modality="CT")
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[1, 2:4, 2:4] = 1
    path = wl.save_labels(tmp_path, "case~1", labels, img, annotator="ann")
    assert path == tmp_path / "labels" / "case~1" / "ann.nii.gz"
    assert wl.saved_labels(tmp_path, "case~1") == {"ann": path}
    [back] = read_image(path)
    np.testing.assert_array_equal(back.data, labels)


def test_no_torch_or_qt():
    import subprocess

    code = ("import sys; import napari_ambiseg.worklist; "
            "print(any(m in sys.modules for m in ('torch', 'qtpy', 'PyQt5', 'napari')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
