import math

import pytest
import torch

from napari_ambiseg.diffusion import Denoiser, Schedule, convert, loss_weight, sample_masks, time_grid
from napari_ambiseg.errors import Cancelled


def test_cosine_snr_one_moves_with_input_scale():
    t = torch.tensor([0.5], dtype=torch.float64)
    assert Schedule("cosine", 1.0).logsnr(t).item() == pytest.approx(0.0, abs=1e-5)
    t_b = torch.tensor([2 / math.pi * math.atan(0.1)])
    assert Schedule("cosine", 0.1).logsnr(t_b).item() == pytest.approx(0.0, abs=1e-4)


def test_input_scale_matches_gamma_formula():
    b, t = 0.1, torch.linspace(0.05, 0.95, 19)
    gamma = torch.cos(math.pi * t.double() / 2) ** 2
    gamma_b = b**2 * gamma / ((b**2 - 1) * gamma + 1)
    got = Schedule("cosine", b).gamma(t).double()
    assert torch.allclose(got, gamma_b, rtol=1e-4)
    # SNR_b = b^2 SNR: the log-SNR shifts by 2 ln b everywhere (away from the clamp)
    shift = Schedule("cosine", b).logsnr(t) - Schedule("cosine", 1.0).logsnr(t)
    assert torch.allclose(shift, torch.full_like(shift, 2 * math.log(b)), atol=1e-4)


def test_linear_schedule_is_ddpm_limit_and_monotone():
    t = torch.linspace(0.01, 0.99, 50)
    gamma = Schedule("linear", 1.0).gamma(t).double()
    expected = torch.exp(-(0.1 * t.double() + 0.5 * 19.9 * t.double() ** 2))
    assert torch.allclose(gamma, expected, rtol=1e-3)
    assert (torch.diff(Schedule("linear", 1.0).logsnr(t)) < 0).all()


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_clamp_and_unit_variance(kind):
    s = Schedule(kind, 0.1, -20, 20)
    ends = s.logsnr(torch.tensor([0.0, 1.0]))
    # cosine reaches the clamp at t = 1; linear ends at logSNR = -log(expm1(10.05)) + 2 ln b
    end = -20.0 if kind == "cosine" else -math.log(math.expm1(10.05)) + 2 * math.log(0.1)
    assert ends.tolist() == pytest.approx([20.0, end], abs=1e-3)
    lam = s.logsnr(torch.rand(100))
    a, sg = Schedule.alpha_sigma(lam)
    assert torch.allclose(a**2 + sg**2, torch.ones(100), atol=1e-6)
    x = torch.randint(0, 2, (2000, 1, 4, 4)).float() * 2 - 1  # masks in {-1, +1}
    x_t, _, _ = s.add_noise(x, torch.full((2000,), 0.3))
    assert x_t.var().item() == pytest.approx(1.0, abs=0.05)


def test_prediction_types_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, generator=g).tanh()
    eps = torch.randn(64, generator=g)
    a, s = Schedule.alpha_sigma(torch.empty(64).uniform_(-8, 8, generator=g))
    x_t = a * x + s * eps
    truth = {"x": x, "eps": eps, "v": a * eps - s * x}
    for src in truth:
        for dst in truth:
            got = convert(truth[src], x_t, a, s, src, dst)
            assert torch.allclose(got, truth[dst], atol=1e-4), (src, dst)


def test_loss_weights_are_eps_and_v_losses():
    g = torch.Generator().manual_seed(1)
    lam = torch.empty(32).uniform_(-6, 6, generator=g)
    a, s = Schedule.alpha_sigma(lam)
    x, eps = torch.randn(32, generator=g), torch.randn(32, generator=g)
    x_t = a * x + s * eps
    x_hat = x + 0.1 * torch.randn(32, generator=g)
    eps_hat = convert(x_hat, x_t, a, s, "x", "eps")
    v_hat, v = convert(x_hat, x_t, a, s, "x", "v"), a * eps - s * x
    err_x = (x_hat - x) ** 2
    assert torch.allclose(loss_weight(lam, "snr") * err_x, (eps_hat - eps) ** 2, rtol=1e-3)
    assert torch.allclose(loss_weight(lam, "snr+1") * err_x, (v_hat - v) ** 2, rtol=1e-3)
    assert torch.equal(loss_weight(lam, "1"), torch.ones(32))
    assert torch.allclose(loss_weight(lam, "sigmoid", 2.0), torch.sigmoid(lam - 2.0))


def test_time_grid():
    assert time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError):
        time_grid(0)


def _run(sampler, seed, steps=10, calls=None, target=None, prediction="x"):
    def denoise(x_t, logsnr):
        if calls is not None:
            calls.append(float(logsnr[0]))
        if target is not None and prediction == "x":  # a perfect denoiser: x_hat is the target
            return target.expand_as(x_t)
        raw = target.expand_as(x_t) if target is not None else x_t
        return Denoiser(prediction).x_hat(raw, x_t, logsnr)

    return sample_masks(denoise, Schedule("cosine", 0.1), (3, 1, 8, 8), steps=steps,
                        sampler=sampler,
                        generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampler_steps_determinism_and_perfect_denoiser(sampler):
    calls = []
    a = _run(sampler, 0, steps=7, calls=calls)
    assert len(calls) == 7 and calls == sorted(calls)  # one evaluation per step, noise falls
    assert torch.equal(a, _run(sampler, 0, steps=7))
    target = torch.where(torch.rand(1, 1, 8, 8) > 0.5, 1.0, -1.0)
    assert torch.equal(_run(sampler, 3, target=target), target.expand(3, 1, 8, 8))


def test_ddpm_seeds_differ_and_eps_prediction_works():
    assert not torch.equal(_run("ddpm", 0), _run("ddpm", 1))
    out = _run("ddpm", 0, prediction="eps", target=torch.zeros(1, 1, 8, 8))
    assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all()


def test_sampler_cancel():
    calls = []

    def denoise(x_t, logsnr):
        calls.append(1)
        return torch.zeros_like(x_t)

    with pytest.raises(Cancelled):
        sample_masks(denoise, Schedule(), (1, 1, 4, 4), steps=10,
                     should_stop=lambda: len(calls) >= 2)
    assert len(calls) == 2
