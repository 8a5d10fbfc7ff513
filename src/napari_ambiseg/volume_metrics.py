"""Metrics of sampled 3D outlines against readers' outlines of a stack of slices.

Conventions (docs/benchmarks.md, "Volumes"):

* Reader tracks: in the LIDC crops reader order carries no identity across slices, so readers
  are linked into 3D tracks (`link_readers`): going up the stack, the outlines of slice z + 1
  are assigned to the tracks by the Hungarian assignment that maximises the total Dice with
  each track's last non-empty outline (pairs with an empty mask score 0). Empty masks are
  interchangeable, so where they are linked does not matter. Each track is one reader's 3D
  outline.
* 3D GED and HM-IoU: `metrics.ged` / `metrics.hm_iou` with each 3D outline as one mask (IoU
  over all voxels of the stack).
* Slice-to-slice Dice: for every 3D outline (a sample, or a reader track), Dice between its
  masks on consecutive slices, over pairs where not both are empty; pooled over outlines,
  stacks and pairs. It measures how coherent one hypothesis is through the slices.
* Volume distribution distance: Wasserstein-1 distance between the samples' and the readers'
  equivalent-sphere diameters, d = (6 V / pi)^(1/3) in mm (V in mm^3, an empty outline has
  d = 0): how far apart the two size distributions are, in mm, with "nothing there" on the
  same scale.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import wasserstein_distance

from . import metrics


def reader_links(masks: np.ndarray) -> np.ndarray:
    """(Z, R, H, W) masks, reader order per slice -> (Z, R) indices: track t on slice z is
    reader `links[z, t]` (the Hungarian linking described above)."""
    masks = np.asarray(masks, dtype=bool)
    z_count, r = masks.shape[:2]
    links = np.tile(np.arange(r), (z_count, 1))
    last = list(masks[0])
    for z in range(1, z_count):
        score = metrics.pairwise_dice(np.stack(last), masks[z])
        filled = np.array([m.any() for m in last])[:, None] & masks[z].reshape(r, -1).any(1)[None]
        tracks, readers = linear_sum_assignment(np.where(filled, score, 0.0), maximize=True)
        links[z, tracks] = readers
        for t in tracks:
            if masks[z, links[z, t]].any():
                last[t] = masks[z, links[z, t]]
    return links


def link_readers(masks: np.ndarray) -> np.ndarray:
    """(Z, R, H, W) masks, reader order per slice -> (R, Z, H, W) reader tracks."""
    masks = np.asarray(masks, dtype=bool)
    links = reader_links(masks)
    return masks[np.arange(len(masks))[:, None], links].transpose(1, 0, 2, 3)


def slice_dice(outlines: np.ndarray) -> list[float]:
    """Dice between consecutive slices of each 3D outline of (K, Z, H, W), over the pairs
    where not both masks are empty."""
    outlines = np.asarray(outlines, dtype=bool)
    flat = outlines.reshape(*outlines.shape[:2], -1)
    size = flat.sum(-1)
    inter = (flat[:, 1:] & flat[:, :-1]).sum(-1)
    pair = size[:, 1:] + size[:, :-1]
    return [float(2 * i / p) for i, p in zip(inter.ravel(), pair.ravel()) if p > 0]


def equivalent_diameter(volume_mm3) -> np.ndarray:
    """Diameter (mm) of the sphere of the same volume; 0 for an empty outline."""
    return np.cbrt(6.0 * np.asarray(volume_mm3, dtype=float) / np.pi)


def volume_distance(sample_mm3, reader_mm3) -> float:
    """Wasserstein-1 distance (mm) between equivalent-diameter distributions."""
    return float(wasserstein_distance(equivalent_diameter(sample_mm3),
                                      equivalent_diameter(reader_mm3)))


def stack_metrics(samples: np.ndarray, tracks: np.ndarray,
                  voxel_mm3: float | None = None) -> dict:
    """3D figures of one stack: samples (N, Z, H, W) against reader tracks (R, Z, H, W)."""
    n, z, h, w = samples.shape
    s3, y3 = samples.reshape(n, z * h, w), tracks.reshape(len(tracks), z * h, w)
    out = {"ged": metrics.ged(s3, y3), "hm_iou": metrics.hm_iou(s3, y3),
           "ged_2d": float(np.mean([metrics.ged(samples[:, k], tracks[:, k]) for k in range(z)])),
           "hm_iou_2d": float(np.mean([metrics.hm_iou(samples[:, k], tracks[:, k])
                                       for k in range(z)])),
           "slice_dice_samples": slice_dice(samples), "slice_dice_readers": slice_dice(tracks),
           "sample_voxels": samples.reshape(n, -1).sum(1).tolist(),
           "reader_voxels": tracks.reshape(len(tracks), -1).sum(1).tolist()}
    if voxel_mm3 is not None:
        out["volume_w1_mm"] = volume_distance(np.array(out["sample_voxels"]) * voxel_mm3,
                                              np.array(out["reader_voxels"]) * voxel_mm3)
    return out
