"""`ambiseg triage` (docs/triage.md): the run folder of a folder of cases and of a .npz,
prompts in voxels and mm, resume and its refusals, errors per prompt, identical results in
shards. The tiny model (with an existence head, so the score has a finding probability)."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ambiseg import worklist as wl
from napari_ambiseg.cli import main
from napari_ambiseg.io import read_image
from napari_ambiseg.testing import disk


def tiny_weights(path, seed=0):
    import torch

    from napari_ambiseg.models import build_model
    from napari_ambiseg.testing import tiny_config
    from napari_ambiseg.weights_io import save_weights

    torch.manual_seed(seed)
    cfg = tiny_config(existence_head=True)
    return save_weights(build_model(cfg), cfg, path)


def write_cases(folder):
    """A NIfTI CT stored RAS-like (flipped for display), a PNG, a DICOM series, a broken
    file and a note that is no case."""
    from napari_ambiseg.testing import write_ct_series

    folder.mkdir()
    rng = np.random.default_rng(0)
    vol = (rng.normal(0, 20, (6, 40, 40)) - 800).astype(np.int16)
    for z in range(1, 5):
        vol[z][disk(40, 6)] = 40
    im = sitk.GetImageFromArray(vol)
    im.SetSpacing((0.8, 0.7, 2.0))
    im.SetOrigin((10.0, 20.0, -30.0))
    im.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(im, str(folder / "ct_a.nii.gz"))
    from PIL import Image

    Image.fromarray((disk(48, 10) * 150 + 50).astype(np.uint8)).save(folder / "slice_b.png")
    write_ct_series(folder / "series_c", shape=(5, 32, 32))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    (folder / "notes.txt").write_text("not a case")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("triage")
    return {"weights": str(tiny_weights(root / "tiny.safetensors")),
            "cases": write_cases(root / "cases"), "root": root}


def triage(setup, out, *extra):
    return main(["triage", str(setup["cases"]), "--out", str(out), "--weights",
                 setup["weights"], "--n", "3", "--steps", "2", *extra])


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folder_run(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert triage(setup, out) == 0
    said = capsys.readouterr()
    assert "4 prompts (3 ranked, 1 error(s))" in said.out
    assert "notes.txt" in said.err and "triage: " in said.err  # ignored entry, progress
    with open(out / "worklist.csv", newline="") as f:
        assert next(csv.reader(f)) == list(wl.COLUMNS)
    rows = rows_of(out / "worklist.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "3", ""]
    scores = [float(r["score"]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True)
    assert rows[3]["key"] == "broken" and rows[3]["status"] == "error"
    assert "broken.nii.gz" in rows[3]["error"] and "\n" not in rows[3]["error"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["ct_a"]["slices"] == "3" and by_key["ct_a"]["size_unit"] in ("", "mm^2")
    assert by_key["slice_b"]["slices"] == "" and 0 <= float(by_key["ct_a"]["finding_probability"]) <= 1

    run = wl.read_run(out)
    assert run.n == 3 and run.steps == 2 and run.info["given_finding"] is True
    assert run.info["inputs"]["cases"] == ["broken", "ct_a", "series_c", "slice_b"]
    assert run.info["model"]["name"] == "tiny.safetensors" and len(run.info["model"]["sha256"]) == 64
    seeds = {p["key"]: p["index"] for p in run.info["prompts"]}
    assert seeds == {"broken": 0, "ct_a": 1, "series_c": 2, "slice_b": 3}

    image, samples, agreement, result = wl.load_case(run, "ct_a")
    assert image.spatial_shape == (6, 40, 40) and samples.shape == (3, 1, 40, 40)
    assert result["z0"] == 3 and result["seed"] == 1 and agreement.shape == (1, 40, 40)
    np.testing.assert_allclose(agreement, samples.mean(0), atol=1e-6)
    # the agreement file lies on the source grid: same geometry as the case read again
    [back] = read_image(out / "cases" / "ct_a" / "agreement.nii.gz")
    assert back.spatial_shape == image.spatial_shape
    np.testing.assert_allclose(back.spacing, image.spacing)
    np.testing.assert_allclose(back.origin, image.origin)
    np.testing.assert_allclose(back.data[3], agreement[0], atol=1e-6)
    assert not back.data[:3].any() and not back.data[4:].any()
    assert (out / "cases" / "series_c" / "agreement.nii.gz").is_file()
    assert not (out / "cases" / "slice_b" / "agreement.nii.gz").exists()  # a PNG: no geometry
    png, s_png, _, r_png = wl.load_case(run, "slice_b")
    assert png.spatial_shape == (48, 48) and s_png.shape == (3, 48, 48) and r_png["z0"] is None
    with pytest.raises(Exception, match="failed: Cannot read broken"):
        wl.load_case(run, "broken")

    html = (out / "report.html").read_text()
    for key in ("ct_a", "series_c", "slice_b", "broken"):
        assert key in html
    for name in ("ct_a", "series_c", "slice_b", "score_histogram"):
        assert (out / "img" / f"{name}.png").stat().st_size > 0
    assert "1 - (p^2 m + (1 - p)^2)" in html and "N = 3 samples, 2 steps" in html


def test_resume_and_refusals(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert triage(setup, out, "--limit", "2") == 0
    assert [r["key"] for r in rows_of(out / "worklist.csv")] != []
    assert {r["key"] for r in rows_of(out / "worklist.csv")} == {"broken", "ct_a"}
    first = (out / "cases" / "ct_a" / "result.json").read_text()
    # a prompt in flight when the run stopped has no result.json: sampled again, alone
    (out / "cases" / "ct_a" / "result.json").unlink()
    (out / "cases" / "ct_a" / "samples.npz").unlink()
    capsys.readouterr()
    assert triage(setup, out) == 0  # more cases than --limit 2: the run goes on
    err = capsys.readouterr().err
    assert "triage: 4/4 prompts" in err  # ct_a, series_c, slice_b and the failing one again
    again = json.loads((out / "cases" / "ct_a" / "result.json").read_text())
    assert again["score"] == json.loads(first)["score"] and again["seed"] == 1
    assert len(rows_of(out / "worklist.csv")) == 4
    capsys.readouterr()
    assert triage(setup, out) == 0
    assert "triage: 1/1 prompts" in capsys.readouterr().err  # only the failing prompt

    for extra, named in ((["--steps", "3"], "steps 2 (now 3)"), (["--seed", "4"], "seed 0 (now 4)"),
                         (["--unconditional"], "--unconditional")):
        assert main(["triage", str(setup["cases"]), "--out", str(out), "--weights",
                     setup["weights"], "--n", "3", *(["--steps", "2"] if "--steps" not in extra
                                                     else []), *extra]) == 2
        msg = capsys.readouterr().err
        assert named in msg and msg.count("\n") == 1, msg
    other = tiny_weights(tmp_path / "other.safetensors", seed=1)
    assert main(["triage", str(setup["cases"]), "--out", str(out), "--weights", str(other),
                 "--n", "3", "--steps", "2"]) == 2
    assert "model tiny.safetensors" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    assert triage(setup, tmp_path / "full") == 2
    assert "not empty" in capsys.readouterr().err


def test_prompts_csv(setup, tmp_path, capsys):
    """Points and boxes in voxels and in mm (through the source geometry: the NIfTI is
    flipped in x and y for display), one row per prompt, several for one case."""
    [ct] = read_image(setup["cases"] / "ct_a.nii.gz")
    src = sitk.ReadImage(str(setup["cases"] / "ct_a.nii.gz"))
    z, y, x = 2, 12, 30  # displayed indices; the file's are flipped in x and y
    world = src.TransformIndexToPhysicalPoint((40 - 1 - x, 40 - 1 - y, z))
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(
        "case,units,z,y,x,z0,y0,x0,z1,y1,x1,x_mm,y_mm,z_mm\n"
        f"ct_a,mm,,,,,,,,,,{world[0]},{world[1]},{world[2]}\n"
        "ct_a,voxel,,,,1,10,10,3,30,30,,,\n"
        "slice_b,,,20,22,,,,,,,,,\n"
        "ct_a,voxel,9,5,5,,,,,,,,,\n")
    out = tmp_path / "run"
    assert triage(setup, out, "--prompts", str(prompts)) == 0
    rows = {r["key"]: r for r in rows_of(out / "worklist.csv")}
    assert set(rows) == {"ct_a", "ct_a~1", "ct_a~2", "slice_b"}
    mm = json.loads((out / "cases" / "ct_a" / "result.json").read_text())
    assert mm["request"]["z"] == z and mm["z0"] == z
    np.testing.assert_allclose(mm["request"]["center"], (y, x), atol=1e-6)
    slab = json.loads((out / "cases" / "ct_a~1" / "result.json").read_text())
    assert slab["request"]["slices"] == [1, 3] and slab["request"]["box"] == [10, 10, 30, 30]
    assert rows["ct_a~1"]["slices"] == "1-3" and rows["ct_a~1"]["status"] == "ok"
    samples, _ = wl.load_samples(out, "ct_a~1")
    assert samples.shape == (3, 3, 40, 40)
    assert rows["ct_a~2"]["status"] == "error" and "outside the volume" in rows["ct_a~2"]["error"]
    assert rows["slice_b"]["prompt"] == "point y 20, x 22"
    assert ct.spatial_shape == (6, 40, 40)

    capsys.readouterr()

    def refused(text, expected):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        assert triage(setup, tmp_path / "bad_run", "--prompts", str(bad)) == 2
        msg = capsys.readouterr().err
        assert expected in msg and msg.count("\n") == 1, msg

    refused("case,y\nct_a,3\n", "needs the columns of a point or a box")
    refused("name,z,y,x\nct_a,1,2,3\n", "'case'")
    refused("case,z,y,x\nnope,1,2,3\nct_a,1,2,3\n", "not in the input: 'nope'")
    refused("case,z,y,x\nct_a,1,two,3\n", "line 2: y = 'two' is not a number")
    refused("case,units,x_mm,y_mm,z_mm\nct_a,mm,1,2,\n", "line 2")


def test_npz_input(setup, tmp_path, capsys):
    images = np.full((5, 32, 32), 40, np.uint8)
    for i in range(5):
        images[i][disk(32, 3 + i)] = 200
    data = tmp_path / "set.npz"
    np.savez_compressed(data, images=images, masks=np.zeros((5, 2, 32, 32), np.uint8))
    out = tmp_path / "run"
    assert main(["triage", str(data), "--out", str(out), "--weights", setup["weights"],
                 "--n", "3", "--steps", "2", "--limit", "3"]) == 0
    run = wl.read_run(out)
    assert sorted(run.keys) == ["0", "1", "2"] and run.inputs["count"] == 5
    image, samples, agreement, result = wl.load_case(run, "2")
    np.testing.assert_array_equal(image.data, images[2])
    assert result["source"] == {"npz_index": 2} and result["seed"] == 2
    assert samples.shape == (3, 32, 32) and not (out / "cases" / "2" / "agreement.nii.gz").exists()
    capsys.readouterr()
    assert main(["triage", str(data), "--out", str(tmp_path / "r2"), "--weights",
                 setup["weights"], "--prompts", str(tmp_path / "p.csv")]) == 2
    assert "--prompts is for a folder" in capsys.readouterr().err


def test_shards_give_the_same_worklist(setup, tmp_path):
    """Prompt i goes to rank i % K with seed + i: two shards written into one folder give
    the worklist of one process (in this process: the torchrun test runs the real thing)."""
    from napari_ambiseg.segmenter import Segmenter
    from napari_ambiseg.triage import run as tr

    def plan_for(out):
        s = tr.Settings(str(setup["cases"]), str(out), n=3, steps=2, weights=setup["weights"])
        plan = tr.plan_run(s, tr.model_identity(s.weights), 3, 2, "ddim")
        out.mkdir()
        tr.write_run_json(plan, None)
        return plan

    seg = Segmenter.load(setup["weights"], device="cpu")
    one = plan_for(tmp_path / "one")
    tr.sample_prompts(one, seg)
    tr.merge(one)
    two = plan_for(tmp_path / "two")
    counts = [tr.sample_prompts(two, seg, rank, 2) for rank in (1, 0)]
    assert [c["mine"] for c in counts] == [2, 2]
    tr.merge(two)
    assert (tmp_path / "one" / "worklist.csv").read_text() == \
        (tmp_path / "two" / "worklist.csv").read_text()
    for key in ("ct_a", "series_c", "slice_b"):
        a, _ = wl.load_samples(tmp_path / "one", key)
        b, _ = wl.load_samples(tmp_path / "two", key)
        np.testing.assert_array_equal(a, b)


def test_a_stopped_run_loses_only_the_prompt_in_flight(setup, tmp_path, monkeypatch, capsys):
    """Stopped while writing series_c (its samples written, not its result.json): the run
    again samples series_c and the failing prompt only, and ends as an unstopped run."""
    from napari_ambiseg.triage import run as tr

    assert triage(setup, tmp_path / "whole") == 0
    real = tr.atomic_write_bytes

    def stop_at_series_c(path, data):
        if path.name == "result.json" and path.parent.name == "series_c":
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(tr, "atomic_write_bytes", stop_at_series_c)
    out = tmp_path / "stopped"
    assert triage(setup, out) == 130
    assert not (out / "worklist.csv").exists()
    assert (out / "cases" / "series_c" / "samples.npz").is_file()
    assert (out / "cases" / "ct_a" / "result.json").is_file()
    monkeypatch.setattr(tr, "atomic_write_bytes", real)
    capsys.readouterr()
    assert triage(setup, out) == 0
    assert "triage: 3/3 prompts" in capsys.readouterr().err  # series_c, slice_b, broken
    assert (out / "worklist.csv").read_text() == (tmp_path / "whole" / "worklist.csv").read_text()
