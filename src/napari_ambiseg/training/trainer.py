"""The training loop: AdamW, warm-up + cosine decay, grad clipping, EMA, validation, atomic
checkpoints with exact resume, CSV log and plot, progress callbacks, and DDP via torchrun.

    train(model_cfg, train_cfg, out_dir, resume=True, callback=print)

Files in out_dir: checkpoint.pt (everything for an exact resume, tensors and plain Python only,
loaded with weights_only=True), best.safetensors/.json (EMA weights with the best val GED),
last.safetensors/.json (EMA weights at the end), log.csv, training.png, run.json.
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
from ..diffusion import Schedule, x_from_prediction
from ..diffusion.parameterization import loss_weight
from ..errors import Cancelled, InputError
from ..io.atomic import atomic_write_bytes
from ..models import build_model
from ..weights_io import load_weights, save_weights
from .augment import AugmentConfig, augment_batch
from .config import TrainConfig, save_run_config
from .data import MultiRaterData, load_data
from .examples import TrainingExamples, examples_for
from .runlog import LOG_FIELDS, append_log, plot_log, truncate_log

__all__ = ["LOG_FIELDS", "EMA", "diffusion_loss", "lr_factor", "plot_log", "train"]

Callback = Callable[[dict[str, Any]], None]
PROGRESS_EVERY_S = 0.5  # "progress" events: the first iteration, then at most this often


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


def diffusion_loss(model, schedule: Schedule, cfg: ModelConfig, image: torch.Tensor,
                   mask: torch.Tensor, gen: torch.Generator, *,
                   neighbour: torch.Tensor | None = None, has_neighbour: torch.Tensor | None = None,
                   learn_outline: torch.Tensor | None = None, exists: torch.Tensor | None = None,
                   learn_exists: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss terms: "loss" = w(t) ||x_hat - x||^2 (mean over pixels, then over the items with an
    outline to learn), "kl" (0 without latent), "bce" (existence head: binary cross-entropy
    against the readers' non-empty share on the items that train it; 0 without head)."""
    b = mask.shape[0]
    t = ((torch.rand(1, generator=gen) + torch.arange(b) / b) % 1.0)  # stratified times
    noise = torch.randn(mask.shape, generator=gen)
    t, noise = t.to(mask.device), noise.to(mask.device)
    x_t, _, logsnr = schedule.add_noise(mask, t, noise)
    out, kl, logit = model(x_t, logsnr, image, mask, neighbour, has_neighbour)
    alpha, sigma = Schedule.alpha_sigma(logsnr.view(-1, 1, 1, 1))
    x_hat = x_from_prediction(out.float(), x_t, alpha, sigma, cfg.prediction)
    w = loss_weight(logsnr, cfg.loss_weighting, cfg.sigmoid_bias)
    per_item = w * ((x_hat - mask) ** 2).mean((1, 2, 3))
    keep = torch.ones_like(per_item) if learn_outline is None else learn_outline.to(per_item)
    terms = {"loss": (per_item * keep).sum() / keep.sum().clamp_min(1.0), "kl": kl.mean(),
             "bce": per_item.new_zeros(())}
    if logit is not None and exists is not None:
        bce = F.binary_cross_entropy_with_logits(logit.float(), exists.to(per_item),
                                                 reduction="none")
        on = torch.ones_like(bce) if learn_exists is None else learn_exists.to(bce)
        terms["bce"] = (bce * on).sum() / on.sum().clamp_min(1.0)
    return terms


def batch_tensors(examples: TrainingExamples, b: int, size: int, aug: AugmentConfig,
                  rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One augmented training batch (target and neighbour share each item's geometry)."""
    batch = examples.draw(b, rng)
    image, masks = augment_batch(examples.data.images[batch.rows],
                                 np.stack([batch.target, batch.neighbour], 1), size, aug, rng)
    return {"image": image, "mask": masks[:, :1], "neighbour": masks[:, 1:],
            "has_neighbour": torch.from_numpy(batch.has_neighbour),
            "learn_outline": torch.from_numpy(batch.learn_outline),
            "exists": torch.from_numpy(batch.exists),
            "learn_exists": torch.from_numpy(batch.learn_exists)}


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


def _fresh_run_dir(out: Path, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.csv").unlink(missing_ok=True)
    save_run_config(model_cfg, cfg, out / "run.json")


# modules a fine-tune may add to the weights it starts from (they start as initialised:
# zero-initialised conditioning is "ignored", so the model starts as the one it loaded)
NEW_MODULES = ("existence.", "denoiser.neighbour.", "has_neighbour")


def _load_init(model: torch.nn.Module, ema: EMA, init: str) -> list[str]:
    """Fine-tuning: start model and EMA from saved weights. Only the network must match (the
    modules in NEW_MODULES may be new); the diffusion and sampling settings of the run config
    may differ from the weights' own. Returns the names of the freshly initialised tensors."""
    src = load_weights(init)[0].state_dict()
    missing, unexpected = model.load_state_dict(src, strict=False)
    foreign = [k for k in missing if not k.startswith(NEW_MODULES)] + list(unexpected)
    if foreign:
        try:
            model.load_state_dict(src)  # strict: PyTorch's own description of the mismatch
        except RuntimeError as e:
            raise InputError(f"init weights {init} do not fit this model config's network: "
                             f"{str(e).splitlines()[-1].strip()}") from None
    ema.model.load_state_dict(model.state_dict())
    return list(missing)


def train(model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = True,
          callback: Callback | None = None, should_stop: Callable[[], bool] | None = None,
          train_data: MultiRaterData | None = None,
          val_data: MultiRaterData | None = None) -> dict[str, Any]:
    """Train (or resume) a model. Returns a summary dict.

    Events to `callback` (dicts with "kind"): "phase" (data, model, training: what it is
    doing before the first iteration ends), "resume", "progress" (step, s_per_it, eta_s,
    loss of the last iteration; after the first iteration, then every PROGRESS_EVERY_S),
    "step" (a log row: loss = window mean, loss_median), "val", "cancelled", "done".

    `should_stop()` is checked between iterations and, on one process, inside them (forward
    and backward) and inside validation: the run then writes a checkpoint of its last
    completed iteration (an interrupted validation is redone on resume) and raises
    `Cancelled`. Resuming it gives bit for bit the weights of an uninterrupted run."""
    out = Path(out_dir)
    device = _setup_distributed(cfg.device)
    rank, world = _rank()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    emit = callback if (callback is not None and rank == 0) else (lambda e: None)
    stop = should_stop or (lambda: False)

    def not_begun(what: str) -> None:
        if stop():
            raise Cancelled(f"training stopped {what}; nothing was trained")

    if train_data is None:
        emit({"kind": "phase", "phase": "data", "text": f"loading {cfg.data}"})
        train_data = load_data(cfg.data, cfg.allow_pickle)
    if val_data is None and cfg.val_data:
        emit({"kind": "phase", "phase": "data", "text": f"loading {cfg.val_data}"})
        val_data = load_data(cfg.val_data, cfg.allow_pickle)
    if val_data is not None:
        pick = np.unique(np.linspace(0, len(val_data) - 1, min(cfg.val_size, len(val_data))).astype(int))
        val_data = val_data.subset(pick)
    not_begun("while loading the data")
    k, r = train_data.masks.shape[:2]
    examples = examples_for(train_data, model_cfg, cfg.volume_index, cfg.volume_split,
                            cfg.p_neighbour)
    emit({"kind": "phase", "phase": "model",
          "text": f"{k:,} cases x {r} readers; building the model"})

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    np_rng = np.random.default_rng([cfg.seed, rank])
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    step, best, elapsed = 0, float("inf"), 0.0
    losses: list[float] = []        # the current log window
    bces: list[float] = []          # existence-head BCE over the same window
    pending: dict[str, Any] = {}    # a validation interrupted by a stop: redone on resume
    ckpt_path = out / "checkpoint.pt"
    not_begun("while building the model")

    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck["model_config"] != model_cfg.to_dict():
            raise InputError(f"{ckpt_path} was made with another model config; use a new --out "
                             "or the config saved in run.json")
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, best, elapsed = ck["step"], ck["best"], ck["elapsed"]
        losses, pending = list(ck.get("window", [])), dict(ck.get("pending", {}))
        bces = list(ck.get("window_bce", []))
        if world == 1:  # exact resume; DDP ranks re-seed from (seed, rank, step)
            _set_rng_state(np_rng, gen, ck["rng"])
        else:
            np_rng = np.random.default_rng([cfg.seed, rank, step])
            gen.manual_seed(cfg.seed * 1000 + rank + 7919 * step)
        if rank == 0:
            truncate_log(out / "log.csv", step)
        emit({"kind": "resume", "step": step, "total": cfg.iterations})
    else:
        if cfg.init:
            fresh = _load_init(model, ema, cfg.init)
            if fresh:
                emit({"kind": "phase", "phase": "model",
                      "text": f"started from {cfg.init}; new: {', '.join(sorted(fresh))}"})
        if rank == 0:
            _fresh_run_dir(out, model_cfg, cfg)

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        ema.model.load_state_dict(model.state_dict())  # DDP broadcast rank 0's weights
    schedule = Schedule.from_config(model_cfg)
    # inside-iteration stops on one process only: DDP ranks must leave an iteration together
    inside = should_stop is not None and world == 1
    hooks = _stop_hooks(model, stop) if inside else []

    def checkpoint() -> None:
        if rank != 0:
            return
        _atomic_torch_save({
            "model": model.state_dict(), "ema": ema.model.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": _rng_state(np_rng, gen), "step": step, "best": best,
            "elapsed": elapsed, "model_config": model_cfg.to_dict(),
            "train_config": cfg.to_dict(), "window": losses, "window_bce": bces,
            "pending": pending}, ckpt_path)

    def stopped(where: str) -> NoReturn:
        checkpoint()
        emit({"kind": "cancelled", "step": step, "total": cfg.iterations, "where": where})
        raise Cancelled(f"training stopped at iteration {step} ({where}); resume with --resume")

    def validate() -> dict[str, Any]:
        from ..segmenter import Segmenter  # here: half a second less before iteration 1
        from .evaluate import evaluate_model

        seg_model = copy.deepcopy(ema.model)
        if inside:
            _stop_hooks(seg_model, stop)
        seg = Segmenter(seg_model, model_cfg, device)
        return evaluate_model(seg, val_data, n=cfg.val_n, steps=model_cfg.steps, seed=0,
                              should_stop=stop if inside else None)

    def end_of_step(row: dict[str, Any], validating: bool) -> None:
        """Validation, log row, checkpoint after iteration `step` (also: a resumed pending
        validation)."""
        nonlocal best, pending
        if validating:
            emit({"kind": "phase", "phase": "validation",
                  "text": f"validating on {len(val_data)} cases"})
            pending = {"row": row}
            try:
                v = validate()
            except (_StopNow, Cancelled):
                stopped("during validation")
            pending = {}
            row.update(step=step, time_s=round(elapsed, 1), val_ged=v["ged"],
                       val_hm_iou=v["hm_iou"])
            row.setdefault("loss", row.get("last_loss"))
            if v["ged"] < best:
                best = v["ged"]
                save_weights(ema.model, model_cfg, out / "best", info={"step": step, "val": v})
            emit({"kind": "val", "step": step, "total": cfg.iterations, "val": v})
        row.pop("last_loss", None)
        if row and rank == 0:
            append_log(out / "log.csv", row)
            emit({"kind": "step", "step": step, "total": cfg.iterations, "loss": row["loss"],
                  "loss_median": row.get("loss_median", row["loss"]), "lr": row.get("lr"),
                  "s_per_it": s_per_it(), "eta_s": eta()})
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
            checkpoint()
            if rank == 0 and (out / "log.csv").exists():
                plot_log(out / "log.csv", out / "training.png")
        if world > 1 and step % cfg.checkpoint_every == 0:
            dist.barrier()

    durations: deque[float] = deque(maxlen=50)  # seconds per iteration, for s/it and ETA

    def s_per_it() -> float | None:
        return float(np.mean(durations)) if durations else None

    def eta() -> float:
        return (cfg.iterations - step) * (s_per_it() or 0.0)

    size = model_cfg.crop_size
    t_start = time.perf_counter() - elapsed
    last_progress = -math.inf
    model.train()
    try:
        if pending and val_data is not None and rank == 0:
            end_of_step(dict(pending.get("row", {})), validating=True)
        emit({"kind": "phase", "phase": "training", "step": step, "total": cfg.iterations,
              "text": f"iteration {step + 1} running"})
        while step < cfg.iterations:
            if should_stop is not None and should_stop():
                stopped("between iterations")
            t_it = time.perf_counter()
            before = _rng_state(np_rng, gen) if inside else None
            try:
                batch = {k: v.to(device) for k, v in batch_tensors(
                    examples, cfg.batch_size, size, cfg.augment, np_rng).items()}
                image = batch.pop("image")
                if device.type == "cpu":
                    image = image.contiguous(memory_format=torch.channels_last)
                mask = batch.pop("mask")
                with autocast(device):
                    terms = diffusion_loss(net, schedule, model_cfg, image, mask, gen, **batch)
                    loss, kl, bce = terms["loss"], terms["kl"], terms["bce"]
                    total = loss + model_cfg.kl_weight * kl + model_cfg.existence_weight * bce
                opt.zero_grad(set_to_none=True)
                total.backward()
            except _StopNow:
                _set_rng_state(np_rng, gen, before)  # as if iteration step + 1 never began
                stopped(f"inside iteration {step + 1}")
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            ema.update(model, step)
            step += 1
            losses.append(loss.item())
            bces.append(bce.item())
            now = time.perf_counter()
            durations.append(now - t_it)
            elapsed = now - t_start
            if now - last_progress >= PROGRESS_EVERY_S or step == cfg.iterations:
                last_progress = now
                emit({"kind": "progress", "step": step, "total": cfg.iterations,
                      "loss": losses[-1], "s_per_it": s_per_it(), "eta_s": eta()})
            row: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == cfg.iterations:
                row = {"step": step, "time_s": round(elapsed, 1), "loss": float(np.mean(losses)),
                       "loss_median": float(np.median(losses)), "kl": kl.item(),
                       "bce": float(np.mean(bces)),
                       "lr": sched.get_last_lr()[0]}
                losses, bces = [], []
            validating = val_data is not None and rank == 0 and (
                step % cfg.val_every == 0 or step == cfg.iterations)
            if validating and not row:
                row = {"last_loss": loss.item()}
            end_of_step(row, validating)
    finally:
        for h in hooks:
            h.remove()

    summary = {"step": step, "elapsed_s": elapsed, "best_val_ged": best, "out": str(out)}
    if rank == 0:
        info = {"step": step, "elapsed_s": round(elapsed, 1), "best_val_ged": best}
        save_weights(ema.model, model_cfg, out / "last", info=info)
        if not (out / "best.safetensors").exists():
            save_weights(ema.model, model_cfg, out / "best", info=info)
    emit({"kind": "done", **summary})
    return summary | {"model": model, "ema": ema.model}
