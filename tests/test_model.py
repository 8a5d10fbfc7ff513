import pytest
import torch

from napari_ambiseg.diffusion import Denoiser
from napari_ambiseg.models import build_model
from napari_ambiseg.models.network import Gaussian
from napari_ambiseg.testing import tiny_config


def _randomised(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # escape the zero-initialised output layers
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def test_forward_shapes_and_x_head_range():
    cfg = tiny_config()
    m = _randomised(build_model(cfg))
    out, kl, _ = m(torch.randn(4, 1, 32, 32), torch.zeros(4), torch.randn(4, 1, 32, 32))
    assert out.shape == (4, 1, 32, 32) and kl.shape == (4,) and (kl == 0).all()
    x_hat = Denoiser.from_config(cfg).x_hat(out * 10, torch.randn(4, 1, 32, 32), torch.zeros(4))
    assert x_hat.abs().max() <= 1  # x-prediction: the raw output goes through tanh in Denoiser
    assert torch.allclose(x_hat, torch.tanh(out * 10))


def test_image_features_broadcast_over_samples():
    """Encoding the image once and broadcasting equals encoding it for every sample."""
    m = _randomised(build_model(tiny_config()))
    img, x = torch.randn(1, 1, 32, 32), torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        once = m.denoise(x, torch.full((5,), 1.5), m.encode_image(img))
        every = m.denoise(x, torch.full((5,), 1.5), m.encode_image(img.expand(5, -1, -1, -1)))
    assert torch.allclose(once, every, atol=1e-5)


def test_latent_conditions_the_denoiser():
    cfg = tiny_config(latent_dim=4, mask_widths=(8, 16, 24))  # encoder and denoiser widths differ
    m = _randomised(build_model(cfg))
    img, x = torch.randn(1, 1, 32, 32), torch.randn(2, 1, 32, 32)
    feats = m.encode_image(img)
    with torch.no_grad():
        a = m.denoise(x, torch.zeros(2), feats, torch.zeros(2, 4))
        b = m.denoise(x, torch.zeros(2), feats, torch.ones(2, 4))
    assert (a - b).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="latent"):
        m.denoise(x, torch.zeros(2), feats, None)


def test_latent_training_pass_has_kl_and_gradients_reach_both_encoders():
    cfg = tiny_config(latent_dim=4)
    m = _randomised(build_model(cfg)).train()
    img, mask = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32).sign()
    out, kl, _ = m(torch.randn(3, 1, 32, 32), torch.zeros(3), img, mask)
    assert (kl >= 0).all() and kl.sum() > 0
    (out.square().mean() + kl.mean()).backward()
    post = [p.grad for p in m.latent.posterior_enc.parameters()]
    prior = [p.grad for p in m.latent.prior_head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in post + prior)


def test_gaussian_kl():
    mu, lv = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(Gaussian(mu, lv).kl(Gaussian(mu, lv)), torch.zeros(2), atol=1e-6)
    # KL(N(1,1) || N(0,1)) = 0.5 per dimension
    one = Gaussian(torch.ones(1, 2), torch.zeros(1, 2))
    assert one.kl(Gaussian(torch.zeros(1, 2), torch.zeros(1, 2))).item() == pytest.approx(1.0)
