"""Is there a finding, and on which slices: the existence decisions of N samples (Qt-free).

A model with an existence head gives p(z) = p(readers would outline a finding | crop of slice
z). Sample k carries one uniform draw u_k, shared by every slice it is sampled on, and sees a
finding on slice z where u_k < q(z). On one image q = p. Along a slab, q is p's *envelope
from its peak*: the running minimum of p going outward from the slice where p is highest,
so every sample's finding is one run of slices that contains the peak (a finding does not
stop and start again), and the decisions depend on the slab, not on the slice sampling
starts from (the plan: `volume_sampling._Existence`).

Given a finding at a slice s ("what would experts outline here?"): conditioning
"u_k < q(s)" draws u_k uniform below q(s), i.e. u_k * q(s); every sample then exists on s
and still begins and ends along z where q says so. The draws are stratified
(`existence_draws`), so floor(qN) or ceil(qN) samples see a finding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where the draws are made, not with the module: the
    import torch  # volume sampler (and the docks importing it) must open without PyTorch


def existence_draws(generator: torch.Generator, rows: int, n: int) -> torch.Tensor:
    """(rows, n) uniforms, one in each stratum [j/n, (j+1)/n) in random order per row; sample
    k exists where its draw is below p. Stratified rather than independent: the number that
    exist is floor(pn) or ceil(pn) (pn on average, so calibration is kept) instead of a
    binomial count, which costs HM-IoU and GED (docs/benchmarks.md, "Existence")."""
    import torch

    order = torch.rand((rows, n), generator=generator).argsort(1)
    return (order + torch.rand((rows, 1), generator=generator)) / n


def sample_draws(seed: int, n: int) -> np.ndarray:
    """The (n,) existence draws of one input sampled alone with `seed`: the first thing its
    random stream gives (`Segmenter.draw`), so planning them ahead changes no noise."""
    import torch

    return existence_draws(torch.Generator().manual_seed(int(seed)), 1, n)[0].numpy()


def peak_slice(p: np.ndarray, prefer: int | None = None) -> int:
    """Index of the highest p; ties go to the one nearest `prefer` (else the middle)."""
    p = np.asarray(p, float)
    prefer = len(p) // 2 if prefer is None else prefer
    best = np.flatnonzero(p >= p.max() - 1e-6)
    return int(best[np.argmin(np.abs(best - prefer))])


def envelope(p: np.ndarray, peak: int) -> np.ndarray:
    """The running minimum of p outward from `peak`: the probability that a finding seen at
    the peak still reaches each slice (non-increasing away from it)."""
    q = np.asarray(p, float).copy()
    for z in range(peak + 1, len(q)):
        q[z] = min(q[z], q[z - 1])
    for z in range(peak - 1, -1, -1):
        q[z] = min(q[z], q[z + 1])
    return q
