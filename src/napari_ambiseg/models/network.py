"""AmbiSegNet: conditional diffusion denoiser designed for CPU speed.

The cost is split so that the work done per sample and per step is small:
- `ImageEncoder` sees the image crop once per request and yields features at 1/2, 1/4 and 1/8
  of the crop size; they are reused by every sample and every step.
- `MaskDenoiser` sees the noisy mask folded 2x2 into channels (space-to-depth), so its
  finest level is at half resolution, adds the image features at each level, and is
  conditioned on the noise level and (optionally) on an ambiguity latent z through FiLM; its raw
  output is read through `diffusion.Denoiser` (prediction type, tanh for x-prediction).
- `ExistenceHead` (optional): p(finding | crop) from the pooled deepest image features, trained
  with a proper scoring rule (BCE on the readers' non-empty share); sampling draws "is there a
  finding" per sample from it, then the outline (docs/model_card.md, "Existence").
- Neighbour conditioning (optional): the denoiser also sees the same sample's mask on the
  adjacent slice (folded like x_t, through a zero-initialised conv) plus a learnt "has a
  neighbour" embedding, so sample k on slice z + 1 continues sample k on slice z.
- Click conditioning (optional, issue #25): `ClickEncoder` turns the annotator's include /
  exclude clicks (two disk maps) and the mask they were made on into additions to the image
  features at every scale, through zero-initialised 1x1 convs (ControlNet's idea), once per
  request; items without clicks keep the image features as they are, so the unsteered model
  is the one it was fine-tuned from.
- `LatentNets` (CIMD-style): a prior over z from the image features and a posterior from image
  and expert mask, both diagonal Gaussians, trained with KL(posterior || prior). At sampling
  time z is drawn from the prior, one per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .blocks import ResBlock, group_norm, sinusoidal_embedding


class ImageEncoder(nn.Module):
    def __init__(self, in_ch: int, widths: tuple[int, ...], out_widths: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Conv2d(in_ch, widths[0], 3, padding=1)
        self.full = ResBlock(widths[0], widths[0])
        self.downs = nn.ModuleList()
        self.blocks = nn.ModuleList()
        prev = widths[0]
        for w in widths:
            self.downs.append(nn.Conv2d(prev, w, 3, stride=2, padding=1))
            self.blocks.append(nn.ModuleList([ResBlock(w, w), ResBlock(w, w)]))
            prev = w
        self.proj = nn.ModuleList(nn.Conv2d(w, o, 1) for w, o in zip(widths, out_widths))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        h = self.full(self.stem(image))
        feats = []
        for down, blocks, proj in zip(self.downs, self.blocks, self.proj):
            h = down(h)
            for b in blocks:
                h = b(h)
            feats.append(proj(h))
        return feats


class MaskDenoiser(nn.Module):
    def __init__(self, cfg: ModelConfig, emb_dim: int):
        super().__init__()
        w, s = cfg.mask_widths, cfg.space_to_depth
        self.s = s
        self.inp = nn.Conv2d(s * s, w[0], 3, padding=1)
        self.enc = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, wi in enumerate(w):
            self.enc.append(ResBlock(wi, wi, emb_dim))
            if i + 1 < len(w):
                self.downs.append(nn.Conv2d(wi, w[i + 1], 3, stride=2, padding=1))
        self.mid = ResBlock(w[-1], w[-1], emb_dim)
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(w) - 1, 0, -1):
            self.ups.append(nn.Conv2d(w[i], w[i - 1], 1))
            self.dec.append(ResBlock(w[i - 1], w[i - 1], emb_dim))
        # the same sample's mask on the adjacent slice (zero-initialised: starts as "ignored")
        self.neighbour = nn.Conv2d(s * s, w[0], 3, padding=1) if cfg.neighbour_conditioning else None
        if self.neighbour is not None:
            nn.init.zeros_(self.neighbour.weight)
            nn.init.zeros_(self.neighbour.bias)
        self.out_norm = group_norm(w[0])
        self.out = nn.Conv2d(w[0], s * s, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, feats: list[torch.Tensor], emb: torch.Tensor,
                neighbour: torch.Tensor | None = None):
        h = self.inp(F.pixel_unshuffle(x_t, self.s)) + feats[0]
        if self.neighbour is not None and neighbour is not None:
            h = h + self.neighbour(F.pixel_unshuffle(neighbour, self.s))
        skips = []
        for i, block in enumerate(self.enc):
            if i > 0:
                h = self.downs[i - 1](h) + feats[i]
            h = block(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        for up, block, skip in zip(self.ups, self.dec, reversed(skips[:-1])):
            h = F.interpolate(up(h), scale_factor=2, mode="nearest") + skip
            h = block(h, emb)
        return F.pixel_shuffle(self.out(F.silu(self.out_norm(h))), self.s)


CLICK_CHANNELS = 3  # include disks, exclude disks, the mask the clicks were made on


class ClickEncoder(nn.Module):
    """Click maps (B, 3, crop, crop) in {0, 1}: include disks, exclude disks and the mask
    the clicks were made on (zeros when unknown) -> the image features (`ImageEncoder`'s, one
    per scale) steered by them. The maps are folded like the mask, meet the image features
    at each scale, and come back through zero-initialised 1x1 convs: a fresh encoder changes
    nothing."""

    def __init__(self, widths: tuple[int, ...], s: int):
        super().__init__()
        self.s = s
        self.stem = nn.Conv2d(CLICK_CHANNELS * s * s, widths[0], 3, padding=1)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1)
                                   for a, b in zip(widths, widths[1:]))
        self.blocks = nn.ModuleList(nn.ModuleList([ResBlock(w, w), ResBlock(w, w)])
                                    for w in widths)
        self.zero = nn.ModuleList(nn.Conv2d(w, w, 1) for w in widths)
        for conv in self.zero:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: list[torch.Tensor], clicks: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(F.pixel_unshuffle(clicks.to(feats[0].dtype), self.s))
        out = []
        for i, (f, blocks, zero) in enumerate(zip(feats, self.blocks, self.zero)):
            if i:
                h = self.downs[i - 1](h)
            h = h + f
            for block in blocks:
                h = block(h)
            out.append(f + zero(h))
        return out


@dataclass
class Gaussian:
    mu: torch.Tensor
    logvar: torch.Tensor

    def rsample(self) -> torch.Tensor:
        return self.mu + (0.5 * self.logvar).exp() * torch.randn_like(self.mu)

    def kl(self, other: Gaussian) -> torch.Tensor:
        """KL(self || other), summed over latent dims, one value per batch item."""
        v1, v2 = self.logvar.exp(), other.logvar.exp()
        return 0.5 * (other.logvar - self.logvar + (v1 + (self.mu - other.mu) ** 2) / v2 - 1).sum(1)


class ExistenceHead(nn.Module):
    """Logit of p(finding on this slice | crop) from mean- and max-pooled deepest features."""

    def __init__(self, width: int, hidden: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * width, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([deepest.mean((2, 3)), deepest.amax((2, 3))], 1)
        return self.mlp(pooled.float())[:, 0]


class LatentNets(nn.Module):
    """Prior p(z | image) and posterior q(z | image, mask) (Prob.U-Net / CIMD style)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, wl = cfg.latent_dim, cfg.mask_widths[-1]  # prior sees the projected image features
        self.prior_head = nn.Sequential(nn.Linear(wl, 64), nn.SiLU(), nn.Linear(64, 2 * d))
        widths = cfg.image_widths
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels + 1, widths[0], 3, padding=1)]
        prev = widths[0]
        for w in widths:
            layers += [nn.Conv2d(prev, w, 3, stride=2, padding=1), group_norm(w), nn.SiLU()]
            prev = w
        self.posterior_enc = nn.Sequential(*layers)
        self.posterior_head = nn.Sequential(nn.Linear(prev, 64), nn.SiLU(), nn.Linear(64, 2 * d))

    @staticmethod
    def _gaussian(params: torch.Tensor) -> Gaussian:
        mu, logvar = params.chunk(2, dim=1)
        return Gaussian(mu, logvar.clamp(-10, 5))

    def prior(self, deepest: torch.Tensor) -> Gaussian:
        return self._gaussian(self.prior_head(deepest.mean((2, 3))))

    def posterior(self, image: torch.Tensor, mask: torch.Tensor) -> Gaussian:
        h = self.posterior_enc(torch.cat([image, mask], 1))
        return self._gaussian(self.posterior_head(h.mean((2, 3))))


class AmbiSegNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        td = cfg.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(td, td * 2), nn.SiLU(), nn.Linear(td * 2, td))
        self.encoder = ImageEncoder(cfg.in_channels, cfg.image_widths, cfg.mask_widths)
        self.denoiser = MaskDenoiser(cfg, td)
        self.latent = LatentNets(cfg) if cfg.latent_dim > 0 else None
        self.z_proj = nn.Linear(cfg.latent_dim, td) if cfg.latent_dim > 0 else None
        self.existence = ExistenceHead(cfg.mask_widths[-1]) if cfg.existence_head else None
        self.clicks = (ClickEncoder(cfg.mask_widths, cfg.space_to_depth)
                       if cfg.click_conditioning else None)
        # added to the embedding of items that are given a neighbour mask
        self.has_neighbour = nn.Parameter(torch.zeros(td)) if cfg.neighbour_conditioning else None

    def encode_image(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image: (B, C, H, W) normalised to [-1, 1]. Run once per request."""
        return self.encoder(image)

    def embed(self, logsnr: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        # condition on log-SNR (invariant to the schedule's time parameterisation)
        emb = self.time_mlp(sinusoidal_embedding(logsnr * 25.0, self.cfg.time_dim))
        if self.z_proj is not None:
            if z is None:
                raise ValueError("this model needs a latent z (latent_dim > 0)")
            emb = emb + self.z_proj(z)
        return emb

    def existence_logit(self, feats: list[torch.Tensor]) -> torch.Tensor | None:
        """Logit of p(finding | crop) per image (None without an existence head)."""
        return None if self.existence is None else self.existence(feats[-1])

    def steer(self, feats: list[torch.Tensor], clicks: torch.Tensor | None,
              has_clicks: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The image features given click maps (B, 3, crop, crop) (`ClickEncoder`); where
        `has_clicks` (B,) is false, and for models without click conditioning, the features
        as they are. Run once per request, after the existence head."""
        if self.clicks is None or clicks is None:
            return feats
        steered = self.clicks(feats, clicks)
        if has_clicks is None:
            return steered
        on = has_clicks.to(feats[0].device).view(-1, 1, 1, 1)
        return [torch.where(on, s, f) for f, s in zip(feats, steered)]

    def denoise(self, x_t: torch.Tensor, logsnr: torch.Tensor, feats: list[torch.Tensor],
                z: torch.Tensor | None = None, neighbour: torch.Tensor | None = None,
                has_neighbour: torch.Tensor | None = None) -> torch.Tensor:
        """One network evaluation: the raw output of the model's prediction type
        (`diffusion.Denoiser` turns it into x_hat). feats may have batch 1 (broadcast).

        `neighbour` (B, 1, H, W) in {-1, +1}: the same sample's mask on the adjacent slice,
        used where `has_neighbour` (B,) is true (ignored by models without conditioning)."""
        n = x_t.shape[0]
        feats = [f.expand(n, -1, -1, -1) if f.shape[0] != n else f for f in feats]
        emb = self.embed(logsnr, z)
        if self.has_neighbour is not None and neighbour is not None:
            has = (torch.ones(n, device=x_t.device) if has_neighbour is None
                   else has_neighbour.to(x_t.device, torch.float32))
            emb = emb + has[:, None] * self.has_neighbour
            neighbour = neighbour * has.view(-1, 1, 1, 1).to(neighbour.dtype)
        else:
            neighbour = None
        return self.denoiser(x_t, feats, emb, neighbour)  # raw: `diffusion.Denoiser` reads it

    def forward(self, x_t: torch.Tensor, logsnr: torch.Tensor, image: torch.Tensor,
                mask: torch.Tensor | None = None, neighbour: torch.Tensor | None = None,
                has_neighbour: torch.Tensor | None = None, clicks: torch.Tensor | None = None,
                has_clicks: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Training pass: (prediction, KL per item, existence logit per item or None). With a
        latent, z comes from the posterior q(z | image, mask) and the KL to the prior
        p(z | image) is returned (zeros otherwise); `clicks` steer the denoiser (`steer`),
        never the existence head. Everything goes through forward() so that
        DistributedDataParallel sees every use."""
        feats = self.encode_image(image)
        kl = x_t.new_zeros(x_t.shape[0])
        z = None
        if self.latent is not None:
            if mask is None:
                raise ValueError("training a latent model needs the expert mask")
            posterior = self.latent.posterior(image, mask)
            z = posterior.rsample()
            kl = posterior.kl(self.latent.prior(feats[-1]))
        logit = self.existence_logit(feats)
        out = self.denoise(x_t, logsnr, self.steer(feats, clicks, has_clicks), z, neighbour,
                           has_neighbour)
        return out, kl, logit


def build_model(cfg: ModelConfig) -> AmbiSegNet:
    return AmbiSegNet(cfg)
