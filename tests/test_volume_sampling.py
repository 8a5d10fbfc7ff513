"""The core volume sampler: slice range, follow the finding, batching, sizes, progress, cancel."""

import numpy as np
import pytest
import torch

from napari_ambiseg.errors import Cancelled, InputError
from napari_ambiseg.models import build_model
from napari_ambiseg.result import SampleResult
from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.testing import ThresholdSegmenter, tiny_config
from napari_ambiseg.volume_sampling import Prompt, Request, sample_request, slice_plan


def ct_volume(depth=7, size=48, seed=0):
    """HU-like noise with a bright blob that grows and shrinks over the slices."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(-800, 60, (depth, size, size)).astype(np.float32)
    yy, xx = np.indices((size, size))
    for z in range(depth):
        r = 3 + 4 * np.sin(np.pi * (z + 0.5) / depth)
        vol[z][(yy - 24) ** 2 + (xx - 22) ** 2 <= r * r] = 40.0
    return vol


@pytest.fixture(scope="module", params=[0, 4], ids=["plain", "latent"])
def seg(request):
    torch.manual_seed(0)
    cfg = tiny_config(latent_dim=request.param)
    model = build_model(cfg)
    torch.nn.init.normal_(model.denoiser.out.weight, std=0.3)  # untrained, but not all-zero
    return Segmenter(model, cfg, "cpu")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_batched_slices_give_the_masks_of_one_slice_at_a_time(seg, sampler):
    vol, n = ct_volume(), 5
    zs, prompts = [1, 2, 3, 4, 5], [((24.0, 22.0), None)] * 5
    together = seg.sample_slices(vol, zs, prompts, n, 3, seed=7, sampler=sampler, max_batch=5 * n)
    pairs = seg.sample_slices(vol, zs, prompts, n, 3, seed=7, sampler=sampler, max_batch=2 * n)
    alone = [seg.sample(vol[z], n, 3, 7, center=(24.0, 22.0), sampler=sampler) for z in zs]
    for (m1, b1, _), (m2, b2, _), r in zip(together, pairs, alone):
        assert m1.shape == (n, 48, 48) and m1.any() and not m1.all()
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(m1, r.masks)
        assert b1 == b2 == r.bounds
    # the request path (what the CLI and the widgets call) is the same computation
    out = sample_request(seg, Request(vol, Prompt(center=(24.0, 22.0), z=3), n=n, steps=3,
                                      seed=7, volume=True, slices=[1, 5], sampler=sampler))
    np.testing.assert_array_equal(out.masks, np.stack([r.masks for r in alone], 1))


def test_the_encoder_runs_once_per_slice_and_slices_share_network_calls(seg):
    vol, calls = ct_volume(), {"encode": [], "denoise": []}
    enc, den = seg.model.encode_image, seg.model.denoise
    seg.model.encode_image = lambda x: calls["encode"].append(len(x)) or enc(x)
    seg.model.denoise = lambda x, *a: calls["denoise"].append(len(x)) or den(x, *a)
    try:
        seg.sample_slices(vol, range(6), [((24.0, 22.0), None)] * 6, 4, 2, max_batch=12)
    finally:
        del seg.model.encode_image, seg.model.denoise
    assert calls["encode"] == [3, 3]             # two batches of three slices
    assert calls["denoise"] == [12, 12, 12, 12]  # 3 slices x 4 samples, 2 steps each


def test_range_result_shape_key_and_sizes_in_mm(seg):
    vol = ct_volume()
    req = Request(vol, Prompt(center=(24.0, 22.0), z=3), n=4, steps=2, volume=True,
                  slices=[2, 4], spacing=(2.5, 0.7, 0.8))
    out = sample_request(seg, req)
    assert isinstance(out, SampleResult) and out.volume
    assert out.masks.shape == (4, 3, 48, 48) and out.z0 == 2 and out.key == 1
    assert out.agreement.shape == (3, 48, 48) and out.spacing == (2.5, 0.7, 0.8)
    np.testing.assert_allclose(out.agreement, out.masks.mean(0))
    voxel = 2.5 * 0.7 * 0.8
    assert [s.volume_mm3 for s in out.sizes] == pytest.approx(  # specks left out (measure.py)
        [(m.sum() - s.specks) * voxel for m, s in zip(out.masks, out.sizes)])
    d = out.describe()
    assert len(d["mode_sizes"]) == len(out.modes) and d["method"] == "per-slice"
    assert all(("mm^3" in m["text"]) or m["text"] == "no finding" for m in d["mode_sizes"])
    s = out.summary()
    assert s["z0"] == 2 and s["slices"] == 3 and len(s["samples"]) == 4
    assert {"sample", "total", "per_slice"} <= set(s["timings_s"])


def test_progress_counts_steps_and_cancel_stops_within_one_evaluation(seg):
    vol, seen = ct_volume(), []
    req = Request(vol, Prompt(z=3), n=2, steps=3, volume=True, slices=[0, 5], max_batch=4)
    sample_request(seg, req, progress=lambda d, t, s: seen.append((d, t)))
    assert seen[-1] == (18, 18) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    evaluations = []
    den = seg.model.denoise
    seg.model.denoise = lambda x, *a: evaluations.append(1) or den(x, *a)
    try:
        with pytest.raises(Cancelled):
            sample_request(seg, req, should_stop=lambda: len(evaluations) >= 2)
    finally:
        del seg.model.denoise
    assert len(evaluations) == 2


Blob = ThresholdSegmenter  # no batching


class BatchedBlob(Blob):
    """The same with `sample_slices`: records which slices go through together."""

    def sample_slices(self, volume, zs, prompts, n, steps, seed, *, progress=None, **_):
        self.calls.append(list(zs))
        for i in range(steps):
            progress and progress(i + 1, steps)
        return [(np.repeat((np.asarray(volume[z]) > 0)[None], n, 0), (0, 0, 1, 1)) for z in zs]


def test_follow_goes_both_ways_together_and_stops_after_the_finding():
    vol = ct_volume(depth=12)
    vol[:2] = vol[10:] = -800.0  # the finding is on slices 2..9
    seg = BatchedBlob()
    out = sample_request(seg, Request(vol, Prompt(center=(24.0, 22.0), z=5), n=3, steps=1,
                                      volume=True, propagate=True, spacing=(2.0, 1.0, 1.0)))
    # one slice, then one up and one down per round, until both ends are empty
    assert seg.calls == [[5], [6, 4], [7, 3], [8, 2], [9, 1], [10]]
    assert out.z0 == 1 and out.masks.shape == (3, 10, 48, 48) and out.key == 4
    assert [bool(out.masks[0, z].any()) for z in range(10)] == [0] + [1] * 8 + [0]
    assert out.sizes[0].slices == 8 and out.sizes[0].extent_mm == 16.0
    # a segmenter without sample_slices gets the same answer one slice at a time
    single = sample_request(Blob(), Request(vol, Prompt(center=(24.0, 22.0), z=5), n=3,
                                            steps=1, volume=True, propagate=True))
    np.testing.assert_array_equal(single.masks, out.masks)


def test_follow_limit_and_plans():
    vol = ct_volume(depth=12)
    out = sample_request(BatchedBlob(), Request(vol, Prompt(z=5), n=2, steps=1, volume=True,
                                                propagate=True, max_slices=2))
    assert out.z0 == 3 and out.masks.shape[1] == 5
    assert slice_plan(Request(vol, Prompt(z=4), volume=True, slices=[8, 6]), 12) == [6, 7, 8]
    assert slice_plan(Request(vol, volume=True), 12) == [6]
    with pytest.raises(InputError, match="outside"):
        slice_plan(Request(vol, volume=True, slices=[10, 12]), 12)
    with pytest.raises(InputError, match="outside"):
        slice_plan(Request(vol, Prompt(z=12), volume=True, propagate=True), 12)


def test_2d_request_keeps_its_spacing_for_sizes():
    img = ct_volume()[3]
    out = sample_request(Blob(), Request(img, n=2, steps=1, spacing=(0.5, 0.5)))
    assert out.z0 is None and out.spacing == (0.5, 0.5)
    assert out.sizes[0].area_mm2 == pytest.approx((img > 0).sum() * 0.25)
    assert out.mode_sizes()[0]["text"].endswith("mm")
