"""Back to training (#24.6): an annotated triage run is training data (`training.
from_worklist`, reached through `training.data.load_data`): the labels saved for a case are
its raters, cut as Add case cuts; and the whole loop triage -> annotate -> retrain -> triage
on a handful of tiny cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ambiseg import worklist as wl
from napari_ambiseg.config import ModelConfig
from napari_ambiseg.errors import InputError
from napari_ambiseg.testing import disk, tiny_config
from napari_ambiseg.training.data import load_data
from napari_ambiseg.training.from_worklist import (
    is_worklist,
    labels_on_image,
    load_worklist,
    run_model,
    worklist_cases,
)
from napari_ambiseg.triage import run as tr

sys.path.insert(0, str(Path(__file__).parent))
from dock_helpers import Evident  # noqa: E402
from test_triage_run import tiny_weights, write_cases  # noqa: E402  (ct_a, slice_b, series_c)


def make_run(root: Path) -> Path:
    """A triage run (the triage module's API) sampled by a scripted stand-in: three modes
    (2, 1 of 4 samples outlined, 1 empty) at every prompt; ct_a as a slab (box, slices
    1-4), the others at a point; `broken` fails."""
    cases = write_cases(root / "cases")
    prompts = root / "prompts.csv"
    prompts.write_text("case,z0,y0,x0,z1,y1,x1\nct_a,1,10,10,4,30,30\n"
                       "slice_b,0,14,14,0,34,34\nseries_c,2,8,8,2,24,24\nbroken,0,1,1,0,3,3\n")
    seg = Evident([0.9] * 8, groups=(2, 1, 1), radii=(4, 7, 0))
    seg.cfg = ModelConfig()
    s = tr.Settings(input=str(cases), out=str(root / "run"), prompts=str(prompts), n=4,
                    steps=2)
    plan = tr.plan_run(s, {"name": "scripted", "sha256": "0" * 64}, 4, 2, "ddpm")
    plan.out.mkdir()
    tr.write_run_json(plan, None)
    tr.sample_prompts(plan, seg)
    tr.merge(plan)
    return plan.out


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return make_run(tmp_path)


def save(run_dir, key, who, paint) -> np.ndarray:
    """Labels on the case image's grid (`paint(labels)` draws them), saved as the dock does."""
    run = wl.read_run(run_dir)
    image, _, _, result = wl.load_case(run, key)
    labels = np.zeros(image.spatial_shape, np.uint16)
    paint(labels, result)
    wl.save_labels(run, key, labels, image, annotator=who)
    wl.set_status(run, key, "done", who=who)
    return labels


def centre_disk(radius, value=1):
    def paint(labels, result):
        plane = labels if labels.ndim == 2 else labels[result["result"]["start"]]
        plane[disk(plane.shape, radius)] = value
    return paint


def test_saved_labels_are_the_raters_of_training_cases(run_dir):
    save(run_dir, "slice_b", "ann_a", centre_disk(6))
    save(run_dir, "slice_b", "ann_b", lambda labels, r: None)  # saw nothing
    start = json.loads((run_dir / "cases" / "ct_a" / "result.json").read_text())["result"]["start"]
    other = 1 if start != 1 else 4  # a slice of the slab the sampler did not start on

    def ct(labels, result):
        labels[start][disk(labels.shape[1:], 4)] = 2
        labels[other][disk(labels.shape[1:], 3)] = 7
    save(run_dir, "ct_a", "ann_a", ct)
    assert is_worklist(run_dir) and not is_worklist(run_dir / "cases")

    cases = worklist_cases(run_dir)
    assert [(c.key, c.slice) for c in cases] == [("ct_a", min(start, other)),
                                                 ("ct_a", max(start, other)), ("slice_b", None)]
    by = {(c.key, c.slice): c for c in cases}
    png = by[("slice_b", None)]
    assert png.raters == ["ann_a", "ann_b"] and png.case.image.shape == (128, 128)
    assert png.case.image.dtype == np.uint8 and png.case.masks.shape == (2, 128, 128)
    assert png.case.masks[0].sum() == disk(48, 6).sum() and not png.case.masks[1].any()
    ys, xs = np.nonzero(png.case.masks[0])
    assert abs(ys.mean() - 64) <= 1 and abs(xs.mean() - 64) <= 1  # centred, as Add case does
    assert png.case.info["key"] == "slice_b" and png.case.info["raters"] == ["ann_a", "ann_b"]
    assert by[("ct_a", other)].case.masks[0].sum() == disk(40, 3).sum()

    data = load_data(run_dir)  # the training loader's dispatch
    assert data.images.shape == (3, 128, 128) and data.masks.shape == (3, 2, 128, 128)
    k = [(c.key, c.slice) for c in cases].index(("ct_a", start))
    # one annotator, two raters in the set: that annotator counts twice, never an empty rater
    np.testing.assert_array_equal(data.masks[k, 0], data.masks[k, 1])
    assert data.masks[k, 0].any()
    assert data.source == str(run_dir)


def test_the_patch_geometry_is_a_model_s(run_dir):
    save(run_dir, "slice_b", "ann", centre_disk(5))
    assert load_worklist(run_dir, tiny_config()).images.shape == (1, 64, 64)
    run = wl.read_run(run_dir)
    assert run_model(run) is None  # the run's own model cannot be found: the data's geometry
    size = ModelConfig().context_size  # the LIDC data's 128 pixels
    assert load_worklist(run_dir).images.shape == (1, size, size)
    from napari_ambiseg.triage.run import sha256_of
    from napari_ambiseg.weights_io import bundled_weights_path

    bundled = bundled_weights_path()
    if not bundled.is_file():
        pytest.skip("no bundled weights in this installation")
    run.info["model"] = {"name": f"bundled ({bundled.name})", "sha256": sha256_of(bundled)}
    cfg = run_model(run)
    assert cfg is not None and cfg.scope.pixel_spacing_mm  # its pixel spacing is used
    run.info["model"]["sha256"] = "0" * 64
    assert run_model(run) is None


def test_what_cannot_be_trained_on_is_said(run_dir, tmp_path):
    with pytest.raises(InputError, match="no labels yet.*Worklist"):
        load_data(run_dir)
    folder = run_dir / "labels" / "slice_b"
    folder.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((9, 9), np.uint8)), str(folder / "x.nii.gz"))
    with pytest.raises(InputError, match=r"case slice_b: .*x.nii.gz.*not on the case image"):
        load_data(run_dir)
    image = wl.load_case(wl.read_run(run_dir), "slice_b").image
    with pytest.raises(InputError, match="not on the case image's grid"):
        labels_on_image(image.spatial_shape, folder / "x.nii.gz")
    (run_dir / "cases" / "slice_b" / "result.json").unlink()
    with pytest.raises(InputError, match=r"case slice_b: .*not sampled yet .*result.json"):
        load_data(run_dir)


def test_the_loop_triage_annotate_retrain_triage(tmp_path, capsys):
    """`ambiseg triage` with a tiny model -> labels saved for two cases (as the Worklist
    dock's Save writes them; two annotators on one) -> `ambiseg train --data RUN` -> triage
    again with the new weights."""
    from napari_ambiseg.cli import main

    weights = tiny_weights(tmp_path / "tiny.safetensors")  # with an existence head
    model = tiny_config(existence_head=True)
    cases = write_cases(tmp_path / "cases")
    (cases / "broken.nii.gz").unlink()
    run = tmp_path / "run"
    triage = ["--n", "3", "--steps", "2", "--device", "cpu"]
    assert main(["triage", str(cases), "--out", str(run), "--weights", str(weights),
                 *triage]) == 0
    keys = wl.read_run(run).keys
    assert sorted(keys) == ["ct_a", "series_c", "slice_b"]

    save(run, keys[0], "ann_a", centre_disk(5))
    save(run, keys[0], "ann_b", centre_disk(3))
    save(run, keys[1], "ann_a", centre_disk(4))
    data = load_data(run)
    assert len(data) == 2 and data.masks.shape[1] == 2

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": model.to_dict(), "train": {
        "warmup": 1, "checkpoint_every": 1, "log_every": 1, "val_every": 1000}}))
    out = tmp_path / "retrained"
    assert main(["train", "--data", str(run), "--config", str(config), "--out", str(out),
                 "--iterations", "2", "--batch-size", "2", "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "step 2/2" in said
    new = out / "last.safetensors"
    assert new.is_file()
    assert json.loads((out / "run.json").read_text())["train"]["data"] == str(run)

    again = tmp_path / "run2"
    assert main(["triage", str(cases), "--out", str(again), "--weights", str(new),
                 *triage]) == 0
    second = wl.read_run(again)
    assert sorted(second.keys) == sorted(keys) and all(r.ok for r in second.rows)
    assert [r.rank for r in second.rows] == [1, 2, 3]
    assert second.model["sha256"] == tr.sha256_of(new) != wl.read_run(run).model["sha256"]


def test_a_run_on_a_multi_rater_npz(tmp_path):
    """A .npz input's cases are its images, read again from the .npz (LIDC 8-bit scale)."""
    from napari_ambiseg.training.cases import make_case

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (3, 48, 48), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=images, masks=np.zeros((3, 2, 48, 48), np.uint8))
    seg = Evident([0.8], groups=(3, 1), radii=(5, 0))
    s = tr.Settings(input=str(tmp_path / "set.npz"), out=str(tmp_path / "run"), n=4, steps=1)
    plan = tr.plan_run(s, {"name": "scripted", "sha256": "0" * 64}, 4, 1, "ddpm")
    plan.out.mkdir()
    tr.write_run_json(plan, None)
    tr.sample_prompts(plan, seg)
    tr.merge(plan)
    labels = save(plan.out, "2", "ann", centre_disk(4))
    [cut] = worklist_cases(plan.out)
    assert (cut.key, cut.slice, cut.raters) == ("2", None, ["ann"])
    same = make_case(images[2], labels[None], context_size=128, crop_size=64, modality="8bit")
    np.testing.assert_array_equal(cut.case.image, same.image)
    np.testing.assert_array_equal(cut.case.masks, same.masks)
