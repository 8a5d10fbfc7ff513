"""Metrics for ambiguous segmentation: a set of samples S_1..S_N against readers Y_1..Y_M.

Pure numpy (>= 2.0) + scipy, vectorised: masks are bit-packed and all pairwise intersections
of two stacks come from one broadcast AND + popcount.

Conventions (foreground only, see the "Metrics" section of the method notes)
------------------------------------------------------------------------------
- Masks: bool, or integer arrays where non-zero is foreground, or float arrays holding only
  0 and 1 (a float map with other values is a probability map, not a mask: InputError).
  A set is a 3-D stack (N, H, W) with N >= 1; every mask of both sets has the same (H, W).
- IoU(a, b) = |a & b| / |a | b|, with IoU(empty, empty) = 1 and IoU(empty, non-empty) = 0.
  Dice(a, b) = 2 |a & b| / (|a| + |b|), with Dice(empty, empty) = 1.
- GED (the squared generalized energy distance), with d = 1 - IoU:
  GED = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')], the expectations taken over all N*M, N^2
  and M^2 pairs, self-pairs included. It depends on N: report it as GED16, GED100...
- HM-IoU: L = lcm(N, M); each truth is repeated L/M times and each sample L/N times; the
  Hungarian assignment (scipy.optimize.linear_sum_assignment) on cost 1 - IoU; the mean of
  the L matched IoUs.
- Collective insight (CIMD) from three parts:
  - S_c = |U_Y & U_S| / |U_Y| (combined sensitivity of the union of the samples U_S to the
    union of the truths U_Y); S_c = 1 when U_Y is empty.
  - D_max = mean over truths Y_i of max_j Dice(Y_i, S_j).
  - D_a = 1 - (|max V_S - max V_Y| + |min V_S - min V_Y|) / 2 with
    V_A = {1 - Dice(a_i, a_j) : i < j} over distinct pairs within a set (V_A = {0} when the
    set has a single mask).
  - CI = 3 S_c D_max D_a / (S_c + D_max + D_a), as in the public implementations; this is
    NOT the harmonic mean 3 / (1/S_c + 1/D_max + 1/D_a). CI = 0 when the denominator is 0.
- S_NCC (PHiSeg): CE(p, q) = -(p log q + (1 - p) log(1 - q)) per pixel, p the target and q
  the prediction clipped to [eps, 1 - eps]; s_bar the mean of the samples;
  E_ss = mean_i CE(s_bar, S_i), E_sy_j = mean_i CE(Y_j, S_i);
  S_NCC = mean_j NCC(E_ss, E_sy_j), NCC(a, b) = mean((a - mean a)(b - mean b)) / (std a std b)
  (population std), and NCC = 0 when either map is constant.
- Calibration: per-pixel predicted agreement (fraction of samples marking the pixel) against
  the reader frequency (fraction of readers marking it), pooled over all pixels given;
  equal-width bins on [0, 1], the last bin closed;
  ECE = sum_b (n_b / n) |mean agreement in b - mean reader frequency in b|.
- Per-image metrics are averaged over images by `summarize`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import InputError, WriteError

__all__ = [
    "iou",
    "dice",
    "pairwise_iou",
    "pairwise_dice",
    "ged",
    "hm_iou",
    "combined_sensitivity",
    "max_dice_matching",
    "diversity_agreement",
    "collective_insight",
    "s_ncc",
    "calibration",
    "reliability_diagram",
    "evaluate_set",
    "summarize",
]


# ----------------------------------------------------------------------------- validation
def _as_mask(x, name: str) -> np.ndarray:
    """Boolean copy/view of a mask array (any shape); InputError if it is not a mask."""
    x = np.asarray(x)
    if x.dtype == bool:
        return x
    if np.issubdtype(x.dtype, np.integer):
        return x != 0
    if np.issubdtype(x.dtype, np.floating):
        if not np.all((x == 0) | (x == 1)):
            raise InputError(f"{name}: a float mask must hold only 0 and 1 (got other values or NaN)")
        return x == 1
    raise InputError(f"{name}: unsupported mask dtype {x.dtype}")


def _as_stack(x, name: str) -> np.ndarray:
    """(N, H, W) boolean stack with N >= 1 and H*W >= 1."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise InputError(f"{name}: expected a stack of masks (N, H, W), got shape {x.shape}")
    if x.shape[0] == 0:
        raise InputError(f"{name}: empty set of masks (N = 0)")
    if x.shape[1] * x.shape[2] == 0:
        raise InputError(f"{name}: masks have no pixels, shape {x.shape}")
    return _as_mask(x, name)


def _pair(samples, truths, names=("samples", "truths")) -> tuple[np.ndarray, np.ndarray]:
    s, y = _as_stack(samples, names[0]), _as_stack(truths, names[1])
    if s.shape[1:] != y.shape[1:]:
        raise InputError(f"{names[0]} masks are {s.shape[1:]} but {names[1]} masks are {y.shape[1:]}")
    return s, y


def _single(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(f"expected two masks (H, W) of the same shape, got {a.shape} and {b.shape}")
    return _pair(a[None], b[None], ("a", "b"))


# ------------------------------------------------------------------------------ overlaps
def _bits(x: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, words) uint64 with the pixels packed 64 to a word."""
    packed = np.packbits(x.reshape(len(x), -1), axis=1)
    return np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8))).view(np.uint64)


def _overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersections (N, M) and foreground sizes (N,), (M,) of two validated stacks, as float64.

    Exact integer counts by AND + popcount on bit-packed masks (np.bitwise_count, numpy >= 2):
    unlike a float matrix product this does not depend on BLAS threads, which stall badly on a
    busy 2-core machine. Rows go in blocks to bound the (rows, M, words) temporary to ~32 MB.
    """
    pa, pb = _bits(a), _bits(b)
    inter = np.empty((len(pa), len(pb)), np.float64)
    step = max(1, 2**22 // (len(pb) * pa.shape[1]))
    for i in range(0, len(pa), step):
        inter[i : i + step] = np.bitwise_count(pa[i : i + step, None] & pb[None]).sum(-1, dtype=np.int64)
    sizes = [np.bitwise_count(p).sum(-1, dtype=np.int64).astype(np.float64) for p in (pa, pb)]
    return inter, *sizes


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 1 where den == 0 (both masks empty)."""
    return np.divide(num, den, out=np.ones_like(num), where=den > 0)


def _iou_dice(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise IoU and Dice (N, M) of two validated stacks, from one set of intersections."""
    inter, sa, sb = _overlaps(a, b)
    total = sa[:, None] + sb[None, :]
    return _ratio(inter, total - inter), _ratio(2 * inter, total)


def _joint(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and Dice over [S; Y] x [S; Y]: blocks [:N, :N] within S, [:N, N:] S vs Y, [N:, N:] within Y."""
    both = np.concatenate([s, y])
    return _iou_dice(both, both)


def pairwise_iou(A, B) -> np.ndarray:
    """IoU of every mask of A (N, H, W) with every mask of B (M, H, W): an (N, M) float64 array."""
    return _iou_dice(*_pair(A, B, ("A", "B")))[0]


def pairwise_dice(A, B) -> np.ndarray:
    """Dice of every mask of A (N, H, W) with every mask of B (M, H, W): an (N, M) float64 array."""
    return _iou_dice(*_pair(A, B, ("A", "B")))[1]


def iou(a, b) -> float:
    """IoU of two masks (H, W); 1 when both are empty, 0 when only one is."""
    return float(_iou_dice(*_single(a, b))[0][0, 0])


def dice(a, b) -> float:
    """Dice of two masks (H, W); 1 when both are empty."""
    return float(_iou_dice(*_single(a, b))[1][0, 0])


# ------------------------------------------------------------------------ set metrics
# The private helpers take the joint matrices of `_joint` and N, so `evaluate_set` counts overlaps once.
def _ged_terms(iou_j: np.ndarray, n: int) -> dict:
    d = 1.0 - iou_j
    return {"cross": float(d[:n, n:].mean()), "within_samples": float(d[:n, :n].mean()),
            "within_truths": float(d[n:, n:].mean())}


def _ged(iou_j: np.ndarray, n: int) -> float:
    t = _ged_terms(iou_j, n)
    return 2 * t["cross"] - t["within_samples"] - t["within_truths"]


def _hm_iou(iou_sy: np.ndarray) -> float:
    n, m = iou_sy.shape
    big = math.lcm(n, m)
    tiled = np.tile(iou_sy, (big // n, big // m))  # row r is sample r % N, column c is truth c % M
    rows, cols = linear_sum_assignment(1.0 - tiled)
    return float(tiled[rows, cols].mean())


def _s_c(s: np.ndarray, y: np.ndarray) -> float:
    u_y = y.any(0)
    n_y = np.count_nonzero(u_y)
    return 1.0 if n_y == 0 else np.count_nonzero(u_y & s.any(0)) / n_y


def _diversities(dice_within: np.ndarray) -> np.ndarray:
    """V_A = {1 - Dice(a_i, a_j) : i < j}, or {0} for a single mask."""
    k = len(dice_within)
    return np.zeros(1) if k == 1 else 1.0 - dice_within[np.triu_indices(k, k=1)]


def _d_a(dice_j: np.ndarray, n: int) -> float:
    v_s, v_y = _diversities(dice_j[:n, :n]), _diversities(dice_j[n:, n:])
    return float(1 - (abs(v_s.max() - v_y.max()) + abs(v_s.min() - v_y.min())) / 2)


def _ci(s: np.ndarray, y: np.ndarray, dice_j: np.ndarray) -> dict:
    n = len(s)
    s_c, d_max, d_a = _s_c(s, y), float(dice_j[n:, :n].max(1).mean()), _d_a(dice_j, n)
    den = s_c + d_max + d_a
    return {"ci": 3 * s_c * d_max * d_a / den if den > 0 else 0.0, "s_c": s_c, "d_max": d_max, "d_a": d_a}


def ged(samples, truths) -> float:
    """Squared generalized energy distance with d = 1 - IoU, self-pairs included."""
    s, y = _pair(samples, truths)
    return _ged(_joint(s, y)[0], len(s))


def ged_terms(samples, truths) -> dict:
    """GED's three expectations of d = 1 - IoU: cross (samples vs truths), within_samples
    (sample diversity) and within_truths (reader disagreement); GED = 2 cross - the others."""
    s, y = _pair(samples, truths)
    return _ged_terms(_joint(s, y)[0], len(s))


def hm_iou(samples, truths) -> float:
    """Hungarian-matched IoU after repeating both sets to L = lcm(N, M) elements."""
    return _hm_iou(_iou_dice(*_pair(samples, truths))[0])


def combined_sensitivity(samples, truths) -> float:
    """S_c = |U_Y & U_S| / |U_Y| for the unions of the truths (U_Y) and samples (U_S); 1 if U_Y is empty.

    The order matters: paper 1's public code passes (truths, samples) swapped and so computes the
    combined precision |U_Y & U_S| / |U_S| instead.
    """
    return _s_c(*_pair(samples, truths))


def max_dice_matching(samples, truths) -> float:
    """D_max = mean over truths Y_i of max_j Dice(Y_i, S_j) (Dice(empty, empty) = 1)."""
    s, y = _pair(samples, truths)
    return float(_iou_dice(y, s)[1].max(1).mean())


def diversity_agreement(samples, truths) -> float:
    """D_a = 1 - (|max V_S - max V_Y| + |min V_S - min V_Y|) / 2.

    V_A is the set of pairwise diversities 1 - Dice(a_i, a_j) over distinct pairs i < j within a
    set (one of the two conventions in use; the other is the pixel variance of a_i - a_j), and
    V_A = {0} for a set of one mask.
    """
    s, y = _pair(samples, truths)
    return _d_a(_joint(s, y)[1], len(s))


def collective_insight(samples, truths) -> dict:
    """CIMD's collective insight: dict with ci, s_c, d_max, d_a (see the module docstring).

    CI = 3 S_c D_max D_a / (S_c + D_max + D_a), as in the public implementations; this is NOT
    the harmonic mean 3 / (1/S_c + 1/D_max + 1/D_a). CI = 0 when the denominator is 0.
    """
    s, y = _pair(samples, truths)
    return _ci(s, y, _joint(s, y)[1])


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-normalised cross-correlation; 0 when either map is constant (std at rounding level)."""
    sa, sb = a.std(), b.std()
    if sa <= 1e-12 * np.abs(a).max() or sb <= 1e-12 * np.abs(b).max():
        return 0.0
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))


def s_ncc(samples, truths, eps: float = 1e-6) -> float:
    """PHiSeg's S_NCC between the samples' and the readers' cross-entropy maps.

    CE(p, q) = -(p log q + (1 - p) log(1 - q)) with p the TARGET and q the PREDICTION: the
    prediction is always a sample S_i, clipped to [eps, 1 - eps]; the targets are the sample
    mean s_bar (E_ss = mean_i CE(s_bar, S_i)) and each truth Y_j (E_sy_j = mean_i CE(Y_j, S_i)),
    as in PHiSeg's `pixel_wise_xent(m_samp, m_gt)`. Targets are not clipped (they only weight
    the logs). S_NCC = mean_j NCC(E_ss, E_sy_j), in [-1, 1]; NCC = 0 when a map is constant
    (e.g. all samples identical: E_ss carries no information).

    samples: binary masks or probabilities in [0, 1] (N, H, W); truths: binary masks (M, H, W).
    """
    s = np.asarray(samples)
    if s.ndim == 3 and np.issubdtype(s.dtype, np.floating):
        if not np.all((s >= 0) & (s <= 1)):
            raise InputError("samples: probabilities must lie in [0, 1] (and not be NaN)")
        y = _pair(s > 0, truths)[1]  # shape checks
    else:
        s, y = _pair(samples, truths)
    flat = s.reshape(len(s), -1)
    s_bar = flat.mean(0, dtype=np.float64)
    if flat.dtype == bool:  # binary samples: mean_i log q_i in closed form
        hi, lo = np.log1p(-eps), np.log(eps)
        log_q, log_1q = s_bar * hi + (1 - s_bar) * lo, s_bar * lo + (1 - s_bar) * hi
    else:
        log_q = np.log(np.clip(flat, eps, 1 - eps)).mean(0)
        log_1q = np.log(np.clip(1 - flat, eps, 1 - eps)).mean(0)
    e_ss = -(s_bar * log_q + (1 - s_bar) * log_1q)
    e_sy = -np.where(y.reshape(len(y), -1), log_q, log_1q)  # CE is linear in the target
    return float(np.mean([_ncc(e_ss, e) for e in e_sy]))


# ------------------------------------------------------------------------- calibration
def calibration(agreement, reader_frequency, bins: int = 10) -> dict:
    """Pixel calibration of the predicted agreement against the reader frequency.

    agreement, reader_frequency: arrays of the same shape with values in [0, 1], e.g. stacked
    (K, H, W) over a whole test set, so that all pixels are pooled. Equal-width bins on [0, 1],
    bin b = [b/bins, (b+1)/bins), the last bin closed. Returns ece (sum over non-empty bins of
    n_b / n |mean agreement - mean reader frequency|), bin_confidence and bin_frequency (per-bin
    means, NaN for empty bins) and bin_count (int64).
    """
    a, f = np.asarray(agreement, dtype=np.float64), np.asarray(reader_frequency, dtype=np.float64)
    if a.shape != f.shape:
        raise InputError(f"agreement {a.shape} and reader frequency {f.shape} differ in shape")
    a, f = a.ravel(), f.ravel()
    if a.size == 0:
        raise InputError("calibration: no pixels")
    if not (np.all((a >= 0) & (a <= 1)) and np.all((f >= 0) & (f <= 1))):
        raise InputError("calibration: agreement and reader frequency must lie in [0, 1] (no NaN)")
    if int(bins) != bins or bins < 1:
        raise InputError(f"calibration: bins must be a positive integer, got {bins}")
    bins = int(bins)
    idx = np.minimum((a * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=a, minlength=bins) / count
        freq = np.bincount(idx, weights=f, minlength=bins) / count
    full = count > 0
    ece = float(np.sum(count[full] * np.abs(conf[full] - freq[full])) / a.size)
    return {"ece": ece, "bin_confidence": conf, "bin_frequency": freq, "bin_count": count}


def reliability_diagram(cal: dict, path, title: str | None = None,
                        xlabel: str = "predicted agreement",
                        ylabel: str = "fraction of readers") -> Path:
    """Write a reliability diagram (PNG) of a `calibration` result to `path`; returns the path.

    Draws on a standalone Agg canvas (no pyplot), so it never changes the session's backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    count = np.asarray(cal["bin_count"])
    bins = len(count)
    full = count > 0
    conf, freq = np.asarray(cal["bin_confidence"])[full], np.asarray(cal["bin_frequency"])[full]
    fig = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.bar((np.flatnonzero(full) + 0.5) / bins, freq, width=1 / bins, edgecolor="k", alpha=0.6,
           label="reader frequency")
    ax.plot(conf, freq, "o", color="C3", ms=4, label="bin means")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title or f"ECE = {cal['ece']:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as e:
        raise WriteError(f"cannot write the reliability diagram to {path}: {e}") from e
    return path


# --------------------------------------------------------------------------- per image
def evaluate_set(samples, truths) -> dict:
    """All per-image metrics: ged, hm_iou, ci, s_c, d_max, d_a, s_ncc (floats)."""
    s, y = _pair(samples, truths)
    n = len(s)
    iou_j, dice_j = _joint(s, y)
    return {"ged": _ged(iou_j, n), "hm_iou": _hm_iou(iou_j[:n, n:]), **_ci(s, y, dice_j), "s_ncc": s_ncc(s, y)}


def summarize(per_image: list[dict]) -> dict:
    """Mean of each metric over images (all dicts must have the same keys)."""
    if not per_image:
        raise InputError("summarize: no images")
    keys = list(per_image[0])
    if any(set(r) != set(keys) for r in per_image):
        raise InputError("summarize: the per-image results do not all have the same metrics")
    return {k: float(np.mean([r[k] for r in per_image])) for k in keys}
