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

from .config import MODEL_MODALITIES, SAMPLERS
from .errors import AmbisegError, InputError


def load_input(path: str, spacing: list[float] | None = None):
    """An image or volume from .npy or any reader format -> (MedicalImage, assumed geometry).

    A .npy array has no geometry: origin 0, identity direction and `spacing` (mm, one per
    axis, default 1) are assumed, and its reference says so ("assumed": True)."""
    from .io import MedicalImage, read_image

    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.suffix.lower() != ".npy":
        if spacing:
            raise InputError("--spacing is for .npy inputs; other files carry their own")
        images = read_image(p)
        if not images:
            raise InputError(f"no image found in {p}")
        return images[0], False
    try:
        a = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {p}: {e}") from None
    rgb = a.ndim == 3 and a.shape[-1] in (3, 4)
    nd = a.ndim - rgb
    if nd not in (2, 3):
        raise InputError(f"{p} has shape {a.shape}: ambiseg sample needs a 2D image (H, W), "
                         "an RGB image (H, W, 3) or a volume (Z, H, W)")
    if spacing is not None and len(spacing) != nd:
        raise InputError(f"--spacing needs {nd} values (mm per pixel of {('z, ' * (nd == 3))}"
                         f"y, x); got {len(spacing)}")
    img = MedicalImage(a, tuple(spacing or (1.0,) * nd), (0.0,) * nd,
                       axes=("z", "y", "x")[3 - nd:], name=p.stem, rgb=rgb)
    return img, True


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


def _export_suffix(path: str, reference: dict, option: str) -> None:
    """Refuse an export before sampling: unknown format, DICOM-SEG from a non-DICOM input."""
    from .io.sitk_io import VOLUME_SUFFIXES, suffix_of

    suffix = suffix_of(path)
    if suffix == ".dcm":
        if not reference.get("sop_instance_uids"):
            raise InputError(f"{option} {path}: .dcm writes a DICOM-SEG, which needs a DICOM "
                             "input; this input is not DICOM: use .nii.gz, .nrrd or .mha")
    elif suffix not in VOLUME_SUFFIXES:
        raise InputError(f"{option} {path}: unknown format {suffix or '(none)'}; use .nii, "
                         ".nii.gz, .nrrd, .mha or .dcm (DICOM-SEG)")
    if not Path(path).resolve().parent.is_dir():
        raise InputError(f"{option} {path}: folder {Path(path).resolve().parent} does not exist")


def export(res, path: str, reference: dict, kind: str) -> list[str]:
    """Write the consensus (labels, 1 where agreement >= 0.5) or the agreement heatmap
    (float 0..1) on the input's full grid (a slab goes in at its z0: zeros elsewhere) with
    its geometry; returns the written paths."""
    from . import io

    ref = reference if res.z0 is None else reference | {"z0": res.z0}
    if kind == "labels":
        return io.write_labels(res.consensus(0.5).astype(np.uint8), path, ref, from_model=True)
    return io.write_agreement(res.agreement.astype(np.float32), path, ref)


def mode_lines(res, limit: int = 8) -> list[str]:
    """Modes for a terminal: the `limit` largest with their sizes, then one line for the rest."""
    from .modes import mode_labels

    sizes, labels = res.mode_sizes(), mode_labels(res.modes, res.masks)
    lines = []
    for r, (m, s) in enumerate(zip(res.modes[:limit], sizes)):
        where = ""
        if res.volume and not res.one_slice and not s["empty"] and "slices" in s:
            k = s["slices"]["median"]
            where = f", {k:.0f} slice{'s' * (k != 1)}"
        pct = f"{100 * m.frequency:.0f}%" if m.frequency >= 0.005 else "<1%"
        lines.append(f"  {labels[r]} ({pct}): {s['text']}{where}")
    rest = res.modes[limit:]
    if rest:
        lines.append(f"  ... {len(rest)} smaller modes with {sum(len(m.members) for m in rest)} "
                     "samples in all (every mode is in summary.json)")
    return lines


def _check_prompt(args, plane_shape: tuple[int, ...]) -> None:
    """A --center inside the image, a --box that overlaps it (pixel indices of a plane)."""
    h, w = plane_shape[:2]
    if args.center and not (0 <= args.center[0] < h and 0 <= args.center[1] < w):
        raise InputError(f"--center {args.center[0]:g} {args.center[1]:g} is outside the image "
                         f"(rows 0..{h - 1}, columns 0..{w - 1})")
    if args.box:
        y0, x0, y1, x1 = args.box
        if y1 <= y0 or x1 <= x0:
            raise InputError("--box Y0 X0 Y1 X1 needs Y1 > Y0 and X1 > X0")
        if y1 <= 0 or x1 <= 0 or y0 >= h or x0 >= w:
            raise InputError(f"--box {y0:g} {x0:g} {y1:g} {x1:g} does not overlap the image "
                             f"({h} x {w} pixels)")


def _request(args, img, assumed: bool):
    """The `Request` for `ambiseg sample` from its arguments and the loaded input."""
    from .volume_sampling import Prompt, Request

    data = img.model_image
    spacing = None if assumed and not args.spacing else tuple(img.spacing)  # None: pixels
    if spacing and img.axes and img.axes[0] == "t":
        spacing = spacing[1:]  # frames are time: diameters in mm, no volume
    prompt = Prompt(center=tuple(args.center) if args.center else None,
                    box=tuple(args.box) if args.box else None)
    req = Request(image=data, prompt=prompt, n=args.n, steps=args.steps, seed=args.seed,
                  spacing=spacing, modality=args.modality or img.model_modality,
                  sampler=args.sampler, max_slices=args.max_slices,
                  given_finding=not args.unconditional)
    _check_prompt(args, img.spatial_shape[-2:])
    if len(img.spatial_shape) == 2:
        if args.slices or args.follow or args.slice is not None:
            raise InputError(f"--slice, --slices and --follow need a volume; {args.input} is a "
                             f"2D image of shape {data.shape}")
        return _steer(args, req, img.spatial_shape)
    depth = data.shape[0]
    if args.slice is not None and not 0 <= args.slice < depth:
        raise InputError(f"--slice {args.slice} is outside 0..{depth - 1}")
    req.volume = True
    if args.slices:
        a, b = args.slices
        if a > b:
            raise InputError(f"--slices {a} {b}: the first slice must not be after the last")
        if a < 0 or b >= depth:
            raise InputError(f"--slices {a} {b} is outside the volume (0..{depth - 1})")
        if a == b:
            raise InputError(f"--slices {a} {b} is a slab of one slice: use --slice {a} "
                             "(sizes of one slice are areas, not volumes)")
        if args.slice is not None and not a <= args.slice <= b:
            raise InputError(f"--slice {args.slice} is outside --slices {a} {b}")
        req.slices = list(range(a, b + 1))
        prompt.z = req.start = args.slice  # None: where the finding is most evident
        return _steer(args, req, img.spatial_shape)
    prompt.z = depth // 2 if args.slice is None else args.slice
    if args.follow:
        req.propagate = True
    else:
        req.slices = [prompt.z]
    return _steer(args, req, img.spatial_shape)


def _steer(args, req, shape: tuple[int, ...]):
    """`req` with the --include / --exclude clicks as its constraints, checked before the
    model loads: Y X on an image or the one slice sampled, Z Y X with --slices or --follow."""
    from .constraints import Constraints

    clicks = {"include": args.include or [], "exclude": args.exclude or []}
    if not any(clicks.values()):
        return req
    slab = req.propagate or len(req.slices or []) > 1
    want = "Z Y X" if slab else "Y X"
    for kind, points in clicks.items():
        for p in points:
            if len(p) != len(want.split()):
                raise InputError(f"--{kind} {' '.join(f'{v:g}' for v in p)}: give {want}"
                                 + (" with --slices or --follow" if slab else ""))
    if req.volume and not slab:  # the one slice sampled
        clicks = {k: [(req.prompt.z, *p) for p in v] for k, v in clicks.items()}
    req.constraints = Constraints(clicks["include"], clicks["exclude"])
    if not req.volume:
        req.constraints.check(shape[-2:])
        return req
    z = req.prompt.z
    span = ((req.slices[0], req.slices[-1]) if not req.propagate else
            (max(0, z - req.max_slices), min(shape[0] - 1, z + req.max_slices)))
    req.constraints.check(shape[-3:], span)
    return req


def cmd_sample(args) -> int:
    from .io.preprocess import check_image_2d
    from .progress import ProgressBar
    from .scope import layer_scope_warnings, scope_text
    from .segmenter import Segmenter
    from .volume_sampling import sample_request

    img, assumed = load_input(args.input, args.spacing)
    req = _request(args, img, assumed)
    reference = img.reference() | ({"assumed": True} if assumed else {})
    for option, path in (("--export", args.export), ("--export-agreement", args.export_agreement)):
        if path:
            _export_suffix(path, reference, option)
    key = req.prompt.z if req.volume else None
    for z in ([None] if not req.volume else req.slices or [key]):  # before the model loads
        check_image_2d(req.image if z is None else req.image[z], "image" if z is None
                       else f"slice {z}")
    seg = Segmenter.load(args.weights, device=args.device)
    outside = layer_scope_warnings(seg.cfg, reference, rgb=img.rgb, data=img.model_image)
    if outside:
        print(f"ambiseg sample: warning: {args.input}: {scope_text(outside)}", file=sys.stderr)
    with ProgressBar("sampling", "steps") as bar:
        res = sample_request(seg, req, progress=bar)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "samples.npy", res.masks.astype(np.uint8))
    np.save(out / "agreement.npy", res.agreement.astype(np.float32))
    shown = np.asarray(req.image if res.start is None else req.image[res.start])
    where = "" if res.start is None else f" (slice {res.start})"
    save_agreement_png(shown.astype(np.float32),
                       res.agreement if res.start is None else res.agreement[res.key],
                       out / "agreement.png", f"agreement of {res.n} samples{where}")
    written = {}
    if args.export or args.export_agreement:
        if assumed:
            print(f"ambiseg sample: warning: {args.input} has no geometry; the exported files "
                  "assume origin 0, identity direction and spacing "
                  f"{list(img.spacing)} mm (--spacing)", file=sys.stderr)
        for kind, path in (("labels", args.export), ("agreement", args.export_agreement)):
            if path:
                written[kind] = export(res, path, reference, kind)
    summary = res.summary() | {"input": str(args.input), "input_shape": list(img.spatial_shape),
                               "weights": str(args.weights or "bundled"),
                               "geometry_assumed": assumed, "outside_scope": outside,
                               "exported": written}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    span = ("" if res.z0 is None else f" on slice {res.z0} of {img.spatial_shape[0]}"
            if res.one_slice else
            f" on slices {res.z0}-{res.z0 + res.masks.shape[1] - 1} of {img.spatial_shape[0]}")
    caution = "outside the model's scope (see the warning above): " if outside else ""
    given = ", given a finding" if res.conditional else ""
    print(f"{caution}{res.n} masks{span}{given} in {res.seconds:.2f} s; "
          f"{len(res.modes)} mode(s):")
    print("\n".join(mode_lines(res)))
    began = "" if res.start is None else f" (started on slice {res.start})"
    print(f"{res.finding_text()}{began}")
    if res.constraints is not None:
        c = res.constraints
        print(f"drawn given {len(c.include)} include and {len(c.exclude)} exclude click(s): "
              f"{int(res.satisfies.sum())} of {res.n} samples satisfy them")
    for paths in written.values():
        print(f"exported {', '.join(paths)}")
    print(f"written to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from . import metrics
    from .config import sampling_counts
    from .progress import ProgressBar
    from .segmenter import Segmenter
    from .training.data import load_npz
    from .training.evaluate import (
        evaluate_samples,
        finding_calibration,
        finding_probabilities,
        sample_dataset,
    )

    data = load_npz(args.data, limit=args.limit)
    seg = Segmenter.load(args.weights, device=args.device)
    n, steps = sampling_counts(seg.cfg, args.n, args.steps)  # default: the model's
    t0 = time.perf_counter()
    with ProgressBar("sampling", "images") as bar:
        samples = sample_dataset(seg, data, n, steps, args.seed,
                                 progress=lambda done, total: bar(done, total),
                                 sampler=args.sampler, given_finding=args.given_finding)
    seconds = time.perf_counter() - t0
    result, cal = evaluate_samples(samples, data)
    result.update(n=n, steps=steps, sampler=args.sampler or seg.cfg.sampler,
                  seed=args.seed, data=str(args.data), given_finding=args.given_finding,
                  weights=str(args.weights or "bundled"), sampling_seconds=round(seconds, 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = finding_probabilities(seg, data)
    if p is not None:  # the first answer, per slice in data order, and its calibration
        np.save(out / "finding_probability.npy", p.astype(np.float32))
        found = finding_calibration(p, data)
        result["finding"] = {k: v for k, v in found.items() if not k.startswith("bin_")}
        _write_calibration(found, out / "finding_calibration.json")
        metrics.reliability_diagram(
            found, out / "finding_reliability.png", xlabel="finding probability",
            ylabel="share of readers who outlined",
            title=f"finding probability, {found['count']} slices, ECE {found['ece']:.3f}")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    _write_calibration(cal, out / "calibration.json")
    metrics.reliability_diagram(cal, out / "reliability.png",
                                title=f"pixel calibration, N={n}, {result['count']} images")
    if args.save_samples:
        np.savez_compressed(out / "samples.npz", samples=samples.astype(np.uint8))
    given = ", given a finding" if args.given_finding else ""
    print(f"GED{n} {result['ged']:.4f}  HM-IoU{n} {result['hm_iou']:.4f}  "
          f"CI {result['ci']:.4f}  ECE {result['ece']:.4f}  ({result['count']} images, "
          f"{steps} steps{given}, {seconds:.0f} s) -> {out / 'metrics.json'}")
    if "finding" in result:
        f = result["finding"]
        print(f"finding probability: ECE {f['ece']:.4f}  BCE {f['bce']:.4f} (constant "
              f"{f['bce_constant']:.4f}, readers' own {f['bce_floor']:.4f})")
    return 0


def _write_calibration(cal: dict, path: Path) -> None:
    path.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in cal.items()}, indent=2))


def cmd_train(args) -> int:
    from .training import events as ev
    from .training.config import load_run_config
    from .training.plan import plan_run
    from .training.trainer import train

    model_cfg, train_cfg = load_run_config(args.config) if args.config else (None, None)
    given = {key: getattr(args, key) for key in ("data", "val_data", "init", "iterations",
                                                 "batch_size", "lr", "device", "log_every")
             if getattr(args, key) is not None}
    plan = plan_run(args.out, resume=args.resume, model=model_cfg, train=train_cfg, **given)
    if not plan.train.data:
        raise InputError("no training data: pass --data or set train.data in --config")
    print(f"ambiseg train: {plan.describe()}", flush=True)

    def report(e: ev.Event) -> None:
        if isinstance(e, ev.Step):
            print(f"step {e.step}/{e.total}  loss {e.loss:.4f}  eta {e.eta_s / 60:.1f} min",
                  flush=True)
        elif isinstance(e, ev.Val):
            v = e.val
            print(f"val @ {e.step}: GED{v['n']} {v['ged']:.4f}  HM-IoU{v['n']} "
                  f"{v['hm_iou']:.4f}", flush=True)
        elif isinstance(e, (ev.Resume, ev.Done)):
            print(ev.to_json(e), flush=True)

    train(plan.model, plan.train, plan.out.root, resume=plan.resume, callback=report)
    return 0


def cmd_triage(args) -> int:
    from .triage.run import Settings, triage

    return triage(Settings(input=args.input, out=args.out, prompts=args.prompts, n=args.n,
                           steps=args.steps, seed=args.seed, weights=args.weights,
                           device=args.device, limit=args.limit,
                           given_finding=not args.unconditional))


def cmd_demo(args) -> int:
    from .widgets.demo import run_demo

    return run_demo(screenshot=args.screenshot, weights=args.weights, n=args.n, steps=args.steps)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ambiseg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="draw N plausible masks for an image or slices of a volume")
    s.add_argument("input", help=".npy image (H, W) or volume (Z, H, W), or any image file or "
                   "DICOM series folder the readers open")
    s.add_argument("--n", type=int, default=None, help="samples (default: the model's)")
    s.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the model's")
    s.add_argument("--steps", type=int, default=None, help="default: the model's")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--weights", default=None, help="default: bundled LIDC model")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--center", type=float, nargs=2, metavar=("Y", "X"))
    where.add_argument("--box", type=float, nargs=4, metavar=("Y0", "X0", "Y1", "X1"))
    s.add_argument("--slice", type=int, default=None,
                   help="volume: the slice to sample, or where --follow starts (default: the "
                   "middle slice); with --slices, the slice to start from (default: the one "
                   "where the finding is most evident)")
    slab = s.add_mutually_exclusive_group()
    slab.add_argument("--slices", type=int, nargs=2, metavar=("A", "B"),
                      help="volume: sample slices A..B (inclusive) at the same prompt")
    slab.add_argument("--follow", action="store_true",
                      help="volume: follow the finding up and down from --slice while half "
                      "of the samples mark it")
    s.add_argument("--unconditional", action="store_true",
                   help="draw the benchmark distribution, 'no finding' samples included "
                   "(default: the samples given a finding at the prompt, and the probability "
                   "of one as its own number)")
    s.add_argument("--max-slices", dest="max_slices", type=int, default=64,
                   help="--follow: at most this many slices each way")
    for kind, says in (("include", "inside"), ("exclude", "outside")):
        s.add_argument(f"--{kind}", action="append", type=float, nargs="+", default=None,
                       metavar="Z_Y_X", help=f"a pixel the outline must have {says} (row and "
                       "column indices Y X; Z Y X with --slices or --follow); repeatable: the "
                       "samples are drawn given every click")
    s.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                   help=".npy input: mm per pixel (Y X, or Z Y X for a volume)")
    s.add_argument("--export", default=None, metavar="FILE",
                   help="write the consensus (agreement >= 0.5) as labels on the input's full "
                   "grid and geometry: .nii, .nii.gz, .nrrd, .mha or .dcm (DICOM-SEG)")
    s.add_argument("--export-agreement", dest="export_agreement", default=None, metavar="FILE",
                   help="write the agreement heatmap (0..1) the same way")
    s.add_argument("--modality", choices=MODEL_MODALITIES, default=None,
                   help="default: the reader's, else guessed from the values")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="sample a multi-rater set and compute the metrics")
    e.add_argument("--data", required=True, help="npz with images (K,H,W) and masks (K,R,H,W)")
    e.add_argument("--n", type=int, default=None, help="samples per image (default: the model's)")
    e.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the model's")
    e.add_argument("--steps", type=int, default=None, help="default: the model's")
    e.add_argument("--seed", type=int, default=0, help="image i is sampled with seed + i")
    e.add_argument("--out", required=True)
    e.add_argument("--weights", default=None)
    e.add_argument("--limit", type=int, default=None, help="first M images only")
    e.add_argument("--given-finding", dest="given_finding", action="store_true",
                   help="draw every image's samples given a finding (default: the benchmark "
                   "distribution, empty samples included)")
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
    t.add_argument("--log-every", dest="log_every", type=int, default=None,
                   help="a log.csv row (mean and median loss) every this many iterations "
                   "(default 20)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("triage", help="sample every case of a folder or .npz once and rank "
                       "them by expert disagreement (torchrun shards the cases)")
    r.add_argument("input", help="folder of cases (DICOM series folders, NIfTI / MHA / NRRD "
                   "volumes, images) or a multi-rater .npz")
    r.add_argument("--out", required=True, help="the run folder (docs/triage.md); an existing "
                   "run with the same settings is resumed")
    r.add_argument("--prompts", default=None, metavar="CSV",
                   help="case, z, y, x (a point) or z0, y0, x0, z1, y1, x1 (a box), in voxels "
                   "or (units = mm, x_mm ...) in mm of the source; default: each case's centre")
    r.add_argument("--n", "--samples", dest="n", type=int, default=None,
                   help="samples (default: the model's); under torchrun write --samples "
                   "(torchrun takes --n for its own --nnodes / --nproc-per-node)")
    r.add_argument("--steps", type=int, default=None, help="default: the model's")
    r.add_argument("--seed", type=int, default=0, help="prompt i is sampled with seed + i")
    r.add_argument("--weights", default=None, help="default: bundled LIDC model")
    r.add_argument("--device", default="auto")
    r.add_argument("--limit", type=int, default=None, metavar="K",
                   help="the first K cases only (a later run with more continues the run)")
    r.add_argument("--unconditional", action="store_true",
                   help="draw the benchmark distribution, 'no finding' samples included "
                   "(default: samples given a finding, and the probability of one)")
    r.set_defaults(func=cmd_triage)

    d = sub.add_parser("demo", help="open napari on a real CT and show the sampler's output")
    d.add_argument("--screenshot", default=None, help="run headless and save the window here")
    d.add_argument("--weights", default=None)
    d.add_argument("--n", type=int, default=None, help="samples (default: the model's)")
    d.add_argument("--steps", type=int, default=None, help="default: the model's")
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
