"""Training: smoke run, exact resume, DDP on CPU, and that a tiny model learns mode frequencies."""

import csv
import os
import socket

import numpy as np
import pytest
import torch

from napari_ambiseg.errors import Cancelled, InputError
from napari_ambiseg.metrics import pairwise_iou
from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.testing import disk, tiny_config, two_mode_data
from napari_ambiseg.training import events as ev
from napari_ambiseg.training.augment import AugmentConfig, make_batch
from napari_ambiseg.training.config import TrainConfig
from napari_ambiseg.training.rundir import TrainResult
from napari_ambiseg.training.trainer import Trainer, lr_factor, train
from napari_ambiseg.weights_io import load_weights

FAST = dict(batch_size=8, warmup=5, val_every=10**9, checkpoint_every=5, log_every=5)


def test_smoke_run_writes_everything(tmp_path):
    data = two_mode_data(k=8)
    events = []
    out = train(tiny_config(), TrainConfig(iterations=10, val_size=4, val_n=4,
                                           **(FAST | {"val_every": 10})),
                tmp_path, resume=False, callback=events.append, train_data=data, val_data=data)
    for name in ("checkpoint.pt", "best.safetensors", "best.json", "last.safetensors",
                 "log.csv", "training.png", "run.json"):
        assert (tmp_path / name).is_file(), name
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10] and rows[-1]["val_ged"]
    kinds = [type(e) for e in events]
    assert kinds.count(ev.Step) == 2 and ev.Val in kinds and kinds[-1] is ev.Done
    # the result: files and figures, no modules
    assert isinstance(out, TrainResult) and events[-1].result == out
    assert out.step == 10 and np.isfinite(out.best_val_ged) and out.elapsed_s > 0
    assert (out.out, out.best, out.last, out.log, out.plot) == (
        tmp_path, tmp_path / "best.safetensors", tmp_path / "last.safetensors",
        tmp_path / "log.csv", tmp_path / "training.png")
    assert out.weights == out.best
    # the checkpoint loads without unpickling arbitrary objects
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 10


class StopAt:
    """should_stop that turns true at its `nth` call after the log row of `step` (or the first
    event `arm(e)` accepts). Calls come between iterations and from the stop hooks inside
    forward, backward and validation."""

    def __init__(self, step: int = 0, nth: int = 1, arm=None):
        self.nth, self.calls, self.armed, self.events = nth, 0, False, []
        self.arm = arm or (lambda e: isinstance(e, ev.Step) and e.step == step)

    def callback(self, e):
        self.events.append(e)
        self.armed = self.armed or self.arm(e)

    def __call__(self):
        self.calls += self.armed
        return self.calls >= self.nth


def _log(path):
    """log.csv rows without the wall-clock column."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(open(path))]


def _weights(run):
    """The trained (not EMA) weights of a finished run: its last checkpoint's."""
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def _calls_per_iteration(cfg, tcfg, data, tmp_path):
    counter = StopAt(step=1, nth=10**9)
    train(cfg, tcfg, tmp_path, resume=False, train_data=data, callback=counter.callback,
          should_stop=counter)
    return counter.calls // (tcfg.iterations - 1)


def test_exact_resume_after_interruption(tmp_path):
    data = two_mode_data(k=8)
    cfg, tcfg = tiny_config(latent_dim=2), TrainConfig(iterations=12, **(FAST | {"log_every": 1}))
    train(cfg, tcfg, tmp_path / "a", resume=False, train_data=data)
    straight = _weights(tmp_path / "a")
    per_iteration = _calls_per_iteration(cfg, tcfg, data, tmp_path / "count")
    for name, nth, where in (("loop", 1, "between iterations"),
                             ("forward", 3, "inside iteration 8"),
                             ("backward", per_iteration - 2, "inside iteration 8")):
        stop = StopAt(step=7, nth=nth)
        with pytest.raises(Cancelled, match=where):
            train(cfg, tcfg, tmp_path / name, resume=False, train_data=data,
                  should_stop=stop, callback=stop.callback)
        assert stop.events[-1] == ev.Cancelled(step=7, total=12, where=where)
        ck = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
        assert ck["step"] == 7
        train(cfg, tcfg, tmp_path / name, resume=True, train_data=data)
        resumed = _weights(tmp_path / name)
        for k, a in straight.items():
            assert torch.equal(a, resumed[k]), (name, k)
        # the log is the uninterrupted run's, row for row
        assert _log(tmp_path / name / "log.csv") == _log(tmp_path / "a" / "log.csv")
    with pytest.raises(InputError, match="another model config"):
        train(tiny_config(), tcfg, tmp_path / "loop", resume=True, train_data=data)


def test_stop_during_validation_redoes_it_on_resume(tmp_path):
    data = two_mode_data(k=8)
    cfg = tiny_config()
    tcfg = TrainConfig(iterations=8, val_size=2, val_n=2, **(FAST | {"val_every": 3,
                                                                      "log_every": 2}))
    train(cfg, tcfg, tmp_path / "a", resume=False, train_data=data, val_data=data)
    stop = StopAt(nth=3, arm=lambda e: isinstance(e, ev.Phase) and e.phase == "validation")
    with pytest.raises(Cancelled, match="during validation"):
        train(cfg, tcfg, tmp_path / "b", resume=False, train_data=data, val_data=data,
              should_stop=stop, callback=stop.callback)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 3
    train(cfg, tcfg, tmp_path / "b", resume=True, train_data=data, val_data=data)
    assert _log(tmp_path / "b" / "log.csv") == _log(tmp_path / "a" / "log.csv")
    a, b = (load_weights(tmp_path / x / "best.safetensors")[0].state_dict() for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _ddp_worker(rank, world, port, out, data):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(), TrainConfig(iterations=4, device="cpu", **FAST), out)
    trainer.use_data(data)
    trainer.begin(resume=False)
    trainer.fit()
    torch.save(trainer.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_ranks_hold_identical_weights(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = two_mode_data(k=8)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path), data), nprocs=2)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = Trainer(tiny_config(), TrainConfig(**FAST), tmp_path / "init").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], init[k]) for k in a)  # and they did train


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(iterations=100, warmup=10, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] == pytest.approx(0.1, abs=1e-3)


def test_joint_augmentation_keeps_image_and_masks_aligned():
    data = two_mode_data(k=4, size=64)
    rng = np.random.default_rng(0)
    img, masks = make_batch(data.images, data.masks, np.arange(4), 32, AugmentConfig(
        gamma=0, brightness=0, contrast=0, jitter=4), rng, all_raters=True)
    assert img.shape == (4, 1, 32, 32) and masks.shape == (4, 10, 32, 32)
    core = masks[:, 0] > 0                # rater 0 outlines the bright core
    bright = img[:, 0] > img[:, 0].amax((1, 2), keepdim=True) - 0.3
    agree = (core == bright).float().mean()
    assert agree > 0.97


def test_one_rater_per_image_uniformly():
    data = two_mode_data(k=1, size=32)
    rng = np.random.default_rng(0)
    _, m = make_batch(data.images, data.masks, np.zeros(400, int), 32,
                      AugmentConfig(enabled=False), rng)
    frac_small = ((m > 0).sum((1, 2, 3)) < 150).float().mean().item()
    assert frac_small == pytest.approx(0.7, abs=0.07)


@pytest.mark.slow
def test_tiny_model_learns_the_mode_frequencies(tmp_path):
    """70% of raters outline the core, 30% the halo: the sampled modes must say 70/30."""
    data = two_mode_data(k=16, frac_a=0.7)
    train(tiny_config(), TrainConfig(iterations=300, batch_size=32, lr=3e-3, warmup=50,
                                     val_every=10**9, checkpoint_every=10**9, log_every=50,
                                     augment=AugmentConfig(enabled=False)),
          tmp_path, resume=False, train_data=data)
    model, cfg, _ = load_weights(tmp_path / "last")
    res = Segmenter(model, cfg, "cpu").sample(data.images[0], n=100, steps=10, seed=1)
    iou = pairwise_iou(res.masks, np.stack([disk(32, 5), disk(32, 10)]))
    assert iou.max(1).mean() > 0.85                       # samples are one of the two shapes
    frac_core = (iou[:, 0] > iou[:, 1]).mean()
    assert frac_core == pytest.approx(0.7, abs=0.10)
    top = res.modes[0]
    assert len(res.modes) == 2 and top.frequency == pytest.approx(frac_core)


@pytest.mark.slow
def test_trained_latent_carries_the_rater_choice(tmp_path):
    """CIMD's ambiguity latent, trained: z from the posterior of a core outline gives core
    outlines, z from the posterior of a halo outline gives halo outlines, and z from the prior
    gives both in the raters' proportions."""
    from napari_ambiseg.diffusion import Denoiser, Schedule, sample_masks

    data = two_mode_data(k=16, frac_a=0.7)
    train(tiny_config(latent_dim=4, kl_weight=0.01),
          TrainConfig(iterations=300, batch_size=32, lr=3e-3, warmup=50, val_every=10**9,
                      checkpoint_every=10**9, log_every=50, augment=AugmentConfig(enabled=False)),
          tmp_path, resume=False, train_data=data)
    model, cfg, _ = load_weights(tmp_path / "last")
    shapes = np.stack([disk(32, 5), disk(32, 10)])
    image = torch.from_numpy(data.images[:1] / 127.5 - 1).float()[:, None]
    frac_core = {}
    with torch.no_grad():
        feats = model.encode_image(image)
        for name, mask in (("core", shapes[0]), ("halo", shapes[1])):
            z = model.latent.posterior(image, torch.from_numpy(mask * 2.0 - 1)[None, None].float())
            def x_hat(x_t, logsnr, z=z):
                raw = model.denoise(x_t, logsnr, feats, z.mu.expand(40, -1))
                return Denoiser.from_config(cfg).x_hat(raw, x_t, logsnr)

            x = sample_masks(x_hat, Schedule.from_config(cfg), (40, 1, 32, 32), steps=10,
                             generator=torch.Generator().manual_seed(0))
            iou = pairwise_iou((x[:, 0] > 0).numpy(), shapes)
            frac_core[name] = (iou[:, 0] > iou[:, 1]).mean()
    assert frac_core["core"] > 0.9 and frac_core["halo"] < 0.1
    res = Segmenter(model, cfg, "cpu").sample(data.images[0], n=100, steps=10, seed=1)
    iou = pairwise_iou(res.masks, shapes)
    assert (iou[:, 0] > iou[:, 1]).mean() == pytest.approx(0.7, abs=0.15)


def test_random_crop_variant_moves_the_crop_jointly():
    """crop_mode="random": joint random crops anywhere in the stored crop (nodules may be cut)."""
    data = two_mode_data(k=1, size=64)
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(crop_mode="random", flips=False, rotate_deg=0, scale=0, gamma=0,
                        brightness=0, contrast=0)
    img, masks = make_batch(data.images, data.masks, np.zeros(64, int), 32, cfg, rng,
                            all_raters=True)
    area = (masks[:, 0] > 0).sum((1, 2)).float()
    assert area.min() < area.max()  # the core is cut or missing in some crops
    centred = make_batch(data.images, data.masks, np.zeros(1, int), 32, cfg, rng, train=False,
                         all_raters=True)[1]
    assert (centred[0, 0] > 0).sum() == data.masks[0, 0].sum()  # eval: the centre crop
    bright = img[:, 0] > img[:, 0].amax((1, 2), keepdim=True) - 0.3
    has_core = area > 0
    assert ((masks[has_core, 0] > 0) == bright[has_core]).float().mean() > 0.97


def test_fine_tuning_starts_from_given_weights(tmp_path):
    data = two_mode_data(k=8)
    train(tiny_config(), TrainConfig(iterations=5, **FAST), tmp_path / "a", resume=False,
          train_data=data)
    start, _, _ = load_weights(tmp_path / "a" / "last.safetensors")
    # lr 0: one step must leave the initial weights untouched (fresh init would differ)
    tcfg = TrainConfig(iterations=1, lr=0.0, weight_decay=0.0,
                       init=str(tmp_path / "a" / "last.safetensors"), **FAST)
    result = train(tiny_config(), tcfg, tmp_path / "b", resume=False, train_data=data)
    tuned = load_weights(result.last)[0].state_dict()
    for k, v in start.state_dict().items():
        assert torch.equal(tuned[k], v), k
    # the sampling settings may differ from the weights' own, the network may not
    train(tiny_config(sampler="ddim", steps=4), tcfg, tmp_path / "c", resume=False,
          train_data=data)
    with pytest.raises(InputError, match="do not fit"):
        train(tiny_config(mask_widths=(8, 16, 16)), tcfg, tmp_path / "d", resume=False,
              train_data=data)


def test_a_checkpoint_of_an_older_config_format_resumes(tmp_path):
    """A run begun before `ModelConfig.name` was dropped (format 3 carries it) resumes."""
    data = two_mode_data(k=8)
    tcfg = TrainConfig(iterations=4, **(FAST | {"checkpoint_every": 2}))
    train(tiny_config(), tcfg, tmp_path, resume=False, train_data=data)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    old = ck["model_config"]  # as format 3 wrote it: with `name`, before click conditioning
    old.update(name="ambiseg", format_version=3)
    old.pop("click_conditioning")
    torch.save(ck, tmp_path / "checkpoint.pt")
    events = []
    assert train(tiny_config(), TrainConfig(iterations=6, **FAST), tmp_path, resume=True,
                 train_data=data, callback=events.append).step == 6
    assert ev.Resume(step=4, total=6) in events


# ---------------------------------------------------------------------------- #27.3: weights
def _info(path):
    return load_weights(path)[2]


def test_a_cancelled_run_leaves_the_weights_of_its_checkpoint(tmp_path):
    """Stopped before any validation: last.safetensors (with its config) holds the EMA weights
    of the checkpoint it stopped at, so the run can be tried at once."""
    from napari_ambiseg.training.rundir import RunDir

    data = two_mode_data(k=8)
    stop = StopAt(step=5)
    with pytest.raises(Cancelled, match="between iterations"):
        train(tiny_config(), TrainConfig(iterations=100, **FAST), tmp_path, resume=False,
              train_data=data, should_stop=stop, callback=stop.callback)
    assert RunDir(tmp_path).weights() == tmp_path / "last.safetensors"
    model, cfg, info = load_weights(tmp_path / "last.safetensors")
    assert cfg == tiny_config() and info["step"] == 5
    ema = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["ema"]
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


def test_a_crash_leaves_the_weights_of_the_last_checkpoint(tmp_path):
    data = two_mode_data(k=8)

    def crash(e):
        if isinstance(e, ev.Step) and e.step == 7:
            raise RuntimeError("out of memory (test)")

    with pytest.raises(RuntimeError, match="out of memory"):
        train(tiny_config(), TrainConfig(iterations=100, **(FAST | {"log_every": 1})),
              tmp_path, resume=False, train_data=data, callback=crash)
    assert _info(tmp_path / "last.safetensors")["step"] == 5  # checkpoint_every 5


def test_nothing_trained_no_weights(tmp_path):
    """Stopped before iteration 1 completed: a checkpoint to resume from, but no weights."""
    from napari_ambiseg.training.rundir import RunDir

    stop = StopAt(arm=lambda e: isinstance(e, ev.Phase) and e.phase == "training")
    with pytest.raises(Cancelled):
        train(tiny_config(), TrainConfig(iterations=10, **FAST), tmp_path, resume=False,
              train_data=two_mode_data(k=8), should_stop=stop, callback=stop.callback)
    assert (tmp_path / "checkpoint.pt").is_file() and RunDir(tmp_path).weights() is None


def test_a_new_run_in_a_used_folder_does_not_keep_the_old_weights(tmp_path):
    data = two_mode_data(k=8)
    train(tiny_config(), TrainConfig(iterations=10, val_size=2, val_n=2,
                                     **(FAST | {"val_every": 10})),
          tmp_path, resume=False, train_data=data, val_data=data)
    assert _info(tmp_path / "best.safetensors")["step"] == 10
    result = train(tiny_config(), TrainConfig(iterations=3, **FAST), tmp_path, resume=False,
                   train_data=data)
    assert result.weights == tmp_path / "best.safetensors"
    assert _info(result.best)["step"] == _info(result.last)["step"] == 3


# ---------------------------------------------------------------------------- #26.3
def test_the_trainer_builds_its_denoiser_once(tmp_path, monkeypatch):
    from napari_ambiseg.diffusion import Denoiser

    built = []
    real = Denoiser.from_config.__func__
    monkeypatch.setattr(Denoiser, "from_config",
                        classmethod(lambda cls, cfg: built.append(cfg) or real(cls, cfg)))
    train(tiny_config(), TrainConfig(iterations=4, **FAST), tmp_path, resume=False,
          train_data=two_mode_data(k=8))
    assert len(built) == 1


# ---------------------------------------------------------------------------- #27.8
def test_validation_reports_its_fraction_and_eta(tmp_path, monkeypatch):
    from napari_ambiseg.training import trainer

    monkeypatch.setattr(trainer, "PROGRESS_EVERY_S", 0.0)  # every report, not twice a second
    data = two_mode_data(k=8)
    events = []
    train(tiny_config(), TrainConfig(iterations=2, val_size=4, val_n=2,
                                     **(FAST | {"val_every": 1})),
          tmp_path, resume=False, train_data=data, val_data=data, callback=events.append)
    runs, current = [], None
    for e in events:
        if isinstance(e, ev.Phase) and e.phase == "validation":
            current = []
            runs.append(current)
        elif isinstance(e, ev.ValProgress):
            current.append(e)
    assert len(runs) == 2
    for i, run in enumerate(runs, 1):
        assert run[0].done == 0 and run[0].step == i and {e.count for e in run} == {4}
        done = [e.done for e in run]
        assert done == sorted(done) and 0 < done[-1] <= 4 and len(set(done)) > 2
        assert all(e.eta_s is not None and e.eta_s >= 0 for e in run[1:])
    assert runs[0][0].eta_s is None          # the first: nothing to go by yet
    assert runs[1][0].eta_s > 0              # the next: the previous one's pace
