"""Model 5 pieces: existence drawn per sample, neighbour-conditioned coherent slabs, and
leak-free training items (a missing neighbour never reaches the network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_ambiseg.config import COHERENT, PER_SLICE
from napari_ambiseg.existence import existence_draws
from napari_ambiseg.models import build_model
from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.testing import disk, tiny_config
from napari_ambiseg.training.data import DATA_INTENSITY, MultiRaterData
from napari_ambiseg.training.evaluate import sample_dataset
from napari_ambiseg.training.examples import TrainingExamples, neighbour_pairs, nodule_stacks
from napari_ambiseg.volume_sampling import Prompt, Request, sample_volume


def _segmenter(existence_bias: float | None = None, **kw) -> Segmenter:
    cfg = tiny_config(existence_head=existence_bias is not None, **kw)
    torch.manual_seed(0)
    model = build_model(cfg)
    if existence_bias is not None:  # p(finding) = sigmoid(bias) for every crop
        last = model.existence.mlp[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, existence_bias)
    return Segmenter(model, cfg, "cpu")


def _image(size=32):
    return (disk(size, 6) * 150 + 50).astype(np.float32)


@pytest.mark.parametrize("bias, expect", [(-20.0, 0), (20.0, 16)])
def test_existence_decides_before_the_outline(bias, expect):
    seg = _segmenter(bias)
    calls = []
    x_in = seg.prepare(_image(), seg.region((32, 32)), "8bit")
    x_hat, p = seg.draw(x_in, 16, 3, seed=1, with_existence=True,
                        progress=lambda i, k: calls.append(i))
    exists = (x_hat > -1).reshape(16, -1).any(1)
    assert p.shape == (1,)
    if expect == 0:  # no sample exists: all exactly empty, no network work needed
        assert not exists.any() and np.all(x_hat == -1.0)
    else:
        assert np.isclose(float(p[0]), 1.0)
    assert calls[-1] == 3  # progress still completes


def test_existence_share_follows_p_and_is_shared_across_slices():
    seg = _segmenter(0.0)  # p = 0.5
    x_in = seg.prepare(_image(), seg.region((32, 32)), "8bit")
    two = torch.cat([x_in, x_in])
    out = seg.draw(two, 64, 2, seed=3, same_noise=True)
    alive = np.array([[np.any(m > -1) for m in slab] for slab in out])
    assert alive[0].sum() == 32  # stratified draws: exactly half of 64 see a finding
    assert np.array_equal(alive[0], alive[1])  # sample k decides the same on both slices
    # batching slices gives the masks of sampling one alone (same seed)
    alone = seg.draw(x_in, 64, 2, seed=3)
    assert np.allclose(out[0], alone[0], atol=1e-5)


def test_one_seed_per_input_gives_each_the_masks_it_gets_alone():
    seg = _segmenter(0.0)  # p = 0.5: which samples exist depends on the seed
    x_in = seg.prepare(_image(), seg.region((32, 32)), "8bit")
    both = seg.draw(torch.cat([x_in, x_in]), 16, 2, seed=[4, 9])
    for j, s in enumerate((4, 9)):
        assert np.allclose(both[j], seg.draw(x_in, 16, 2, seed=s)[0], atol=1e-5)
    alive = [(m > -1).reshape(16, -1).any(1) for m in both]
    assert not np.array_equal(alive[0], alive[1])  # own existence draws per input


def test_a_dataset_is_not_decided_by_one_set_of_existence_draws():
    seg = _segmenter(0.0)  # p = 0.5, and every sample that exists is all foreground:
    seg.model.denoise = lambda x_t, *conditions: torch.full_like(x_t, 10.0)
    data = MultiRaterData(np.stack([_image().astype(np.uint8)] * 3),
                          np.zeros((3, 4, 32, 32), np.uint8))
    samples = sample_dataset(seg, data, 16, 2, seed=5, batch_images=2)
    exists = samples.reshape(3, 16, -1).any(-1)
    assert (exists.sum(1) == 8).all()  # stratified: exactly half of 16 on every image
    assert len({e.tobytes() for e in exists}) == 3  # same image, own draws: seed 5 + i
    alone = seg.sample_slices(data.images, [2], [(None, None)], 16, 2, 7,
                              modality=DATA_INTENSITY)[0][0]
    assert np.array_equal(samples[2], alone)


@pytest.mark.parametrize("p", [0.1, 0.37, 0.5, 0.93])
def test_existence_count_is_pn_rounded_and_pn_on_average(p):
    draws = existence_draws(torch.Generator().manual_seed(0), 4000, 16)
    strata = torch.floor(draws * 16).sort(1).values
    assert torch.equal(strata, torch.arange(16.0).expand(4000, 16))  # one per stratum
    count = (draws < p).sum(1).float()
    assert set(count.unique().tolist()) <= {np.floor(16 * p), np.ceil(16 * p)}
    assert abs(float(count.mean()) - 16 * p) < 0.05  # calibrated: pn on average


def _volume(z=5, size=32):
    return np.stack([_image(size)] * z)


def test_coherent_slab_goes_outward_and_ended_samples_stay_ended():
    seg = _segmenter(0.0, neighbour_conditioning=True, neighbour_steps=2)
    assert seg.volume_method == COHERENT and seg.neighbour_steps(5) == 2
    calls = []
    orig = seg.sample_slices

    def spy(volume, zs, prompts, *a, **kw):
        calls.append((list(zs), "neighbours" in kw))
        return orig(volume, zs, prompts, *a, **kw)

    seg.sample_slices = spy
    req = Request(_volume(), Prompt(center=(16, 16), z=2), n=8, steps=3, seed=0, volume=True,
                  slices=[0, 4])
    r = sample_volume(seg, req)
    assert r.masks.shape == (8, 5, 32, 32) and r.method == COHERENT and r.z0 == 0
    # the prompt slice alone, unconditioned; then one slice up and one down per wave
    assert calls[0] == ([2], False)
    assert all(flag for _, flag in calls[1:]) and sorted(calls[1][0]) == [1, 3]
    filled = r.masks.reshape(8, 5, -1).any(-1)
    for k in range(8):  # a sample that ended stays ended, going outward from slice 2
        for z in (1, 0):
            assert filled[k, z] <= filled[k, z + 1]
        for z in (3, 4):
            assert filled[k, z] <= filled[k, z - 1]


def test_per_slice_models_keep_one_batch():
    seg = _segmenter(None)
    assert seg.volume_method == PER_SLICE
    req = Request(_volume(3), Prompt(center=(16, 16), z=1), n=4, steps=2, volume=True,
                  slices=[0, 2])
    r = sample_volume(seg, req)
    for z in range(3):  # same seed per slice and identical slices: identical masks
        assert np.array_equal(r.masks[:, z], r.masks[:, 1])


def _stacked_data():
    """Two nodules: rows 0-2 (3 slices) and rows 3-4; reader order shuffled per slice."""
    a, b, none = disk(16, 4), disk(16, 6), np.zeros((16, 16), np.uint8)
    masks = np.stack([
        [a, b, none], [b, none, a], [none, a, b],    # readers: a-track, b-track, nobody
        [a, none, none], [none, none, none],         # second nodule: one reader, then nobody
    ]).astype(np.uint8)
    return MultiRaterData(np.zeros((5, 16, 16), np.uint8), masks)


def _index(tmp_path):
    rows = ["split,row,patient_id,nodule,slice"]
    rows += [f"train,{r},P1,0,{s}" for r, s in zip(range(3), range(3))]
    rows += ["train,3,P2,0,0", "train,4,P2,0,1", "val,0,P3,0,0"]
    path = tmp_path / "index.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_pairs_are_real_adjacent_slices_of_one_linked_reader(tmp_path):
    data = _stacked_data()
    stacks = nodule_stacks(_index(tmp_path), "train")
    assert [list(s) for s in stacks] == [[0, 1, 2], [3, 4]]
    pairs = neighbour_pairs(data.masks, stacks)
    assert len(pairs) == 8  # 2 tracks x 2 adjacent pairs x 2 directions; nodule 2: none
    for row, reader, nrow, nreader in pairs:
        assert abs(row - nrow) == 1 and max(row, nrow) <= 2
        assert data.masks[row, reader].any() and data.masks[nrow, nreader].any()
        # linked: the same outline continues (disks of one radius)
        assert data.masks[row, reader].sum() == data.masks[nrow, nreader].sum()


def test_items_never_tell_a_missing_neighbour(tmp_path):
    data = _stacked_data()
    pairs = neighbour_pairs(data.masks, nodule_stacks(_index(tmp_path), "train"))
    ex = TrainingExamples(data, existence=True, pairs=pairs, p_neighbour=0.5)
    b = ex.draw(4000, np.random.default_rng(0))
    plain = ~b.has_neighbour
    # plain items: every row uniformly, end slices and lonely slices included
    counts = np.bincount(b.rows[plain], minlength=5) / plain.sum()
    assert np.allclose(counts, 0.2, atol=0.03)
    assert not b.neighbour[plain].any()
    # paired items: only real pairs, both outlines non-empty
    assert b.neighbour[b.has_neighbour].reshape(b.has_neighbour.sum(), -1).any(1).all()
    assert b.target[b.has_neighbour].reshape(b.has_neighbour.sum(), -1).any(1).all()
    # the existence head learns on plain items only, from the readers' non-empty share
    assert np.array_equal(b.learn_exists, plain.astype(np.float32))
    assert np.allclose(b.exists, data.masks.reshape(5, 3, -1).any(-1).mean(1)[b.rows])
    # outlines are learnt from readers who marked the row; row 4 (nobody) teaches none
    assert np.all(b.learn_outline[b.rows == 4] == 0)
    assert b.target[b.learn_outline == 1].reshape(-1, 256).any(1).all()
