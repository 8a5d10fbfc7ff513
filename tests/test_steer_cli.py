"""`ambiseg sample --include / --exclude` (#25): the clicks reach the sampler, summary.json
records them and the share of samples that satisfy them, bad clicks get one clear line."""

import json

import numpy as np
import pytest

from napari_ambiseg.cli import main
from napari_ambiseg.models import build_model
from napari_ambiseg.testing import disk, tiny_config
from napari_ambiseg.weights_io import save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    cfg = tiny_config(existence_head=True)
    return str(save_weights(build_model(cfg), cfg, tmp_path_factory.mktemp("w") / "head"))


@pytest.fixture
def inputs(tmp_path):
    image = (disk(32, 6) * 150 + 50).astype(np.float32)
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "vol.npy", np.stack([image] * 6))
    return tmp_path


def _run(inputs, weights, name, *args):
    return main(["sample", str(inputs / name), "--n", "4", "--steps", "2", "--weights", weights,
                 "--center", "16", "16", "--out", str(inputs / "out"), *args])


def _summary(inputs):
    return json.loads((inputs / "out" / "summary.json").read_text())


def test_clicks_on_an_image_reach_the_sampler_and_summary(inputs, weights, capsys):
    assert _run(inputs, weights, "img.npy", "--include", "16", "16", "--include", "14", "15",
                "--exclude", "2", "3") == 0
    s = _summary(inputs)
    assert s["constraints"]["include"] == [[16, 16], [14, 15]]
    assert s["constraints"]["exclude"] == [[2, 3]]
    assert 0 <= s["constraints_satisfied"] <= 1 and s["conditional"] is True
    out = capsys.readouterr().out
    assert "drawn given 2 include and 1 exclude click(s)" in out and "of 4 samples" in out
    assert _run(inputs, weights, "img.npy") == 0  # no clicks: no record
    assert _summary(inputs)["constraints"] is None


def test_clicks_on_a_slab_and_on_one_slice(inputs, weights):
    assert _run(inputs, weights, "vol.npy", "--slices", "1", "4", "--include", "4", "16",
                "16") == 0
    assert _summary(inputs)["constraints"]["include"] == [[4, 16, 16]]
    assert _run(inputs, weights, "vol.npy", "--slice", "2", "--exclude", "3", "3") == 0
    assert _summary(inputs)["constraints"]["exclude"] == [[2, 3, 3]]  # on the slice sampled


@pytest.mark.parametrize("name, args, match", [
    ("img.npy", ["--include", "40", "3"], "include point (40, 3) is outside the image"),
    ("img.npy", ["--include", "5", "5", "--exclude", "5", "5"],
     "include and exclude on the same pixel (5, 5)"),
    ("img.npy", ["--include", "1", "5", "5"], "--include 1 5 5: give Y X"),
    ("vol.npy", ["--slices", "1", "4", "--include", "16", "16"],
     "give Z Y X with --slices or --follow"),
    ("vol.npy", ["--slices", "1", "3", "--exclude", "5", "16", "16"],
     "outside the sampled slices 1..3"),
])
def test_bad_clicks_get_one_clear_line(inputs, weights, capsys, name, args, match):
    assert _run(inputs, weights, name, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
