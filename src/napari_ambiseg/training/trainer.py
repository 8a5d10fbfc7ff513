"""The training loop: AdamW, warm-up + cosine decay, grad clipping, EMA, validation, atomic
checkpoints with exact resume, CSV log and plot, typed progress events, DDP via torchrun.

    result = train(model_cfg, train_cfg, out_dir, resume=True, callback=print)

The run folder's files are named in `rundir.RunDir`; checkpoint.pt holds tensors and plain
Python only (loaded with weights_only=True). Every checkpoint from iteration 1 on also writes
last.safetensors (the EMA weights with their config, `weights_io`), so a cancelled or crashed
run leaves weights to try, not only a checkpoint to resume. `train` returns a `TrainResult`
(paths and figures); `Trainer` is the same run in pieces (set-up, data, resume, step,
validate, checkpoint).
"""

from __future__ import annotations

import copy
import io
import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..config import ModelConfig
from ..device import autocast, resolve_device
from ..diffusion import Denoiser, Schedule
from ..errors import Cancelled, InputError
from ..io.atomic import atomic_write_bytes
from ..models import build_model
from ..weights_io import load_weights, save_weights
from . import events as ev
from .augment import AugmentConfig, augment_batch
from .background import Background
from .clicks import batch_clicks, on_own_masks
from .config import TrainConfig, save_run_config
from .data import MultiRaterData, load_data
from .examples import TrainingExamples, examples_for
from .plots import plot_log
from .rundir import RunDir, TrainResult
from .runlog import append_log, truncate_log

__all__ = ["EMA", "Trainer", "TrainResult", "diffusion_loss", "lr_factor", "train"]

Callback = Callable[[ev.Event], None]
PROGRESS_EVERY_S = 0.5  # "progress" events: the first iteration, then at most this often
VAL_BATCH = 8  # validation images sampled together (`evaluate.sample_dataset`'s batch)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(cfg.iterations - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of the weights, with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.lerp_(p, 1 - d)
            else:
                e.copy_(p)


def diffusion_loss(model, schedule: Schedule, denoiser: Denoiser, image: torch.Tensor,
                   mask: torch.Tensor, gen: torch.Generator, *,
                   neighbour: torch.Tensor | None = None, has_neighbour: torch.Tensor | None = None,
                   learn_outline: torch.Tensor | None = None, exists: torch.Tensor | None = None,
                   learn_exists: torch.Tensor | None = None, clicks: torch.Tensor | None = None,
                   has_clicks: torch.Tensor | None = None,
                   item_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss terms: "loss" = w(t) ||x_hat - x||^2 (mean over pixels, then over the items with an
    outline to learn, weighted by `item_weight` if given), "kl" (0 without latent), "bce"
    (existence head: binary cross-entropy against the readers' non-empty share on the items
    that train it; 0 without head)."""
    b = mask.shape[0]
    t = ((torch.rand(1, generator=gen) + torch.arange(b) / b) % 1.0)  # stratified times
    noise = torch.randn(mask.shape, generator=gen)
    t, noise = t.to(mask.device), noise.to(mask.device)
    x_t, _, logsnr = schedule.add_noise(mask, t, noise)
    out, kl, logit = model(x_t, logsnr, image, mask, neighbour, has_neighbour, clicks,
                           has_clicks)
    per_item = denoiser.loss(out, x_t, mask, logsnr)
    keep = torch.ones_like(per_item) if learn_outline is None else learn_outline.to(per_item)
    if item_weight is not None:
        keep = keep * item_weight.to(per_item)
    terms = {"loss": (per_item * keep).sum() / keep.sum().clamp_min(1.0), "kl": kl.mean(),
             "bce": per_item.new_zeros(())}
    if logit is not None and exists is not None:
        bce = F.binary_cross_entropy_with_logits(logit.float(), exists.to(per_item),
                                                 reduction="none")
        on = torch.ones_like(bce) if learn_exists is None else learn_exists.to(bce)
        terms["bce"] = (bce * on).sum() / on.sum().clamp_min(1.0)
    return terms


def batch_tensors(examples: TrainingExamples, b: int, size: int, aug: AugmentConfig,
                  rng: np.random.Generator, p_clicks: float = 0.0) -> dict[str, torch.Tensor]:
    """One augmented training batch (target, neighbour and click maps share each item's
    geometry); with `p_clicks`, that share of the items get simulated clicks."""
    batch = examples.draw(b, rng)
    channels = [batch.target[:, None], batch.neighbour[:, None]]
    if p_clicks > 0:
        channels.append(batch_clicks(examples.data.masks, batch.rows, batch.target,
                                     batch.learn_outline, p_clicks, rng))
    image, masks = augment_batch(examples.data.images[batch.rows],
                                 np.concatenate(channels, 1), size, aug, rng)
    out = {"image": image, "mask": masks[:, :1], "neighbour": masks[:, 1:2],
           "has_neighbour": torch.from_numpy(batch.has_neighbour),
           "learn_outline": torch.from_numpy(batch.learn_outline),
           "exists": torch.from_numpy(batch.exists),
           "learn_exists": torch.from_numpy(batch.learn_exists)}
    if p_clicks > 0:
        out.update(_click_inputs((masks[:, 2:] > 0).float()))  # {-1, +1} -> {0, 1}
    return out


def _click_inputs(clicks: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's click inputs: the maps and which items have a click (an include or exclude
    disk) for the encoder to read."""
    return {"clicks": clicks, "has_clicks": clicks[:, :2].flatten(1).any(1)}


AREA_FLOOR = 50.0  # px: clicked outlines smaller than this weigh about alike


def click_item_weights(mask: torch.Tensor, has_clicks: torch.Tensor) -> torch.Tensor:
    """(B,) loss weights putting the clicked items' loss per outline pixel
    (`TrainConfig.click_loss_per_area`): 1 / (area + AREA_FLOOR), scaled to a mean of 1 over
    the clicked items; the others 1."""
    area = (mask > 0).flatten(1).sum(1).float()
    w = 1.0 / (area + AREA_FLOOR)
    clicked = has_clicks.bool()
    if not clicked.any():
        return torch.ones_like(w)
    return torch.where(clicked, w / w[clicked].mean(), torch.ones_like(w))


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _setup_distributed(device_pref: str) -> torch.device:
    """Initialise DDP when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_pref)
        if device.type == "cuda":
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device
    return resolve_device(device_pref)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _rng_state(np_rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
    # the global torch RNG drives the latent's reparameterisation noise
    return {"numpy": np_rng.bit_generator.state, "torch": gen.get_state(),
            "torch_global": torch.get_rng_state()}


def _set_rng_state(np_rng: np.random.Generator, gen: torch.Generator,
                   state: dict[str, Any]) -> None:
    np_rng.bit_generator.state = state["numpy"]
    gen.set_state(state["torch"])
    if "torch_global" in state:  # absent in older checkpoints
        torch.set_rng_state(state["torch_global"])


class _StopNow(Exception):
    """Raised by the stop hooks inside an iteration or a validation; never leaves `train`."""


def _stop_hooks(model: torch.nn.Module, should_stop: Callable[[], bool]) -> list[Any]:
    """Check `should_stop` before every module's forward and as each parameter's gradient
    arrives in backward, so a run stops within one layer's work, not one iteration's. The
    hooks only look: what the iteration computes is unchanged."""
    def check(*_: Any) -> None:
        if should_stop():
            raise _StopNow

    handles = [m.register_forward_pre_hook(check) for m in model.modules()]
    handles += [p.register_hook(check) for p in model.parameters() if p.requires_grad]
    return handles


def _fresh_run_dir(run: RunDir, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """A new run in `run`: an earlier run's log, checkpoint, plot and weights go (its best
    weights must not pass for this run's)."""
    run.root.mkdir(parents=True, exist_ok=True)
    for path in (run.log, run.checkpoint, run.plot, *run.weight_files()):
        path.unlink(missing_ok=True)
    save_run_config(model_cfg, cfg, run.run_json)


# modules a fine-tune may add to the weights it starts from (they start as initialised:
# zero-initialised conditioning is "ignored", so the model starts as the one it loaded)
NEW_MODULES = ("existence.", "denoiser.neighbour.", "has_neighbour", "clicks.")


def _trained_parameters(model: torch.nn.Module, prefixes) -> list[torch.nn.Parameter]:
    """The parameters a run trains: all, or (`TrainConfig.train_only`) those whose names
    start with one of `prefixes`; the others are frozen (requires_grad off)."""
    if not prefixes:
        return list(model.parameters())
    out = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(tuple(prefixes)))
        if p.requires_grad:
            out.append(p)
    if not out:
        raise InputError(f"train_only {list(prefixes)} names no parameter of this model")
    return out


def _load_init(model: torch.nn.Module, ema: EMA, init: str) -> list[str]:
    """Fine-tuning: start model and EMA from saved weights. Only the network must match (the
    modules in NEW_MODULES may be new); the diffusion and sampling settings of the run config
    may differ from the weights' own. Returns the names of the freshly initialised tensors."""
    src = load_weights(init)[0].state_dict()
    try:  # tensors of another shape fail here, even not strict
        missing, unexpected = model.load_state_dict(src, strict=False)
        foreign = [k for k in missing if not k.startswith(NEW_MODULES)] + list(unexpected)
        if foreign:
            model.load_state_dict(src)  # strict: PyTorch's own description of the mismatch
    except RuntimeError as e:
        raise InputError(f"init weights {init} do not fit this model config's network: "
                         f"{str(e).splitlines()[-1].strip()}") from None
    ema.model.load_state_dict(model.state_dict())
    return list(missing)


DataSource = MultiRaterData | Background[MultiRaterData]


class Trainer:
    """One run in pieces: set-up (model, EMA, optimiser, RNGs: `__init__`), `use_data`,
    `begin` (resume or start), `iterate` (one optimiser step), `validate`, `checkpoint`,
    `fit` (the loop, then the final weights). `train` runs them in this order."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, *,
                 callback: Callback | None = None,
                 should_stop: Callable[[], bool] | None = None):
        self.model_cfg, self.cfg, self.run = model_cfg, cfg, RunDir(out_dir)
        self.device = _setup_distributed(cfg.device)
        self.rank, self.world = _rank()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.emit: Callback = callback if (callback is not None and self.rank == 0) else _ignore
        self.stop = should_stop or _never
        # inside-iteration stops on one process only: DDP ranks must leave an iteration together
        self.inside = should_stop is not None and self.world == 1
        self.graceful = should_stop is not None  # else the loop never asks
        self.emit(ev.Phase("model", "building the model"))
        torch.manual_seed(cfg.seed)
        self.model = build_model(model_cfg).to(self.device)
        trained = _trained_parameters(self.model, cfg.train_only)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.np_rng = np.random.default_rng([cfg.seed, self.rank])
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)
        self.net: torch.nn.Module = self.model
        self.schedule = Schedule.from_config(model_cfg)
        self.denoiser = Denoiser.from_config(model_cfg)  # prediction type and loss weighting
        self.step, self.best, self.elapsed = 0, float("inf"), 0.0
        self.losses: list[float] = []       # the current log window
        self.bces: list[float] = []         # existence-head BCE over the same window
        self.pending: dict[str, Any] = {}   # a validation interrupted by a stop: redone on resume
        self.durations: deque[float] = deque(maxlen=50)  # seconds per iteration (s/it, ETA)
        self.examples: TrainingExamples | None = None
        self._val: MultiRaterData | None = None
        self._val_source: Background[MultiRaterData] | None = None
        self._val_seconds: float | None = None  # the last validation's duration (its ETA)
        self._last_saved = -1  # the step last.safetensors holds
        self._not_begun("while building the model")

    # ------------------------------------------------------------------ set-up
    def _not_begun(self, what: str) -> None:
        if self.stop():
            raise Cancelled(f"training stopped {what}; nothing was trained")

    def use_data(self, train_data: DataSource | None = None,
                 val_data: DataSource | None = None) -> None:
        """The training rows (loaded from cfg.data if not given; a `Background` load is
        awaited) and the validation set (cfg.val_data; a `Background` load is awaited at
        the first validation, so it never delays the first iteration)."""
        cfg = self.cfg
        if train_data is None:
            self.emit(ev.Phase("data", f"loading {cfg.data}"))
            train_data = load_data(cfg.data, cfg.allow_pickle)
        elif isinstance(train_data, Background):
            if not train_data.done():
                self.emit(ev.Phase("data", f"loading {cfg.data}"))
            train_data = train_data.result()
        if val_data is None and cfg.val_data:
            self.emit(ev.Phase("data", f"loading {cfg.val_data}"))
            val_data = load_data(cfg.val_data, cfg.allow_pickle)
        if isinstance(val_data, Background):
            self._val_source = val_data
        elif val_data is not None:
            self._val = self._val_subset(val_data)
        self._not_begun("while loading the data")
        k, r = train_data.masks.shape[:2]
        self.examples = examples_for(train_data, self.model_cfg, cfg.volume_index,
                                     cfg.volume_split, cfg.p_neighbour)
        self.emit(ev.Phase("data", f"{k:,} cases x {r} readers"))

    def _val_subset(self, data: MultiRaterData) -> MultiRaterData:
        n = min(self.cfg.val_size, len(data))
        return data.subset(np.unique(np.linspace(0, len(data) - 1, n).astype(int)))

    @property
    def validates(self) -> bool:
        return self._val is not None or self._val_source is not None

    @property
    def val_data(self) -> MultiRaterData:
        if self._val is None:
            self._val = self._val_subset(self._val_source.result())
        return self._val

    def begin(self, resume: bool) -> None:
        """Continue from the checkpoint (if `resume` and there is one), else start the run
        folder afresh (from `cfg.init`'s weights when fine-tuning)."""
        cfg, run = self.cfg, self.run
        if resume and run.can_resume():
            self._load_checkpoint()
        else:
            if cfg.init:
                fresh = _load_init(self.model, self.ema, cfg.init)
                if fresh:
                    self.emit(ev.Phase("model", f"started from {cfg.init}; new: "
                                                f"{', '.join(sorted(fresh))}"))
            if self.rank == 0:
                _fresh_run_dir(run, self.model_cfg, cfg)
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.ema.model.load_state_dict(self.model.state_dict())  # rank 0's, broadcast

    def _load_checkpoint(self) -> None:
        cfg, path = self.cfg, self.run.checkpoint
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if not _same_model(ck["model_config"], self.model_cfg):
            raise InputError(f"{path} was made with another model config; use a new --out "
                             "or the config saved in run.json")
        self.model.load_state_dict(ck["model"])
        self.ema.model.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.step, self.best, self.elapsed = ck["step"], ck["best"], ck["elapsed"]
        self.losses, self.pending = list(ck.get("window", [])), dict(ck.get("pending", {}))
        self.bces = list(ck.get("window_bce", []))
        if self.world == 1:  # exact resume; DDP ranks re-seed from (seed, rank, step)
            _set_rng_state(self.np_rng, self.gen, ck["rng"])
        else:
            self.np_rng = np.random.default_rng([cfg.seed, self.rank, self.step])
            self.gen.manual_seed(cfg.seed * 1000 + self.rank + 7919 * self.step)
        if self.rank == 0:
            truncate_log(self.run.log, self.step)
        self.emit(ev.Resume(self.step, cfg.iterations))

    # ------------------------------------------------------------------ saving
    def checkpoint(self) -> None:
        """checkpoint.pt: everything for an exact resume; then its EMA weights as
        last.safetensors, once an iteration is done (rank 0; each file atomic)."""
        if self.rank != 0:
            return
        _atomic_torch_save({
            "model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "rng": _rng_state(self.np_rng, self.gen), "step": self.step, "best": self.best,
            "elapsed": self.elapsed, "model_config": self.model_cfg.to_dict(),
            "train_config": self.cfg.to_dict(), "window": self.losses,
            "window_bce": self.bces, "pending": self.pending}, self.run.checkpoint)
        if self.step > 0:
            self._save_last()

    def _save_last(self) -> None:
        """last.safetensors (+ .json): the EMA weights of iteration `step` with their config."""
        if self._last_saved == self.step:
            return
        save_weights(self.ema.model, self.model_cfg, self.run.last,
                     info={"step": self.step, "elapsed_s": round(self.elapsed, 1),
                           "best_val_ged": self.best})
        self._last_saved = self.step

    def _stopped(self, where: str) -> NoReturn:
        self.checkpoint()
        self.emit(ev.Cancelled(self.step, self.cfg.iterations, where))
        raise Cancelled(f"training stopped at iteration {self.step} ({where}); "
                        "resume with --resume")

    def _finish(self) -> TrainResult:
        """last (and, without validation, best) weights; the `Done` event."""
        run = self.run
        if self.rank == 0:
            self._save_last()
            if not run.best.exists():
                save_weights(self.ema.model, self.model_cfg, run.best,
                             info={"step": self.step, "elapsed_s": round(self.elapsed, 1),
                                   "best_val_ged": self.best})
        result = TrainResult.of(run, self.step, self.elapsed, self.best)
        self.emit(ev.Done(result))
        return result

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, Any]:
        """The EMA model's metrics on the validation subset (stop hooks inside); `ValProgress`
        events at its start, then at most every PROGRESS_EVERY_S."""
        from ..segmenter import Segmenter  # here: half a second less before iteration 1
        from .evaluate import evaluate_model

        seg_model = copy.deepcopy(self.ema.model)
        if self.inside:
            _stop_hooks(seg_model, self.stop)
        count, steps = len(self.val_data), max(int(self.model_cfg.steps), 1)
        t0 = time.perf_counter()
        at = {"cases": 0, "evals": 0, "told": -math.inf}

        def tell(force: bool = False) -> None:
            now = time.perf_counter()
            if not force and now - at["told"] < PROGRESS_EVERY_S:
                return
            at["told"] = now
            # within a batch of cases: by its network evaluations (`steps` per batch)
            batch = min(VAL_BATCH, count - at["cases"])
            done = at["cases"] + batch * min(at["evals"] / steps, 1.0)
            spent = now - t0
            eta = (spent * (count - done) / done if done > 0 else
                   None if self._val_seconds is None else max(self._val_seconds - spent, 0.0))
            self.emit(ev.ValProgress(self.step, self.cfg.iterations, round(done, 3), count, eta))

        def evaluated(*_: Any) -> None:
            at["evals"] += 1
            tell()

        def batch_done(cases: int, _total: int) -> None:
            at["cases"], at["evals"] = cases, 0
            tell()

        denoiser = getattr(seg_model, "denoiser", None)  # one call per network evaluation
        hook = denoiser.register_forward_hook(evaluated) if denoiser is not None else None
        tell(force=True)
        seg = Segmenter(seg_model, self.model_cfg, self.device)
        try:
            result = evaluate_model(seg, self.val_data, n=self.cfg.val_n,
                                    steps=self.model_cfg.steps, seed=0, batch_images=VAL_BATCH,
                                    progress=batch_done,
                                    should_stop=self.stop if self.inside else None)
        finally:
            if hook is not None:
                hook.remove()
        self._val_seconds = time.perf_counter() - t0
        return result

    def _check_val_source(self) -> None:
        """A validation set that failed to load in the background: say so now (after saving
        the last completed iteration), not at the first validation."""
        if self._val_source is not None and self._val is None and self._val_source.failed():
            self.checkpoint()
            self._val_source.result()

    # ------------------------------------------------------------------ the loop
    def s_per_it(self) -> float | None:
        return float(np.mean(self.durations)) if self.durations else None

    def eta(self) -> float:
        return (self.cfg.iterations - self.step) * (self.s_per_it() or 0.0)

    def iterate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimiser step (iteration step + 1); returns its (loss, kl, bce). A stop
        inside it restores the RNGs and checkpoints the last completed iteration."""
        cfg, model_cfg, device = self.cfg, self.model_cfg, self.device
        before = _rng_state(self.np_rng, self.gen) if self.inside else None
        try:
            batch = {k: v.to(device) for k, v in batch_tensors(
                self.examples, cfg.batch_size, model_cfg.crop_size, cfg.augment,
                self.np_rng, cfg.p_clicks if model_cfg.click_conditioning else 0.0).items()}
            image = batch.pop("image")
            if device.type == "cpu":
                image = image.contiguous(memory_format=torch.channels_last)
            mask = batch.pop("mask")
            if "clicks" in batch and self.np_rng.random() < cfg.p_own_clicks:
                batch.update(self.clicks_on_own_masks(image, mask, batch))
            if "clicks" in batch and cfg.click_loss_per_area:
                batch["item_weight"] = click_item_weights(mask, batch["has_clicks"])
            with autocast(device):
                terms = diffusion_loss(self.net, self.schedule, self.denoiser, image, mask,
                                       self.gen, **batch)
                loss, kl, bce = terms["loss"], terms["kl"], terms["bce"]
                total = loss + model_cfg.kl_weight * kl + model_cfg.existence_weight * bce
            self.opt.zero_grad(set_to_none=True)
            total.backward()
        except _StopNow:
            _set_rng_state(self.np_rng, self.gen, before)  # as if this iteration never began
            self._stopped(f"inside iteration {self.step + 1}")
        torch.nn.utils.clip_grad_norm_(self.opt.param_groups[0]["params"], cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        return loss, kl, bce

    @torch.no_grad()
    def clicks_on_own_masks(self, image: torch.Tensor, mask: torch.Tensor,
                            batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's clicks made again on what the model shows (`clicks.on_own_masks`): its
        x_0 estimate from pure noise (the mean mask), given the clicks so far and the
        sampler's known pixels; a latent model takes its prior's mean. One image encoding."""
        model, device = self.model, self.device
        with autocast(device):
            feats = model.encode_image(image)
            z = None if model.latent is None else model.latent.prior(feats[-1]).mu
        logsnr = torch.full((len(mask),), self.schedule.logsnr_min, device=device)
        x_t = torch.randn(mask.shape, generator=self.gen).to(device)

        def inputs(maps: np.ndarray) -> dict[str, torch.Tensor]:
            return _click_inputs(torch.from_numpy(maps).to(device, torch.float32))

        def predict(maps: np.ndarray) -> np.ndarray:
            with autocast(device):
                raw = model.denoise(x_t, logsnr, model.steer(feats, **inputs(maps)), z,
                                    batch.get("neighbour"), batch.get("has_neighbour"))
            return (self.denoiser.x_hat(raw, x_t, logsnr)[:, 0] > 0).cpu().numpy()

        return inputs(on_own_masks(batch["has_clicks"].cpu().numpy(),
                                   (mask[:, 0] > 0).cpu().numpy(), predict, self.np_rng))

    def end_of_step(self, row: dict[str, Any], validating: bool) -> None:
        """Validation, log row, checkpoint after iteration `step` (also: a resumed pending
        validation)."""
        cfg, run, step = self.cfg, self.run, self.step
        if validating:
            self.emit(ev.Phase("validation", f"validating on {len(self.val_data)} cases"))
            self.pending = {"row": row}
            try:
                v = self.validate()
            except (_StopNow, Cancelled):
                self._stopped("during validation")
            self.pending = {}
            row.update(step=step, time_s=round(self.elapsed, 1), val_ged=v["ged"],
                       val_hm_iou=v["hm_iou"])
            row.setdefault("loss", row.get("last_loss"))
            if v["ged"] < self.best:
                self.best = v["ged"]
                save_weights(self.ema.model, self.model_cfg, run.best,
                             info={"step": step, "val": v})
            self.emit(ev.Val(step, cfg.iterations, v))
        row.pop("last_loss", None)
        if row and self.rank == 0:
            append_log(run.log, row)
            self.emit(ev.Step(step, cfg.iterations, row["loss"],
                              row.get("loss_median", row["loss"]), row.get("lr"),
                              self.s_per_it(), self.eta()))
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
            self.checkpoint()
            if self.rank == 0 and run.log.exists():
                plot_log(run.log, run.plot)
        if self.world > 1 and step % cfg.checkpoint_every == 0:
            dist.barrier()

    def fit(self) -> TrainResult:
        """Iterate to cfg.iterations (log rows, validation, checkpoints, progress events);
        then the final weights."""
        cfg, rank = self.cfg, self.rank
        hooks = _stop_hooks(self.model, self.stop) if self.inside else []
        t_start = time.perf_counter() - self.elapsed
        last_progress = -math.inf
        self.model.train()
        try:
            if self.pending and self.validates and rank == 0:
                self.end_of_step(dict(self.pending.get("row", {})), validating=True)
            self.emit(ev.Phase("training", f"iteration {self.step + 1} running", self.step,
                               cfg.iterations))
            while self.step < cfg.iterations:
                if self.graceful and self.stop():
                    self._stopped("between iterations")
                self._check_val_source()
                t_it = time.perf_counter()
                loss, kl, bce = self.iterate()
                self.losses.append(loss.item())
                self.bces.append(bce.item())
                now = time.perf_counter()
                self.durations.append(now - t_it)
                self.elapsed = now - t_start
                step = self.step
                if now - last_progress >= PROGRESS_EVERY_S or step == cfg.iterations:
                    last_progress = now
                    self.emit(ev.Progress(step, cfg.iterations, self.losses[-1],
                                          self.s_per_it(), self.eta()))
                row: dict[str, Any] = {}
                if step % cfg.log_every == 0 or step == cfg.iterations:
                    row = {"step": step, "time_s": round(self.elapsed, 1),
                           "loss": float(np.mean(self.losses)),
                           "loss_median": float(np.median(self.losses)), "kl": kl.item(),
                           "bce": float(np.mean(self.bces)),
                           "lr": self.sched.get_last_lr()[0]}
                    self.losses, self.bces = [], []
                validating = self.validates and rank == 0 and (
                    step % cfg.val_every == 0 or step == cfg.iterations)
                if validating and not row:
                    row = {"last_loss": loss.item()}
                self.end_of_step(row, validating)
        finally:
            for h in hooks:
                h.remove()
        return self._finish()


def _same_model(saved: dict[str, Any], cfg: ModelConfig) -> bool:
    """A checkpoint's model config is this one, read as its own format version says (a field
    dropped since, like `name`, does not make it another model)."""
    try:
        return ModelConfig.from_dict(saved) == cfg
    except (ValueError, TypeError):
        return False


def _ignore(event: ev.Event) -> None:
    pass


def _never() -> bool:
    return False


def train(model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = True,
          callback: Callback | None = None, should_stop: Callable[[], bool] | None = None,
          train_data: DataSource | None = None,
          val_data: DataSource | None = None) -> TrainResult:
    """Train (or resume) a model; returns the run's files and figures (`TrainResult`).

    Events to `callback` (`training.events`): Phase (model, data, training, validation: what
    it is doing), Resume, Progress (after the first iteration, then every PROGRESS_EVERY_S),
    Step (a log row: loss = window mean, loss_median), ValProgress (a validation's cases done
    and ETA), Val, Cancelled, Done.

    `should_stop()` is checked between iterations and, on one process, inside them (forward
    and backward) and inside validation: the run then writes a checkpoint of its last
    completed iteration (an interrupted validation is redone on resume) and raises
    `Cancelled`. Resuming it gives bit for bit the weights of an uninterrupted run."""
    trainer = Trainer(model_cfg, cfg, out_dir, callback=callback, should_stop=should_stop)
    trainer.use_data(train_data, val_data)
    trainer.begin(resume)
    return trainer.fit()
