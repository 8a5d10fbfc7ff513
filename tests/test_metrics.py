"""Hand-computed checks of napari_ambiseg.metrics (1-D-like masks of shape (1, W) unless stated)."""

import math

import numpy as np
import pytest

from napari_ambiseg import metrics as M
from napari_ambiseg.errors import InputError


def masks(*rows):
    """Stack of (1, W) masks from 0/1 strings, e.g. masks("1100", "0110") -> (2, 1, 4) bool."""
    return np.array([[[c == "1" for c in r]] for r in rows])


def disk(cy, cx, r, size=32):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ------------------------------------------------------------------------ IoU / Dice
def test_iou_dice_basic_and_empty_conventions():
    a, b = masks("1100")[0], masks("0110")[0]
    assert M.iou(a, b) == pytest.approx(1 / 3)
    assert M.dice(a, b) == pytest.approx(1 / 2)
    empty = masks("0000")[0]
    assert M.iou(empty, empty) == 1.0
    assert M.dice(empty, empty) == 1.0
    assert M.iou(empty, a) == 0.0 and M.iou(a, empty) == 0.0
    assert M.dice(empty, a) == 0.0


def test_accepts_uint8_int_and_binary_float():
    a = masks("1100")[0]
    assert M.iou(a.astype(np.uint8) * 255, a.astype(np.int64)) == 1.0
    assert M.iou(a.astype(np.float32), masks("0110")[0]) == pytest.approx(1 / 3)


def test_pairwise_matches_naive_loop():
    rng = np.random.default_rng(0)
    A = rng.random((7, 9, 11)) < 0.3
    B = rng.random((5, 9, 11)) < 0.5
    A[2] = False  # an empty mask against non-empty ones
    B[4] = False  # and empty vs empty
    want_iou = np.array([[M.iou(a, b) for b in B] for a in A])
    want_dice = np.array([[2 * (a & b).sum() / (a.sum() + b.sum()) if a.any() or b.any() else 1.0
                           for b in B] for a in A])
    naive_iou = np.array([[(a & b).sum() / (a | b).sum() if (a | b).any() else 1.0 for b in B] for a in A])
    got = M.pairwise_iou(A, B)
    assert got.shape == (7, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got, naive_iou, rtol=0, atol=1e-12)
    np.testing.assert_allclose(want_iou, naive_iou, atol=1e-12)
    np.testing.assert_allclose(M.pairwise_dice(A, B), want_dice, atol=1e-12)
    assert got[2, 4] == 1.0 and got[2, 0] == 0.0


# ------------------------------------------------------------------------------- GED
def test_ged_identical_sets_is_zero():
    one = masks("0110")
    assert M.ged(np.repeat(one, 5, 0), np.repeat(one, 3, 0)) == pytest.approx(0.0, abs=1e-12)
    s = masks("1100", "0110", "0011")
    assert M.ged(s, s) == pytest.approx(0.0, abs=1e-12)


def test_ged_disjoint_single_masks_is_two():
    assert M.ged(masks("1100"), masks("0011")) == pytest.approx(2.0)


def test_ged_empty_vs_empty_is_zero():
    assert M.ged(masks("0000", "0000"), masks("0000")) == 0.0


def test_ged_partial_overlap_by_hand():
    # S = {a, b}, Y = {b}, d(a, b) = 1 - 1/3 = 2/3.
    # E d(S,Y) = (2/3 + 0)/2 = 1/3; E d(S,S') over 4 pairs (self-pairs in) = 1/3; E d(Y,Y') = 0.
    # GED = 2/3 - 1/3 - 0 = 1/3 (without self-pairs E d(S,S') would be 2/3 and GED 0).
    assert M.ged(masks("1100", "0110"), masks("0110")) == pytest.approx(1 / 3)
    # single masks: GED = 2 (1 - 1/3) = 4/3
    assert M.ged(masks("1100"), masks("0110")) == pytest.approx(4 / 3)
    # the same case split into its terms
    t = M.ged_terms(masks("1100", "0110"), masks("0110"))
    assert t == pytest.approx({"cross": 1 / 3, "within_samples": 1 / 3, "within_truths": 0.0})


# ---------------------------------------------------------------------------- HM-IoU
def test_hm_iou_identical_and_disjoint():
    s = masks("1100", "0011")
    assert M.hm_iou(s, s) == pytest.approx(1.0)
    assert M.hm_iou(np.repeat(s, 3, 0), s) == pytest.approx(1.0)
    assert M.hm_iou(masks("1100"), masks("0011")) == 0.0


def test_hm_iou_unequal_n_m_by_hand():
    # N = 2 samples, M = 3 truths -> L = 6: each sample 3 times, each truth twice.
    # IoU(S1, .) = [1, 0, 0]; IoU(S2, .) = [0, 1/2, 1/2].
    # Best: S1 copies take Y1, Y1 and one zero; S2 copies take 3 columns at 1/2.
    # Mean = (1 + 1 + 0 + 3 * 0.5) / 6 = 7/12 (a plain 2x3 assignment would give 0.75).
    y = masks("110000", "001100", "000011")
    s = masks("110000", "001111")
    assert M.hm_iou(s, y) == pytest.approx(7 / 12)


# --------------------------------------------------------------------------------- CI
def test_combined_sensitivity_vs_swapped_precision():
    y, s = masks("1100"), masks("0111")
    assert M.combined_sensitivity(s, y) == pytest.approx(1 / 2)  # |{1}| / |{0,1}|
    assert M.combined_sensitivity(y, s) == pytest.approx(1 / 3)  # swapped: precision |{1}| / |{1,2,3}|
    assert M.combined_sensitivity(s, masks("0000")) == 1.0


def test_d_max_d_a_ci_by_hand():
    y = masks("1100", "1000")
    s = masks("1100", "0011", "1111")
    # V_Y = {1 - 2/3} = {1/3}; V_S = {1 - 0, 1 - 2/3, 1 - 2/3} = {1, 1/3, 1/3}
    # D_a = 1 - (|1 - 1/3| + |1/3 - 1/3|)/2 = 2/3
    assert M.diversity_agreement(s, y) == pytest.approx(2 / 3)
    # D_max: Y1 -> S1 (1); Y2 -> max(2/3, 0, 2/5) = 2/3; mean 5/6 (the S->Y direction gives 5/9)
    assert M.max_dice_matching(s, y) == pytest.approx(5 / 6)
    # S_c = 1; CI = 3 * 1 * 5/6 * 2/3 / (1 + 5/6 + 2/3) = 2/3 (harmonic mean would be 30/37)
    ci = M.collective_insight(s, y)
    assert set(ci) == {"ci", "s_c", "d_max", "d_a"}
    assert ci["s_c"] == 1.0
    assert ci["ci"] == pytest.approx(2 / 3)
    assert ci["ci"] != pytest.approx(30 / 37)


def test_d_a_single_mask_sets_and_ci_zero():
    # one mask each: V = {0} on both sides -> D_a = 1
    assert M.diversity_agreement(masks("1100"), masks("0011")) == 1.0
    # V_S = {1}, V_Y = {0} -> D_a = 0; disjoint unions -> S_c = 0, D_max = 0; CI = 0/0 defined as 0
    ci = M.collective_insight(masks("1000", "0100"), masks("0011", "0011"))
    assert ci["s_c"] == 0.0 and ci["d_max"] == 0.0 and ci["d_a"] == 0.0
    assert ci["ci"] == 0.0


# ----------------------------------------------------------------------------- S_NCC
def test_s_ncc_known_cases():
    s = masks("1100", "1000")
    # truths that agree with the samples wherever the samples agree: E_sy == E_ss -> NCC 1
    assert M.s_ncc(s, masks("1000", "1100")) == pytest.approx(1.0)
    # truth "0000": with a = -log eps, b = -log(1 - eps), E_ss = b + [0, (a-b)/2, 0, 0],
    # E_sy = b + [a-b, (a-b)/2, 0, 0]  ->  NCC([0, .5, 0, 0], [1, .5, 0, 0]) = 1/sqrt(33)
    assert M.s_ncc(s, masks("0000")) == pytest.approx(1 / math.sqrt(33))
    # identical samples: E_ss is constant -> NCC defined as 0
    assert M.s_ncc(masks("1100", "1100"), masks("1000")) == 0.0
    # probabilities equal to the binary masks give the same value
    assert M.s_ncc(s.astype(np.float64), masks("0000")) == pytest.approx(1 / math.sqrt(33))


def test_s_ncc_range_on_random_sets():
    rng = np.random.default_rng(1)
    for _ in range(10):
        v = M.s_ncc(rng.random((8, 16, 16)) < 0.4, rng.random((4, 16, 16)) < 0.4)
        assert -1.0 <= v <= 1.0
    v = M.s_ncc(rng.random((8, 16, 16)), rng.random((4, 16, 16)) < 0.4)
    assert -1.0 <= v <= 1.0


# ----------------------------------------------------------------------- calibration
def test_calibration_perfect_is_zero():
    rng = np.random.default_rng(2)
    f = rng.integers(0, 5, size=(3, 8, 8)) / 4  # reader frequencies k/4, stacked (K, H, W)
    cal = M.calibration(f, f)
    assert cal["ece"] == pytest.approx(0.0, abs=1e-12)
    assert cal["bin_count"].sum() == f.size and len(cal["bin_count"]) == 10


def test_calibration_known_miscalibration():
    # bin 0: agreement (0, 0) vs frequency (0, .5) -> gap .25, n = 2
    # bin 5: .55 vs .25 -> gap .30, n = 1; bin 9 (closed, holds 1.0): 1 vs 1 -> 0, n = 1
    # ECE = (2 * .25 + .30 + 0) / 4 = .2
    a = np.array([[0.0, 0.0], [0.55, 1.0]])
    f = np.array([[0.0, 0.5], [0.25, 1.0]])
    cal = M.calibration(a, f)
    assert cal["ece"] == pytest.approx(0.2)
    np.testing.assert_array_equal(cal["bin_count"], [2, 0, 0, 0, 0, 1, 0, 0, 0, 1])
    assert cal["bin_confidence"][5] == pytest.approx(0.55) and cal["bin_frequency"][0] == pytest.approx(0.25)
    assert np.isnan(cal["bin_confidence"][1])


def test_reliability_diagram_writes_png(tmp_path):
    cal = M.calibration(np.array([0.0, 0.55, 1.0]), np.array([0.25, 0.25, 1.0]))
    out = M.reliability_diagram(cal, tmp_path / "rel.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------- per image / summary
def test_evaluate_set_and_summarize():
    s, y = masks("1100", "0011"), masks("1100", "0110", "0011")
    r = M.evaluate_set(s, y)
    assert set(r) == {"ged", "hm_iou", "ci", "s_c", "d_max", "d_a", "s_ncc"}
    assert r["ged"] == pytest.approx(M.ged(s, y)) and r["hm_iou"] == pytest.approx(M.hm_iou(s, y))
    assert r["ci"] == pytest.approx(M.collective_insight(s, y)["ci"]) and r["s_ncc"] == pytest.approx(M.s_ncc(s, y))
    summary = M.summarize([r, M.evaluate_set(y, y)])
    assert summary["ged"] == pytest.approx((r["ged"] + 0.0) / 2)
    assert summary["hm_iou"] == pytest.approx((r["hm_iou"] + 1.0) / 2)


def test_ged16_readers_resampled_beats_majority_copies():
    """Synthetic LIDC-like case: 4 readers drawing the same nodule differently."""
    rng = np.random.default_rng(3)
    geds = {"exact": [], "resampled": [], "majority": []}
    for _ in range(20):
        cy, cx = rng.integers(12, 20, 2)
        readers = np.stack([disk(cy + rng.integers(-2, 3), cx + rng.integers(-2, 3), rng.integers(3, 8))
                            for _ in range(4)])
        readers[rng.integers(4)] = False  # one reader often sees no nodule
        majority = readers.sum(0) >= 2
        geds["exact"].append(M.ged(np.repeat(readers, 4, 0), readers))
        geds["resampled"].append(M.ged(readers[rng.integers(0, 4, 16)], readers))
        geds["majority"].append(M.ged(np.repeat(majority[None], 16, 0), readers))
    assert np.allclose(geds["exact"], 0.0, atol=1e-12)  # same empirical distribution
    assert np.mean(geds["resampled"]) < 0.1
    assert np.mean(geds["majority"]) > 2 * np.mean(geds["resampled"])


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call",
    [
        lambda: M.ged(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool)),  # H, W mismatch
        lambda: M.ged(np.zeros((4, 4), bool), np.zeros((2, 4, 4), bool)),  # not a stack
        lambda: M.hm_iou(np.zeros((0, 4, 4), bool), np.zeros((2, 4, 4), bool)),  # empty set
        lambda: M.pairwise_iou(np.zeros((2, 4, 4)), np.full((2, 4, 4), 0.5)),  # probabilities, not masks
        lambda: M.iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool)),
        lambda: M.s_ncc(np.full((2, 4, 4), 1.5), np.zeros((2, 4, 4), bool)),
        lambda: M.calibration(np.zeros((2, 3)), np.zeros((3, 2))),
        lambda: M.calibration(np.array([0.5, np.nan]), np.array([0.5, 0.5])),
        lambda: M.summarize([]),
    ],
)
def test_input_errors(call):
    with pytest.raises(InputError):
        call()
