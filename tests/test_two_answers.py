"""Two answers: "would experts outline a finding here?" (a probability) and "what would they
outline?" (samples drawn given a finding); volumes whose result does not hang on the start."""

import json

import numpy as np
import pytest
import torch

from napari_ambiseg.cli import main
from napari_ambiseg.existence import envelope, peak_slice
from napari_ambiseg.models import build_model
from napari_ambiseg.result import finding_text
from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.testing import disk, tiny_config, two_mode_data
from napari_ambiseg.training.evaluate import finding_calibration
from napari_ambiseg.volume_sampling import Prompt, Request, sample_request
from napari_ambiseg.weights_io import save_weights


def _segmenter(existence_bias: float = 0.0, **kw) -> Segmenter:
    """A tiny coherent model whose head says p = sigmoid(bias) on every crop."""
    cfg = tiny_config(existence_head=True, **kw)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.denoiser.out.weight, std=0.3)  # untrained, not all-zero
    last = model.existence.mlp[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, existence_bias)
    return Segmenter(model, cfg, "cpu")


def _volume(z=7, size=32):
    return np.stack([(disk(size, 6) * 150 + 50).astype(np.float32)] * z)


def _profile(seg, p):
    """Make the slab's finding probabilities `p` (one per slice), whatever the crops."""
    seg.finding_probabilities = lambda volume, zs, *a, **k: np.asarray([p[z] for z in zs])


def _filled(res):
    return res.masks.reshape(res.n, res.masks.shape[1], -1).any(-1)  # (N, Z)


def test_a_click_draws_the_outlines_given_a_finding_and_states_its_probability():
    seg = _segmenter(existence_bias=float(np.log(0.3 / 0.7)))  # p = 0.3
    image = _volume(1)[0]
    given = seg.sample(image, 16, 2, seed=3, center=(16, 16))
    assert given.conditional and given.finding_probability == pytest.approx(0.3, abs=1e-4)
    assert given.masks.reshape(16, -1).any(1).all()  # no empty sample from existence
    bench = seg.sample(image, 16, 2, seed=3, center=(16, 16), given_finding=False)
    assert not bench.conditional and bench.finding_probability == pytest.approx(0.3, abs=1e-4)
    assert bench.masks.reshape(16, -1).any(1).sum() in (4, 5)  # floor / ceil of pN
    for res in (given, bench):
        summary = res.summary()
        assert summary["finding_probability"] == pytest.approx(0.3, abs=1e-4)
        assert summary["conditional"] is res.conditional
        assert res.describe()["finding_probability"] == summary["finding_probability"]
    assert finding_text(0.78, True) == "experts would outline a finding here: 78%"
    assert "no finding" in finding_text(0.78, False)  # the benchmark distribution says so


def test_the_envelope_runs_down_from_the_peak():
    p = np.array([0.2, 0.6, 0.4, 0.9, 0.3, 0.5])
    assert peak_slice(p) == 3 and peak_slice(np.ones(5), prefer=1) == 1
    np.testing.assert_allclose(envelope(p, 3), [0.2, 0.4, 0.4, 0.9, 0.3, 0.3])


PROFILE = [0.1, 0.3, 0.6, 0.9, 0.7, 0.4, 0.2]


@pytest.mark.parametrize("neighbour", [True, False])
def test_a_slab_starts_where_the_finding_is_most_evident_and_not_where_asked(neighbour):
    seg = _segmenter(neighbour_conditioning=neighbour, neighbour_steps=2)
    _profile(seg, PROFILE)
    runs = {}
    for start in (None, 0, 3, 6):
        req = Request(_volume(), Prompt(center=(16, 16)), n=16, steps=3, seed=5, volume=True,
                      slices=[0, 6], start=start, given_finding=False)
        runs[start] = sample_request(seg, req)
    auto = runs[None]
    assert auto.start == 3 and auto.finding_probability == pytest.approx(0.9)
    assert auto.slice_probabilities == pytest.approx(PROFILE)
    for start in (0, 6):  # the benchmark distribution does not depend on the start
        np.testing.assert_array_equal(runs[start].masks, auto.masks)
        assert runs[start].start == start
        assert runs[start].finding_probability == pytest.approx(PROFILE[start])
    filled = _filled(auto)
    assert filled.any(1).sum() in (14, 15)  # floor / ceil of 0.9 x 16 see a finding
    for row in filled:  # each sample's finding is one run of slices through the peak
        z = np.flatnonzero(row)
        assert not len(z) or (row[z[0]:z[-1] + 1].all() and z[0] <= 3 <= z[-1])


def test_given_a_finding_on_a_slice_every_sample_has_one_there():
    seg = _segmenter(neighbour_conditioning=True, neighbour_steps=2)
    _profile(seg, PROFILE)
    req = Request(_volume(), Prompt(center=(16, 16)), n=16, steps=3, seed=5, volume=True,
                  slices=[0, 6], start=1)
    res = sample_request(seg, req)
    filled = _filled(res)
    assert res.conditional and res.start == 1 and filled[:, 1].all()
    assert res.finding_probability == pytest.approx(0.3)
    assert filled[:, 1:4].all()  # given one on slice 1, it reaches the peak
    assert not filled[:, 0].all()  # and may end before the end of the slab
    assert res.describe()["start"] == 1


def test_a_model_without_a_head_keeps_the_prompt_slice_and_gives_no_probability():
    cfg = tiny_config()
    seg = Segmenter(build_model(cfg), cfg, "cpu")
    req = Request(_volume(5), Prompt(center=(16, 16), z=1), n=4, steps=2, volume=True,
                  slices=[0, 4])
    res = sample_request(seg, req)
    assert res.start == 1 and res.finding_probability is None and not res.conditional
    assert "no finding probability" in res.finding_text()


def test_one_slice_of_a_volume_is_measured_as_an_area():
    seg = _segmenter(existence_bias=5.0)
    req = Request(_volume(5), Prompt(center=(16, 16), z=2), n=4, steps=2, volume=True,
                  slices=[2], spacing=(2.5, 0.7, 0.7))
    res = sample_request(seg, req)
    sizes = res.mode_sizes()
    assert res.one_slice and all(s.ndim == 2 and s.volume_mm3 is None for s in res.sizes)
    assert all("mm^2" in s["text"] and "one slice" in s["text"] for s in sizes if not s["empty"])


@pytest.fixture(scope="module")
def head_weights(tmp_path_factory):
    cfg = tiny_config(existence_head=True)
    return str(save_weights(build_model(cfg), cfg, tmp_path_factory.mktemp("w") / "head"))


def test_cli_sample_gives_both_answers(tmp_path, head_weights, capsys):
    np.save(tmp_path / "vol.npy", _volume(6))
    base = ["sample", str(tmp_path / "vol.npy"), "--n", "4", "--steps", "2", "--weights",
            head_weights, "--center", "16", "16"]
    assert main(base + ["--slices", "1", "4", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["conditional"] is True and 0 <= summary["finding_probability"] <= 1
    assert 1 <= summary["start"] <= 4 and len(summary["slice_probabilities"]) == 4
    assert "experts would outline a finding here" in out and "started on slice" in out
    assert main(base + ["--unconditional", "--out", str(tmp_path / "b")]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["conditional"] is False and "no finding" in capsys.readouterr().out


@pytest.mark.parametrize("args, match", [
    (["--slices", "1", "3", "--slice", "5"], "outside --slices"),
    (["--slices", "2", "2"], "one slice"),
    (["--center", "40", "3"], "outside the image"),
    (["--box", "50", "50", "60", "60"], "does not overlap"),
])
def test_cli_bad_slab_and_prompt_get_one_clear_line(tmp_path, head_weights, capsys, args, match):
    np.save(tmp_path / "vol.npy", _volume(6))
    assert main(["sample", str(tmp_path / "vol.npy"), "--weights", head_weights,
                 "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


def test_evaluate_writes_the_finding_probability_per_slice(tmp_path, head_weights, capsys):
    data = two_mode_data(k=6)
    np.savez(tmp_path / "d.npz", images=data.images, masks=data.masks)
    assert main(["evaluate", "--data", str(tmp_path / "d.npz"), "--n", "4", "--steps", "1",
                 "--weights", head_weights, "--out", str(tmp_path / "e")]) == 0
    p = np.load(tmp_path / "e" / "finding_probability.npy")
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert p.shape == (6,) and ((p >= 0) & (p <= 1)).all()
    assert metrics["given_finding"] is False and "ece" in metrics["finding"]
    assert (tmp_path / "e" / "finding_reliability.png").stat().st_size > 0
    assert main(["evaluate", "--data", str(tmp_path / "d.npz"), "--n", "4", "--steps", "1",
                 "--weights", head_weights, "--out", str(tmp_path / "g"),
                 "--given-finding"]) == 0
    assert json.loads((tmp_path / "g" / "metrics.json").read_text())["given_finding"] is True


def test_finding_calibration_against_the_readers_share():
    data = two_mode_data(k=8)
    share = data.masks.reshape(8, data.masks.shape[1], -1).any(-1).mean(1)
    exact = finding_calibration(share, data)
    assert exact["ece"] == pytest.approx(0) and exact["bce"] == pytest.approx(exact["bce_floor"])
    constant = finding_calibration(np.full(8, share.mean()), data)
    assert constant["bce"] == pytest.approx(constant["bce_constant"])


def test_summary_numbers_outline_modes_like_the_gallery():
    from napari_ambiseg.result import SampleResult

    masks = np.zeros((16, 32, 32), bool)
    masks[10:] = disk(32, 6)  # "no finding" is the largest group
    labels = [m["label"] for m in SampleResult.from_masks(masks, (0, 0, 32, 32), 2, 0)
              .summary()["modes"]]
    assert labels == ["no finding - 10 of 16", "mode 1 - 6 of 16"]
