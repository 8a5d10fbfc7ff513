"""The `ambiseg` command line as a contract: files, keys, shapes and one-line errors."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from napari_ambiseg.cli import main
from napari_ambiseg.config import ModelConfig
from napari_ambiseg.models import build_model
from napari_ambiseg.testing import tiny_config, two_mode_data
from napari_ambiseg.weights_io import save_weights

METRIC_KEYS = {"ged", "hm_iou", "ci", "d_max", "s_c", "d_a", "s_ncc", "ece", "n", "steps", "sampler", "count"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    cfg = tiny_config()
    return str(save_weights(build_model(cfg), cfg, tmp_path_factory.mktemp("w") / "tiny"))


def test_sample_writes_aligned_outputs(tmp_path, weights, capsys):
    img = (np.random.default_rng(0).random((70, 90)) * 255).astype(np.uint8)
    np.save(tmp_path / "img.npy", img)
    out = tmp_path / "out"
    rc = main(["sample", str(tmp_path / "img.npy"), "--n", "5", "--steps", "3", "--seed", "0",
               "--out", str(out), "--weights", weights, "--center", "30", "40"])
    assert rc == 0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (5, 70, 90) and samples.dtype == np.uint8
    agreement = np.load(out / "agreement.npy")
    assert agreement.dtype == np.float32 and agreement.shape == (70, 90)
    np.testing.assert_allclose(agreement, samples.mean(0), atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 5 and sum(m["count"] for m in summary["modes"]) == 5
    assert "total" in summary["timings_s"]
    assert (out / "agreement.png").read_bytes()[:4] == b"\x89PNG"
    assert "5 masks" in capsys.readouterr().out


def test_sample_reads_dicom(tmp_path, weights):
    pydicom = pytest.importorskip("pydicom")
    ct = pydicom.data.get_testdata_file("CT_small.dcm")
    assert main(["sample", ct, "--n", "2", "--steps", "2", "--out", str(tmp_path),
                 "--weights", weights]) == 0
    assert np.load(tmp_path / "samples.npy").shape == (2, 128, 128)


def test_evaluate_writes_metrics_and_samples(tmp_path, weights):
    data = two_mode_data(k=3, raters=4)
    np.savez(tmp_path / "d.npz", images=data.images, masks=data.masks)
    out = tmp_path / "ev"
    rc = main(["evaluate", "--data", str(tmp_path / "d.npz"), "--n", "4", "--steps", "2",
               "--out", str(out), "--weights", weights, "--limit", "2", "--save-samples",
               "--sampler", "ddim"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(m) and m["n"] == 4 and m["steps"] == 2 and m["count"] == 2
    assert m["sampler"] == "ddim"
    samples = np.load(out / "samples.npz")["samples"]
    assert samples.shape == (2, 4, 32, 32) and samples.dtype == np.uint8
    assert (out / "reliability.png").is_file()
    # anyone can recompute the metrics from the saved samples
    from napari_ambiseg.metrics import ged

    assert ged(samples[0], data.masks[0]) == pytest.approx(
        json.loads((out / "metrics.json").read_text())["ged"] * 2 - ged(samples[1], data.masks[1]))


@pytest.fixture(scope="module")
def weights_20_8(tmp_path_factory):
    """A model shipped with its own sampling defaults: 20 steps, 8 samples."""
    cfg = tiny_config(steps=20, n_samples=8)
    return str(save_weights(build_model(cfg), cfg, tmp_path_factory.mktemp("w") / "twenty"))


def test_sample_and_evaluate_use_the_models_n_and_steps_unless_given(tmp_path, weights_20_8):
    img = (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)
    np.save(tmp_path / "img.npy", img)
    data = two_mode_data(k=1, raters=4)
    np.savez(tmp_path / "d.npz", images=data.images, masks=data.masks)
    for given, expect in (([], (8, 20)), (["--n", "3", "--steps", "2"], (3, 2))):
        out = tmp_path / f"s{len(given)}"
        assert main(["sample", str(tmp_path / "img.npy"), "--out", str(out),
                     "--weights", weights_20_8, *given]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["n"], summary["steps"]) == expect
        assert np.load(out / "samples.npy").shape[0] == expect[0]
        out = tmp_path / f"e{len(given)}"
        assert main(["evaluate", "--data", str(tmp_path / "d.npz"), "--out", str(out),
                     "--weights", weights_20_8, *given]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert (m["n"], m["steps"]) == expect


def test_sample_rgb_npy_uses_the_images_grayscale(tmp_path, weights):
    """A colour .npy goes to the model as `MedicalImage.model_image` (its BT.601 luma)."""
    from napari_ambiseg.cli import load_input
    from napari_ambiseg.io.preprocess import to_grayscale

    rgb = (np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "rgb.npy", rgb)
    img, assumed = load_input(str(tmp_path / "rgb.npy"))
    assert assumed and img.rgb and img.spatial_shape == (40, 50)
    np.testing.assert_array_equal(img.model_image, to_grayscale(rgb))
    assert main(["sample", str(tmp_path / "rgb.npy"), "--n", "2", "--steps", "1",
                 "--out", str(tmp_path / "o"), "--weights", weights]) == 0
    assert np.load(tmp_path / "o" / "samples.npy").shape == (2, 40, 50)
    assert (tmp_path / "o" / "agreement.png").is_file()


def test_demo_passes_no_counts_unless_given(monkeypatch):
    """`ambiseg demo` leaves N and steps to the model (the dock seeds them from its config)."""
    from napari_ambiseg.widgets import demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.append((kw["n"], kw["steps"])) or 0)
    assert main(["demo"]) == 0 and main(["demo", "--n", "4", "--steps", "3"]) == 0
    assert seen == [(None, None), (4, 3)]


def test_train_init_fine_tunes_with_the_weights_architecture(tmp_path, weights):
    data = two_mode_data(k=4)
    np.savez(tmp_path / "d.npz", images=data.images, masks=data.masks)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--init", weights,
                 "--iterations", "2", "--batch-size", "2", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert ModelConfig.from_dict(run["model"]) == tiny_config() and run["train"]["init"] == weights
    assert (out / "last.safetensors").is_file()


@pytest.mark.parametrize("make, args, match", [
    (lambda p: np.save(p / "x.npy", np.zeros((2, 3, 4, 5))), ["sample", "{d}/x.npy"], "2D"),
    (lambda p: np.save(p / "x.npy", np.full((8, 8), np.nan)), ["sample", "{d}/x.npy"], "NaN"),
    (lambda p: np.save(p / "x.npy", np.zeros((0, 8))), ["sample", "{d}/x.npy"], "empty"),
    (lambda p: (p / "x.dcm").write_bytes(b"not a dicom"), ["sample", "{d}/x.dcm"], "x.dcm"),
    (lambda p: None, ["sample", "{d}/missing.npy"], "not found"),
    (lambda p: np.save(p / "x.npy", np.zeros((8, 8))),
     ["sample", "{d}/x.npy", "--weights", "{d}/nope.safetensors"], "weights"),
    (lambda p: np.savez(p / "d.npz", imgs=np.zeros((1, 8, 8))), ["evaluate", "--data",
                                                                    "{d}/d.npz"], "keys"),
])
def test_bad_input_exits_nonzero_with_one_line(tmp_path, capsys, make, args, match):
    make(tmp_path)
    argv = [a.format(d=tmp_path) for a in args] + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err and "Traceback" not in err


def test_console_script_is_installed():
    exe = shutil.which("ambiseg") or str(sys.prefix + "/bin/ambiseg")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "sample" in out.stdout and "evaluate" in out.stdout


def test_progress_plain_lines_off_a_terminal_and_a_bar_on_one():
    import io

    from napari_ambiseg.progress import ProgressBar

    plain = io.StringIO()
    with ProgressBar("sampling", "steps", stream=plain, every=0.0) as bar:
        bar(3, 10, "slices 2-4")
        bar(10, 10, "slices 2-4")
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("sampling: 3/10 steps (30%), ") and "ETA" in lines[0]
    assert lines[-1].startswith("sampling: 10/10 steps (100%)") and "steps/s" in lines[-1]
    assert lines[-1].endswith("- slices 2-4")
    quiet = io.StringIO()
    with ProgressBar("evaluating", "images", stream=quiet, every=3600) as bar:
        bar(5, 9)
    assert quiet.getvalue().count("\n") == 1  # only the final line
    term = io.StringIO()
    with ProgressBar("sampling", "steps", stream=term, terminal=True) as bar:
        bar(4, 8, "slice 3")
        assert (bar.bar.n, bar.bar.total) == (4, 8)  # tqdm's bar, with rate and ETA
    assert "sampling" in term.getvalue() and "steps/s" in term.getvalue()


def test_sample_outside_the_models_scope_says_so_on_stderr(tmp_path, weights, capsys):
    """Issue 13 item 4: an MR input with a CT model warns (stderr) and the result says so."""
    pydicom = pytest.importorskip("pydicom")
    mr = pydicom.data.get_testdata_file("MR_small.dcm")
    assert main(["sample", mr, "--n", "2", "--steps", "1", "--out", str(tmp_path / "mr"),
                 "--weights", weights]) == 0
    io = capsys.readouterr()
    assert "warning" in io.err and "Outside the model's scope: it is an MR image" in io.err
    assert io.out.startswith("outside the model's scope (see the warning above): 2 masks")
    summary = json.loads((tmp_path / "mr" / "summary.json").read_text())
    assert any("MR" in w for w in summary["outside_scope"])
    ct = pydicom.data.get_testdata_file("CT_small.dcm")
    assert main(["sample", ct, "--n", "2", "--steps", "1", "--out", str(tmp_path / "ct"),
                 "--weights", weights]) == 0
    io = capsys.readouterr()
    assert "scope" not in io.err and io.out.startswith("2 masks")
