"""Steering (#25): include / exclude clicks the samples are drawn given (`constraints`), in the
sampler, the segmenter, the volume sampler and the result."""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_two_answers import _profile, _segmenter, _volume  # the tiny model with a head

import napari_ambiseg
from napari_ambiseg.constraints import Constraints, pick
from napari_ambiseg.diffusion import Schedule, sample_masks
from napari_ambiseg.diffusion.sampler import Known, grid_order
from napari_ambiseg.errors import InputError
from napari_ambiseg.geometry import Region
from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.testing import disk
from napari_ambiseg.volume_sampling import Prompt, Request, sample_request


def _image(size=32):
    return _volume(1, size)[0]


def _calls(seg):
    """Record the batch size of every denoiser evaluation."""
    calls, den = [], seg.model.denoise
    seg.model.denoise = lambda x, *a: calls.append(len(x)) or den(x, *a)
    return calls


# -- the constraint type ---------------------------------------------------------------


@pytest.mark.parametrize("c, shape, slab, match", [
    (Constraints(include=[(40, 3)]), (32, 32), None, "outside the image"),
    (Constraints(exclude=[(-1, 3)]), (32, 32), None, "outside the image"),
    (Constraints(include=[(5, 5)], exclude=[(5.2, 4.9)]), (32, 32), None, "same pixel (5, 5)"),
    (Constraints(include=[(1, 5, 5)]), (32, 32), None, "an image takes (y, x)"),
    (Constraints(include=[(5, 5)]), (6, 32, 32), None, "a volume takes (z, y, x)"),
    (Constraints(include=[(5, 5, 5)]), (6, 32, 32), (1, 3), "outside the sampled slices 1..3"),
    (Constraints(include=[(16, 16)], exclude_mask=disk(32, 8)), (32, 32), None,
     "lies in the painted exclude area"),
    (Constraints(include_mask=disk(32, 3), exclude_mask=disk(32, 8)), (32, 32), None,
     "the exclude covers the only include"),
    (Constraints(include_mask=np.ones((8, 8), bool)), (32, 32), None, "does not match"),
])
def test_bad_clicks_get_one_clear_line(c, shape, slab, match):
    with pytest.raises(InputError, match=re.escape(match)) as err:
        c.check(shape, slab)
    assert "\n" not in str(err.value)


def test_points_round_to_pixels_and_mixed_axes_are_refused():
    c = Constraints(include=np.array([[3.4, 7.6]]), exclude=[(1, 2)])
    assert c.include == ((3, 8),) and c.exclude == ((1, 2),) and c.ndim == 2 and c
    assert not Constraints() and Constraints().ndim is None
    with pytest.raises(InputError, match="mix"):
        Constraints(include=[(1, 2)], exclude=[(1, 2, 3)])
    layer = Constraints.from_points([[2.0, 5.2, 4.8], [3, 1, 1], [4, 6, 6]], [True, False, True])
    assert layer.include == ((2, 5, 5), (4, 6, 6)) and layer.exclude == ((3, 1, 1),)
    assert not Constraints.from_points(np.zeros((0, 2)), [])
    v = Constraints(include=[(2, 5, 5), (4, 6, 6)], exclude=[(3, 1, 1)])
    assert v.slices() == [2, 3, 4] and v.slices(include_only=True) == [2, 4]
    assert v.plane(2).include == ((5, 5),) and not v.plane(3).include and v.plane(3).exclude
    assert v.includes_on(4) and not v.includes_on(3)


def test_known_pixels_in_the_crop_frame():
    # model grid of 16 on a 2x zoomed region centred at pixel edge (10, 10)
    region = Region(10.0, 10.0, 2.0)
    c = Constraints(include=[(10, 10)], exclude=[(6, 6)], radius=2)
    k = c.known(region, 16)
    # image pixel 10 covers model pixels 8..9; its centre (10.5) is model coordinate 8.5
    assert k[9, 9] == 2 and k[8, 8] == 1 and k[8, 10] == 1 and k[8, 11] == 0  # pinned pixel 2
    assert k[1, 1] == -1 and k[0, 0] == -1 and k[3, 3] == 0  # (6, 6) -> model 0.5
    close = Constraints(include=[(10, 10)], exclude=[(10, 11)], radius=3).known(region, 16)
    assert close[9, 9] == 2 and close[9, 11] == -1 and close[8, 10] == 0  # overlap: unknown
    painted = Constraints(exclude_mask=np.pad(np.ones((2, 2), bool), ((8, 10), (8, 10))))
    k = painted.known(region, 16)  # image pixels 8..9 are model pixels 4..7
    assert (k[4:8, 4:8] == -1).all() and (k == -1).sum() == 16


def test_satisfied_needs_a_real_piece_and_no_excluded_pixel():
    blob = disk(32, 5)                    # centred at (16, 16)
    speck = np.zeros((32, 32), bool)
    speck[3, 3] = True
    masks = np.stack([blob, blob | speck, speck, np.zeros_like(blob)])
    assert Constraints(include=[(16, 16)]).satisfied(masks).tolist() == [1, 1, 0, 0]
    assert Constraints(include=[(3, 3)]).satisfied(masks).tolist() == [0, 0, 0, 0]
    assert Constraints(exclude=[(16, 16)]).satisfied(masks).tolist() == [0, 0, 1, 1]
    assert Constraints(include=[(16, 16)], exclude=[(3, 3)]).satisfied(masks).tolist() == [
        1, 0, 0, 0]
    # a volume's clicks are (z, y, x) of the volume; the masks start at slice z0
    slab = np.stack([np.stack([np.zeros_like(blob), blob])] * 2)  # (2, 2, H, W)
    assert Constraints(include=[(6, 16, 16)]).satisfied(slab, z0=5).all()
    assert not Constraints(include=[(5, 16, 16)]).satisfied(slab, z0=5).any()
    assert not Constraints(include=[(9, 16, 16)]).satisfied(slab, z0=5).any()  # not sampled
    # painted areas: 95% of an include inside, at most 5% of an exclude
    assert Constraints(include_mask=disk(32, 3)).satisfied(masks).tolist() == [1, 1, 0, 0]
    assert Constraints(exclude_mask=disk(32, 3)).satisfied(masks).tolist() == [0, 0, 1, 1]
    assert Constraints(exclude_mask=~blob).satisfied(masks).tolist() == [1, 1, 1, 1]  # 1 px


# -- the sampler -------------------------------------------------------------------------


def _sampled(known=None, sampler="ddim", steps=4, calls=None):
    def denoise(x_t, logsnr):  # an "image" that says: a bright left half
        if calls is not None:
            calls.append(1)
        return torch.tanh(2 * x_t + torch.linspace(-1, 1, x_t.shape[-1]))

    return sample_masks(denoise, Schedule("cosine", 0.1), (2, 1, 6, 6), steps=steps,
                        sampler=sampler, generator=torch.Generator().manual_seed(0), known=known)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_known_pixels_enter_every_step_and_pins_the_output(sampler):
    free = _sampled(sampler=sampler)
    where = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    where[..., :3] = True
    values = torch.full((2, 1, 6, 6), 1.0)  # known: the left half is inside
    pins = torch.zeros_like(where)
    pins[..., 0, 0] = True
    calls = []
    steered = _sampled(Known(values, where, pins, restarts=1, restart_steps=2), sampler,
                       calls=calls)
    assert len(calls) == 4 + 2 and grid_order(4, Known(values, where, None, 1, 2)) == [
        0, 1, 2, 3, 2, 3]
    assert (steered[..., 0, 0] == 1).all()       # pinned
    assert steered[..., :3].mean() > free[..., :3].mean()  # pulled towards the known values
    assert torch.equal(_sampled(sampler=sampler), free)    # nothing known: unchanged


# -- the segmenter -----------------------------------------------------------------------


def test_no_constraints_give_the_same_samples():
    seg, image = _segmenter(), _image()
    free = seg.sample(image, 6, 3, seed=2, center=(16, 16))
    again = seg.sample(image, 6, 3, seed=2, center=(16, 16), constraints=Constraints())
    np.testing.assert_array_equal(free.masks, again.masks)
    assert free.constraints is None and free.summary()["constraints"] is None
    steered = seg.sample(image, 6, 3, seed=2, center=(16, 16),
                         constraints=Constraints(include=[(16, 16)], exclude=[(16, 24)]))
    assert not np.array_equal(free.masks, steered.masks)


def test_an_include_click_means_a_finding_and_the_result_records_it():
    seg, image = _segmenter(existence_bias=-8.0), _image()  # p ~ 0.0003: nothing exists
    calls = _calls(seg)
    bench = seg.sample(image, 8, 2, seed=1, center=(16, 16), given_finding=False)
    assert calls == [] and not bench.masks.any()
    c = Constraints(include=[(16, 16)], exclude=[(2, 2)], rounds=1)  # one draw of 8
    res = seg.sample(image, 8, 2, seed=1, center=(16, 16), given_finding=False, constraints=c)
    assert calls == [8, 8] and res.conditional  # every sample drawn, given a finding
    assert res.constraints is c and res.satisfies.shape == (8,)
    s, d = res.summary(), res.describe()
    assert s["constraints"]["include"] == [[16, 16]] and s["constraints"]["exclude"] == [[2, 2]]
    assert s["constraints_satisfied"] == pytest.approx(res.satisfies.mean())
    assert s["satisfying_samples"] == np.flatnonzero(res.satisfies).tolist()
    assert d["constraints_satisfied"] == s["constraints_satisfied"]
    # an exclude alone says nothing about existence
    calls.clear()
    seg.sample(image, 8, 2, seed=1, center=(16, 16), given_finding=False,
               constraints=Constraints(exclude=[(16, 16)]))
    assert calls == []


def test_rounds_replace_the_samples_that_miss_a_click():
    assert pick([0, 1, 0, 1, 1, 0], 3).tolist() == [1, 3, 4]
    assert pick([0, 1, 0, 0], 3).tolist() == [0, 1, 2]  # too few: the first others fill up
    seg, image = _segmenter(), _image()
    c = Constraints(include=[(16, 16)], exclude=[(10, 10)], rounds=1)
    one = seg.sample(image, 8, 2, seed=4, center=(16, 16), constraints=c)
    more = seg.sample(image, 8, 2, seed=4, center=(16, 16), constraints=replace(c, rounds=3))
    assert one.drawn == 8 and one.summary()["constraints"]["drawn"] == 8
    assert 0 < one.satisfies.sum() < more.satisfies.sum() and more.drawn in (16, 24)
    assert more.n == 8 and more.summary()["constraints"]["drawn"] == more.drawn
    kept = {m.tobytes() for m in more.masks}
    assert all(m.tobytes() in kept for m in one.masks[one.satisfies])  # the first round's stay
    # a slab draws its rounds as whole slabs
    seg = _segmenter(existence_bias=0.0, neighbour_conditioning=True, neighbour_steps=1)
    vol = _volume(4)
    req = Request(vol, Prompt(center=(16, 16), z=1), n=8, steps=2, seed=4, volume=True,
                  slices=[0, 3], constraints=Constraints(include=[(1, 16, 16)],
                                                         exclude=[(1, 10, 10)], rounds=3))
    slab = sample_request(seg, req)
    first = sample_request(seg, replace(req, constraints=replace(req.constraints, rounds=1)))
    assert slab.masks.shape == first.masks.shape and slab.drawn >= first.drawn
    assert slab.satisfies.sum() >= first.satisfies.sum()


def test_without_a_prompt_the_model_looks_around_the_include_clicks():
    seg = _segmenter()
    image = np.zeros((96, 96), np.float32)
    res = seg.sample(image, 2, 1, constraints=Constraints(include=[(20, 70), (24, 74)]))
    y0, x0, y1, x1 = res.bounds
    assert y0 <= 22 < y1 and x0 <= 72 < x1 and (y0 + y1) / 2 == pytest.approx(22.5, abs=1)
    with pytest.raises(InputError, match="outside the region the model sees"):
        seg.sample(image, 2, 1, center=(80, 10), constraints=Constraints(include=[(5, 90)]))


def test_the_shipped_model_follows_a_click_the_unconstrained_samples_miss():
    """The bundled LIDC model on a shipped nodule: an include click just outside what most
    unconstrained samples mark is satisfied by more steered samples than unconstrained ones
    (the draw is steered, not only filtered)."""
    data = np.load(Path(napari_ambiseg.__file__).parent / "sample_data" / "clear.npz")
    image = data["images"][5].astype(np.float32)
    seg = Segmenter.load(device="cpu")
    free = seg.sample(image, 16, None, seed=0, center=(64, 64), modality="8bit")
    share = free.agreement
    ring = (share > 0) & (share < 0.25)  # marked by a few samples only
    y, x = np.argwhere(ring)[0]
    c = Constraints(include=[(y, x)])
    steered = seg.sample(image, 16, None, seed=0, center=(64, 64), modality="8bit",
                         constraints=c)
    assert c.satisfied(free.masks).mean() < 0.25
    assert steered.constraints_satisfied > c.satisfied(free.masks).mean() + 0.25


# -- the volume sampler ------------------------------------------------------------------


def test_a_click_on_a_slab_slice_steers_that_slice_and_plans_a_finding_there():
    seg = _segmenter(existence_bias=0.0, neighbour_conditioning=True, neighbour_steps=1)
    _profile(seg, [0.1, 0.2, 0.9, 0.95, 0.9, 0.3, 0.05])
    vol = _volume()
    base = dict(n=8, steps=2, seed=3, volume=True, slices=[0, 6])
    free = sample_request(seg, Request(vol, Prompt(center=(16, 16), z=3), **base))
    c = Constraints(include=[(6, 16, 16)], exclude=[(3, 2, 2)])
    res = sample_request(seg, Request(vol, Prompt(center=(16, 16), z=3), constraints=c, **base))
    filled = res.masks.reshape(8, 7, -1).any(-1)
    assert filled[:, 6].all() and filled[:, 3:7].all()  # the finding reaches the click
    assert not free.masks.reshape(8, 7, -1).any(-1)[:, 6].all()
    assert res.constraints is c and res.summary()["constraints"]["include"] == [[6, 16, 16]]
    assert res.satisfies.shape == (8,)
    with pytest.raises(InputError, match="outside the sampled slices 1..5"):
        sample_request(seg, Request(vol, Prompt(center=(16, 16), z=3), n=2, steps=1,
                                    volume=True, slices=[1, 5], constraints=c))


def test_a_clicked_slice_beside_a_neighbour_takes_all_the_steps():
    seg = _segmenter(existence_bias=5.0, neighbour_conditioning=True, neighbour_steps=1)
    _profile(seg, [0.99, 0.9, 0.9])
    calls = _calls(seg)
    req = Request(_volume(3), Prompt(center=(16, 16), z=0), n=4, steps=3, volume=True,
                  slices=[0, 2])
    sample_request(seg, req)
    assert len(calls) == 3 + 1 + 1  # the start, then one neighbour step per slice
    calls.clear()
    sample_request(seg, replace(req, constraints=Constraints(exclude=[(2, 16, 16)], rounds=1)))
    assert len(calls) == 3 + 1 + 3


def test_following_the_finding_goes_on_to_an_include_click():
    seg = _segmenter(existence_bias=0.0, neighbour_conditioning=True, neighbour_steps=1)
    _profile(seg, [0.9] * 3 + [0.0] * 6)
    vol = _volume(9)
    c = Constraints(include=[(7, 16, 16)])
    res = sample_request(seg, Request(vol, Prompt(center=(16, 16), z=1), n=4, steps=1,
                                      volume=True, propagate=True, constraints=c))
    assert res.z0 + res.masks.shape[1] - 1 >= 7
    assert res.masks[:, 7 - res.z0].reshape(4, -1).any(1).all()


def test_a_2d_request_and_a_stand_in_pass_the_clicks_on():
    seg = _segmenter()
    c = Constraints(include=[(16, 16)])
    res = sample_request(seg, Request(_image(), Prompt(center=(16, 16)), n=3, steps=1,
                                      constraints=c))
    assert res.constraints is c and res.summary()["constraints_satisfied"] is not None
