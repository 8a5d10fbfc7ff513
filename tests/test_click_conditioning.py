"""Click conditioning (#25): a click encoder steers the image features, trained alone on
simulated clicks; the unsteered model stays the one it was fine-tuned from."""

import numpy as np
import pytest
import torch

import napari_ambiseg.segmenter as segmenter_module
import napari_ambiseg.training.trainer as trainer_module
from napari_ambiseg.constraints import Constraints, next_click
from napari_ambiseg.errors import InputError
from napari_ambiseg.geometry import Region
from napari_ambiseg.models import build_model
from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.testing import disk, tiny_config, two_mode_data
from napari_ambiseg.training.clicks import MAX_CLICKS, batch_clicks, click_maps, on_own_masks, simulate
from napari_ambiseg.training.config import AugmentConfig, TrainConfig
from napari_ambiseg.training.examples import TrainingExamples
from napari_ambiseg.training.trainer import Trainer, batch_tensors, click_item_weights

FAST = dict(batch_size=8, warmup=5, val_every=10**9, checkpoint_every=5, log_every=5)


def _models(seed=0):
    """A tiny base model and the same model with a click encoder (base tensors shared, the
    encoder's zero convs made non-zero so that it does something)."""
    torch.manual_seed(seed)
    base = build_model(tiny_config())
    torch.nn.init.normal_(base.denoiser.out.weight, std=0.3)  # untrained, not all-zero
    steered = build_model(tiny_config(click_conditioning=True))
    missing, unexpected = steered.load_state_dict(base.state_dict(), strict=False)
    assert all(k.startswith("clicks.") for k in missing) and not unexpected
    for conv in steered.clicks.zero:
        torch.nn.init.normal_(conv.weight, std=0.5)
    return base.eval(), steered.eval()


def _clicks(b=2, size=32):
    c = torch.zeros(b, 3, size, size)
    c[:, 0, 14:18, 14:18] = 1
    c[:, 1, 2:5, 2:5] = 1
    c[:, 2, 10:22, 10:22] = 1  # the mask they were made on
    return c


def test_a_fresh_click_encoder_leaves_the_features_as_they_are():
    model = build_model(tiny_config(click_conditioning=True)).eval()
    feats = model.encode_image(torch.randn(2, 1, 32, 32))
    with torch.no_grad():
        out = model.steer(feats, _clicks())
    assert all(torch.equal(a, b) for a, b in zip(feats, out))


def test_clicks_steer_only_the_items_that_have_them_and_never_the_existence_head():
    _, model = _models()
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        feats = model.encode_image(image)
        out = model.steer(feats, _clicks(), torch.tensor([True, False]))
        assert not torch.equal(out[0][0], feats[0][0])       # item 0 steered
        assert all(torch.equal(o[1], f[1]) for o, f in zip(out, feats))  # item 1 as it was
    cfg = tiny_config(click_conditioning=True, existence_head=True)
    model = build_model(cfg).eval()
    torch.nn.init.normal_(model.denoiser.out.weight, std=0.3)
    for conv in model.clicks.zero:
        torch.nn.init.normal_(conv.weight, std=0.5)
    x = torch.randn(2, 1, 32, 32)
    logsnr = torch.zeros(2)
    with torch.no_grad():
        raw0, _, logit0 = model(x, logsnr, image)
        raw1, _, logit1 = model(x, logsnr, image, clicks=_clicks())
    assert torch.equal(logit0, logit1) and not torch.equal(raw0, raw1)


def test_a_click_model_samples_unsteered_exactly_like_its_base_and_steered_with_its_encoder():
    base, steered = _models()
    image = (disk(48, 8) * 150 + 50).astype(np.float32)
    a = Segmenter(base, tiny_config(), "cpu")
    b = Segmenter(steered, tiny_config(click_conditioning=True), "cpu")
    kw = dict(n=4, steps=3, seed=3, center=(24, 24), modality="8bit")
    assert np.array_equal(a.sample(image, **kw).masks, b.sample(image, **kw).masks)
    c = Constraints(include=[(24, 24)], exclude=[(24, 36)], rounds=1)
    sa, sb = a.sample(image, constraints=c, **kw), b.sample(image, constraints=c, **kw)
    assert not np.array_equal(sa.masks, sb.masks)  # the clicks reach the denoiser
    assert sb.constraints == c                     # and the known pixels still apply
    # the mask they were made on is read too (models without the encoder ignore it)
    on = c.on(disk(48, 6, (24, 24)))
    assert np.array_equal(a.sample(image, constraints=on, **kw).masks, sa.masks)
    assert not np.array_equal(b.sample(image, constraints=on, **kw).masks, sb.masks)


def test_a_click_encoder_reads_the_clicks_disk_and_the_known_pixels_keep_a_smaller_one(
        monkeypatch):
    base, steered = _models()
    image = (disk(48, 8) * 150 + 50).astype(np.float32)
    c = Constraints(include=[(24, 24)], exclude=[(24, 32)], rounds=1)
    assert (c.radius, c.known_radius) == (2.0, 1.0) and c.known_disk(False) == 2.0
    seen = {}
    sample_masks = segmenter_module.sample_masks

    def spy(*a, known=None, **k):
        seen["known"] = known
        return sample_masks(*a, known=known, **k)

    monkeypatch.setattr(segmenter_module, "sample_masks", spy)
    read = []
    steer = steered.steer
    monkeypatch.setattr(steered, "steer", lambda f, clicks, has: read.append(clicks) or
                        steer(f, clicks, has))
    kw = dict(n=2, steps=2, seed=0, center=(24, 24), modality="8bit", constraints=c)
    Segmenter(steered, tiny_config(click_conditioning=True), "cpu").sample(image, **kw)
    # 13-pixel disks (radius 2) for the encoder, 5-pixel ones (radius 1) known (the
    # include at the crop centre, model pixel (16, 16))
    assert read[0][0, 0].sum() == 13 and read[0][0, 1].sum() == 13
    where = seen["known"].where[0, 0]
    assert where.sum() == 10 and where[16, 16] and where[15, 16] and not where[14, 16]
    Segmenter(base, tiny_config(), "cpu").sample(image, **kw)  # no encoder: radius 2 known
    assert seen["known"].where[0, 0].sum() == 26


def test_simulated_clicks_point_at_what_the_target_reader_wants():
    target = disk(64, 10)
    others = np.stack([disk(64, 13), disk(64, 6), np.zeros((64, 64), bool), target])
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(60):
        c = simulate(others, target, rng)
        assert all(target[p] for p in c.include) and not any(target[p] for p in c.exclude)
        counts.append(len(c.include) + len(c.exclude))
    assert set(counts) <= {1, 2, 3} and len(set(counts)) > 1
    # shown nothing: the first click is an include at the target's centre
    assert next_click(np.zeros_like(target), target) == ("include", (31, 31))
    # the maps are the sampler's own disks and the mask clicked on, in the crop's pixels
    shown = disk(64, 8)
    c = Constraints(include=[(31, 31)], exclude=[(10, 50)], shown=shown)
    maps = click_maps(c, 64)
    known = c.known(Region(32, 32, 1.0), 64)
    assert np.array_equal(maps[0], known > 0) and np.array_equal(maps[1], known < 0)
    assert maps[0, 31, 31] and maps[1, 10, 50] and maps[0].sum() == 13
    assert np.array_equal(maps[2], shown)
    assert not click_maps(c.on(None), 64)[2].any()
    # the simulated annotator's clicks come with the mask its last click was made on
    seen = [simulate(others, target, rng).shown for _ in range(40)]
    assert 20 <= sum(s is not None for s in seen) < 40
    assert all(s is None or s.shape == target.shape for s in seen)


def test_training_batches_carry_click_maps_that_move_with_the_image():
    data = two_mode_data(k=8, size=64)
    examples = TrainingExamples(data, existence=False)
    rng = np.random.default_rng(1)
    batch = batch_tensors(examples, 8, 32, AugmentConfig(), rng, p_clicks=1.0)
    clicks, mask = batch["clicks"], batch["mask"] > 0
    assert clicks.shape == (8, 3, 32, 32) and batch["has_clicks"].all()
    inc = clicks[:, 0] > 0
    assert (inc & mask[:, 0]).sum() > 0.7 * inc.sum()  # includes lie on the outline learnt
    none = batch_clicks(data.masks, np.arange(3), data.masks[:3, 0], np.zeros(3), 1.0, rng)
    assert not none.any()  # nothing to learn, no clicks


def test_clicks_alone_are_read_as_made_on_the_unsteered_result():
    """`ambiseg sample --include` and the API: a click-conditioned model reads clicks that
    do not say what they were made on against the same request drawn without them."""
    from napari_ambiseg.volume_sampling import Prompt, Request, sample_request

    base, steered = _models()
    image = (disk(48, 8) * 150 + 50).astype(np.float32)
    seg = Segmenter(steered, tiny_config(click_conditioning=True), "cpu")
    req = Request(image, Prompt(center=(24, 24)), n=4, steps=2, seed=1, modality="8bit")
    free = sample_request(seg, req)
    clicked = Request(image, Prompt(center=(24, 24)), n=4, steps=2, seed=1, modality="8bit",
                      constraints=Constraints(include=[(24, 24)], rounds=1))
    res = sample_request(seg, clicked)
    assert np.array_equal(res.constraints.shown, free.mode_one(image.shape))
    assert clicked.constraints.shown is None  # the caller's request is left as it was
    plain = Segmenter(base, tiny_config(), "cpu")  # models without the encoder: not drawn twice
    assert sample_request(plain, clicked).constraints.shown is None


def test_the_mask_clicked_on_is_checked_and_placed_on_the_slab():
    from napari_ambiseg.testing import _result

    c = Constraints(include=[(1, 5, 5)], shown=np.zeros((3, 8, 8)))
    assert c.plane(1).shown.shape == (8, 8) and c.plane(5).shown is None
    with pytest.raises(InputError, match="made on has shape"):
        c.check((4, 8, 8))
    assert c.to_dict()["shown_px"] == 0
    masks = np.zeros((4, 2, 8, 8), bool)
    masks[:3, :, 2:4, 2:4] = True  # mode 1: three of four samples
    res = _result(masks, (0, 0, 8, 8), 2, 0)
    res.z0 = 5
    one = res.mode_one((8, 8, 8))
    assert one.shape == (8, 8, 8) and one[5:7, 2:4, 2:4].all() and one.sum() == 8


def test_train_only_trains_the_click_encoder(tmp_path):
    data = two_mode_data(k=8)
    cfg = TrainConfig(iterations=3, p_clicks=1.0, train_only=["clicks."], device="cpu", **FAST)
    trainer = Trainer(tiny_config(click_conditioning=True), cfg, tmp_path)
    trainer.use_data(data)
    trainer.begin(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(3):
        trainer.iterate()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("clicks.") for k in changed)
    with pytest.raises(InputError, match="names no parameter"):
        Trainer(tiny_config(), TrainConfig(train_only=["nothing."], **FAST), tmp_path / "b")


def test_clicks_on_the_models_own_masks_follow_what_it_shows():
    """RITM-style training clicks: each click goes to the largest error of what the model
    shows given the clicks so far, and the maps say what it was made on."""
    target = np.stack([disk(32, 6), disk(32, 6)])
    seen = []

    def shows_nothing_then_too_much(maps):  # unsteered: nothing; steered: a grown disk
        seen.append(maps.copy())
        steered = maps[:, :2].reshape(len(maps), -1).any(1)
        return np.stack([disk(32, 10) if s else np.zeros((32, 32), bool) for s in steered])

    rng = np.random.default_rng(0)
    maps = on_own_masks(np.array([True, False]), target, shows_nothing_then_too_much, rng)
    assert len(seen) == MAX_CLICKS and not seen[0].any()  # click 1: on the unsteered mask
    inc, exc = maps[0, 0] > 0, maps[0, 1] > 0
    assert inc.sum() == 13 and inc[target[0]].sum() >= 8      # one include, on the target
    ring = disk(32, 10) & ~target[0]
    assert exc.sum() == 26 and exc[ring].sum() == 26          # then two excludes on the ring
    shown = maps[0, 2] > 0                                    # what click 3 was made on
    assert shown[disk(32, 10) & ~exc].all() and not shown[~(disk(32, 10) | inc)].any()
    assert not maps[1].any()                                  # not chosen: no clicks
    # a model that shows the target leaves nothing to click
    assert not on_own_masks(np.array([True, True]), target, lambda m: target, rng).any()


def test_training_on_own_masks_draws_its_clicks_from_the_model(tmp_path):
    data = two_mode_data(k=8)
    cfg = TrainConfig(iterations=2, p_clicks=1.0, p_own_clicks=1.0, train_only=["clicks."],
                      device="cpu", **FAST)
    trainer = Trainer(tiny_config(click_conditioning=True), cfg, tmp_path)
    trainer.use_data(data)
    trainer.begin(resume=False)
    batch = batch_tensors(trainer.examples, 8, 32, AugmentConfig(), trainer.np_rng, 1.0)
    image, mask = batch.pop("image"), batch.pop("mask")
    out = trainer.clicks_on_own_masks(image, mask, batch)
    assert out["clicks"].shape == (8, 3, 32, 32) and out["has_clicks"].any()
    inc = out["clicks"][:, 0] > 0
    assert (inc & (mask[:, 0] > 0)).sum() > 0.5 * inc.sum()  # includes on the outline learnt
    made = []  # the training step itself takes its clicks from the model (p_own_clicks = 1)
    own = trainer.clicks_on_own_masks
    trainer.clicks_on_own_masks = lambda *a: made.append(own(*a)) or made[-1]
    loss, _, _ = trainer.iterate()
    assert torch.isfinite(loss) and len(made) == 1 and made[0]["has_clicks"].any()


def test_clicked_items_can_learn_per_outline_pixel(tmp_path, monkeypatch):
    mask = -torch.ones(3, 1, 32, 32)
    mask[0, 0, 12:16, 12:16] = 1   # 16 px, clicked
    mask[1, 0, 4:28, 4:28] = 1     # 576 px, clicked
    mask[2, 0, 12:16, 12:16] = 1   # not clicked
    w = click_item_weights(mask, torch.tensor([True, True, False]))
    assert w[:2].mean().item() == pytest.approx(1.0) and w[2].item() == 1.0
    assert w[0] / w[1] == pytest.approx((576 + 50) / (16 + 50))  # a small outline weighs more
    assert torch.equal(click_item_weights(mask, torch.zeros(3, dtype=torch.bool)), torch.ones(3))

    cfg = TrainConfig(iterations=2, p_clicks=1.0, click_loss_per_area=True,
                      train_only=["clicks."], device="cpu", **FAST)
    trainer = Trainer(tiny_config(click_conditioning=True), cfg, tmp_path)
    trainer.use_data(two_mode_data(k=8))
    trainer.begin(resume=False)
    seen, loss_of = [], trainer_module.diffusion_loss

    def spy(*a, **k):
        seen.append(k)
        return loss_of(*a, **k)

    monkeypatch.setattr(trainer_module, "diffusion_loss", spy)
    loss, _, _ = trainer.iterate()
    weight, clicked = seen[0]["item_weight"], seen[0]["has_clicks"]
    assert torch.isfinite(loss) and clicked.any()  # the step's loss was weighted per area
    assert weight[clicked].mean().item() == pytest.approx(1.0) and (weight[~clicked] == 1).all()
