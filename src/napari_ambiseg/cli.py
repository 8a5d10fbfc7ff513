"""`ambiseg` command line: sample, evaluate, train, demo.

Every user error exits non-zero with one line on stderr (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .config import SAMPLERS
from .errors import AmbisegError, InputError


def _load_2d(path: str, slice_index: int | None):
    """A 2D image from .npy or any reader format -> (image, modality, spacing or None)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.suffix == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {p}: {e}") from None
        return a, "auto", None
    from .io import read_image

    images = read_image(p)
    if not images:
        raise InputError(f"no image found in {p}")
    img = images[0]
    data = img.gray if getattr(img, "gray", None) is not None else img.data
    spacing = tuple(img.spacing[-2:]) if img.spacing is not None else None
    if data.ndim == 3:
        k = data.shape[0] // 2 if slice_index is None else slice_index
        if not 0 <= k < data.shape[0]:
            raise InputError(f"--slice {k} is outside 0..{data.shape[0] - 1}")
        data = data[k]
    elif data.ndim != 2:
        raise InputError(f"{p} has shape {data.shape}: ambiseg sample needs a 2D image or volume")
    modality = img.modality if img.modality in ("CT", "MR", "US") else "auto"
    return data, modality, spacing


def save_agreement_png(image: np.ndarray, agreement: np.ndarray, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(image, cmap="gray")
    ax1.set_title("image")
    ax2.imshow(image, cmap="gray")
    shown = np.ma.masked_where(agreement <= 0, agreement)
    im = ax2.imshow(shown, cmap="magma", vmin=0, vmax=1, alpha=0.75)
    ax2.set_title(title)
    fig.colorbar(im, ax=ax2, fraction=0.046, label="fraction of samples")
    for a in (ax1, ax2):
        a.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def cmd_sample(args) -> int:
    from .segmenter import Segmenter

    from .io.preprocess import check_image_2d

    image, modality, spacing = _load_2d(args.input, args.slice)
    check_image_2d(image)  # bad input is reported before the model loads
    seg = Segmenter.load(args.weights, device=args.device)
    res = seg.sample(image, n=args.n, steps=args.steps, seed=args.seed, sampler=args.sampler,
                     center=tuple(args.center) if args.center else None,
                     box=tuple(args.box) if args.box else None, spacing=spacing,
                     modality=args.modality or modality)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "samples.npy", res.masks.astype(np.uint8))
    np.save(out / "agreement.npy", res.agreement.astype(np.float32))
    save_agreement_png(np.asarray(image, dtype=np.float32) if np.asarray(image).ndim == 2
                       else np.asarray(image)[..., 0], res.agreement, out / "agreement.png",
                       f"agreement of {res.n} samples")
    summary = res.summary() | {"input": str(args.input), "weights": str(args.weights or "bundled")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    modes = ", ".join(f"{m['count']}/{res.n}" for m in summary["modes"])
    print(f"{res.n} masks in {res.timings['total']:.2f} s; modes: {modes}; written to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from . import metrics
    from .segmenter import Segmenter
    from .training.data import load_npz
    from .training.evaluate import evaluate_samples, sample_dataset

    data = load_npz(args.data, limit=args.limit)
    seg = Segmenter.load(args.weights, device=args.device)
    steps = args.steps or seg.cfg.steps
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done, total):
        if time.perf_counter() - last[0] > 10 or done == total:
            last[0] = time.perf_counter()
            print(f"  {done}/{total} images", file=sys.stderr, flush=True)

    samples = sample_dataset(seg, data, args.n, steps, args.seed, progress=progress,
                             sampler=args.sampler)
    seconds = time.perf_counter() - t0
    result, cal = evaluate_samples(samples, data)
    result.update(n=args.n, steps=steps, sampler=args.sampler or seg.cfg.sampler,
                  seed=args.seed, data=str(args.data),
                  weights=str(args.weights or "bundled"), sampling_seconds=round(seconds, 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "calibration.json").write_text(json.dumps(
        {k: np.asarray(v).tolist() for k, v in cal.items()}, indent=2))
    metrics.reliability_diagram(cal, out / "reliability.png",
                                title=f"pixel calibration, N={args.n}, {result['count']} images")
    if args.save_samples:
        np.savez_compressed(out / "samples.npz", samples=samples.astype(np.uint8))
    print(f"GED{args.n} {result['ged']:.4f}  HM-IoU{args.n} {result['hm_iou']:.4f}  "
          f"CI {result['ci']:.4f}  ECE {result['ece']:.4f}  ({result['count']} images, "
          f"{steps} steps, {seconds:.0f} s) -> {out / 'metrics.json'}")
    return 0


def cmd_train(args) -> int:
    from .config import ModelConfig
    from .training.config import TrainConfig, load_run_config
    from .training.trainer import train
    from .weights_io import load_config, resolve_weights

    if args.config:
        model_cfg, train_cfg = load_run_config(args.config)
    else:  # fine-tuning takes the architecture of the weights it starts from
        model_cfg = (load_config(resolve_weights(args.init))[0] if args.init
                     else ModelConfig())
        train_cfg = TrainConfig()
    for key in ("data", "val_data", "init", "iterations", "batch_size", "lr", "device"):
        value = getattr(args, key)
        if value is not None:
            setattr(train_cfg, key, value)
    if not train_cfg.data:
        raise InputError("no training data: pass --data or set train.data in --config")

    def report(e):
        if e["kind"] == "step":
            print(f"step {e['step']}/{e['total']}  loss {e['loss']:.4f}  "
                  f"eta {e['eta_s'] / 60:.1f} min", flush=True)
        elif e["kind"] == "val":
            v = e["val"]
            print(f"val @ {e['step']}: GED{v['n']} {v['ged']:.4f}  HM-IoU{v['n']} "
                  f"{v['hm_iou']:.4f}", flush=True)
        elif e["kind"] in ("resume", "done"):
            print(json.dumps(e), flush=True)

    train(model_cfg, train_cfg, args.out, resume=args.resume, callback=report)
    return 0


def cmd_demo(args) -> int:
    from .widgets.demo import run_demo

    return run_demo(screenshot=args.screenshot, weights=args.weights, n=args.n, steps=args.steps)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ambiseg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="draw N plausible masks for one image")
    s.add_argument("input", help="2D .npy (LIDC 8-bit scale) or any supported image file")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the model's")
    s.add_argument("--steps", type=int, default=None, help="default: the model's")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--weights", default=None, help="default: bundled LIDC model")
    s.add_argument("--center", type=float, nargs=2, metavar=("Y", "X"))
    s.add_argument("--box", type=float, nargs=4, metavar=("Y0", "X0", "Y1", "X1"))
    s.add_argument("--slice", type=int, default=None, help="slice of a volume (default: middle)")
    s.add_argument("--modality", choices=["CT", "MR", "US", "8bit"], default=None)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="sample a multi-rater set and compute the metrics")
    e.add_argument("--data", required=True, help="npz with images (K,H,W) and masks (K,R,H,W)")
    e.add_argument("--n", type=int, default=16)
    e.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the model's")
    e.add_argument("--steps", type=int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True)
    e.add_argument("--weights", default=None)
    e.add_argument("--limit", type=int, default=None, help="first M images only")
    e.add_argument("--save-samples", action="store_true")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_evaluate)

    t = sub.add_parser("train", help="train or resume a model (torchrun for several GPUs/nodes)")
    t.add_argument("--config", default=None, help='JSON {"model": {...}, "train": {...}}')
    t.add_argument("--data", default=None)
    t.add_argument("--val-data", dest="val_data", default=None)
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    t.add_argument("--init", default=None,
                   help='fine-tune: start from these weights ("bundled" or a .safetensors)')
    t.add_argument("--iterations", type=int, default=None)
    t.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--device", default=None)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="open napari on a real CT and show the sampler's output")
    d.add_argument("--screenshot", default=None, help="run headless and save the window here")
    d.add_argument("--weights", default=None)
    d.add_argument("--n", type=int, default=16)
    d.add_argument("--steps", type=int, default=10)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AmbisegError as e:
        print(f"ambiseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ambiseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
