"""`ModelConfig`: the one object that describes a model (network, diffusion and its defaults)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 4  # 4: click conditioning; 3: existence head and neighbour-slice
                    # conditioning; 2: typed `Scope`; 1 kept the scope in `modality`/`extra`

PREDICTIONS = ("eps", "x", "v")
SCHEDULES = ("cosine", "linear")
WEIGHTINGS = ("snr", "snr+1", "1", "sigmoid")
SAMPLERS = ("ddpm", "ddim")
# How a model samples a slab's slices: each alone, or each sample continuing its own outline
PER_SLICE, COHERENT = "per-slice", "coherent"
# The modality names, in one place: what the readers report and the model knows (CLINICAL), the
# 8-bit scale of the training crops, and "auto" (the reader's, else guessed from the values)
CLINICAL_MODALITIES = ("CT", "MR", "US")
MODEL_MODALITIES = (*CLINICAL_MODALITIES, "8bit")
MODALITIES = ("auto", *MODEL_MODALITIES)
# CT inputs (HU) are clipped to this window before the per-context min-max to 0..255: the lower
# bound of the LIDC training crops (io/preprocess.py); None = the crop's own minimum / maximum
LIDC_HU_WINDOW: tuple[float | None, float | None] = (-1000.0, None)


@dataclass(frozen=True)
class Scope:
    """What the model was trained on: inputs outside this are warned about (`scope.py`).

    Empty text fields mean "not recorded" (e.g. a model trained on the user's own data)."""

    modality: str = "CT"                     # imaging modality of the training images
    task: str = ""                           # anatomy / finding, e.g. "lung nodules"
    pixel_spacing_mm: float | None = None    # in-plane mm per pixel (inputs are resampled to it)
    intensity: str = ""                      # intensity convention of the training images
    training_data: str = ""                  # data set (and split) the model learnt from

    def description(self) -> str:
        """The scope in plain words (the model card uses this very text)."""
        what = f"{self.task} in {self.modality}" if self.task else f"{self.modality} images"
        parts = [f"Trained on {what}"]
        if self.training_data:
            parts[0] += f" ({self.training_data})"
        if self.pixel_spacing_mm:
            parts.append(f"at about {self.pixel_spacing_mm:g} mm per pixel")
        text = ", ".join(parts) + "."
        if self.intensity:
            text += f" Intensities: {self.intensity}."
        return text


@dataclass
class ModelConfig:
    # --- network ---
    in_channels: int = 1                     # image channels
    crop_size: int = 64                      # the model works at the nodule scale (pixels)
    context_size: int = 128                  # intensity-normalisation context around the crop
    image_widths: tuple[int, ...] = (32, 64, 128)  # image encoder, at crop/2, /4, /8
    mask_widths: tuple[int, ...] = (24, 48, 96)    # mask denoiser, same scales
    space_to_depth: int = 2                  # the mask is folded 2x2 -> 4 channels
    time_dim: int = 64
    # --- CIMD-style ambiguity latent (0 = off) ---
    latent_dim: int = 0
    kl_weight: float = 1e-3
    # --- is there a finding at all: p(finding | crop), drawn per sample before the outline ---
    existence_head: bool = False
    existence_weight: float = 0.1            # BCE weight (soft target: readers' non-empty share)
    # --- 3D coherence: the denoiser also sees the same sample's mask on the adjacent slice ---
    neighbour_conditioning: bool = False
    neighbour_steps: int | None = None       # steps for neighbour-conditioned slices (None: steps)
    # --- steering: the denoiser also sees the annotator's include / exclude clicks ---
    click_conditioning: bool = False
    # --- diffusion ---
    schedule: str = "cosine"
    input_scale: float = 0.1                 # b: SNR_b(t) = b^2 SNR(t)
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    prediction: str = "x"
    loss_weighting: str = "snr+1"
    sigmoid_bias: float = 0.0                # k in sigmoid(logSNR - k)
    # --- sampling defaults ---
    sampler: str = "ddpm"
    steps: int = 10
    n_samples: int = 16
    # --- scope and preprocessing (documented in docs/model_card.md) ---
    scope: Scope = field(default_factory=Scope)
    hu_window: tuple[float | None, float | None] = LIDC_HU_WINDOW  # CT clip (low, high) in HU
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_widths = tuple(int(w) for w in self.image_widths)
        self.mask_widths = tuple(int(w) for w in self.mask_widths)
        self.hu_window = tuple(self.hu_window)  # type: ignore[assignment]
        if isinstance(self.scope, dict):
            self.scope = Scope(**self.scope)
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.prediction in PREDICTIONS, f"prediction must be one of {PREDICTIONS}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.loss_weighting in WEIGHTINGS, f"loss_weighting must be one of {WEIGHTINGS}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}"),
            (self.input_scale > 0, "input_scale must be > 0"),
            (self.crop_size % (self.space_to_depth * 2 ** len(self.mask_widths)) == 0,
             "crop_size must be divisible by space_to_depth * 2**len(mask_widths)"),
            (len(self.image_widths) == len(self.mask_widths),
             "image_widths and mask_widths need the same number of scales"),
            (self.context_size >= self.crop_size, "context_size must be >= crop_size"),
            (self.neighbour_steps is None or self.neighbour_steps >= 1,
             "neighbour_steps must be >= 1 (or None: the model's steps)"),
            (self.n_samples >= 1 and self.steps >= 1, "n_samples and steps must be >= 1"),
            (len(self.hu_window) == 2 and (None in self.hu_window
                                           or self.hu_window[0] < self.hu_window[1]),
             "hu_window must be (low, high) HU with low < high (None: the crop's own)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"ModelConfig: {message}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["format_version"] = FORMAT_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(f"model format version {version} is newer than this napari-ambiseg "
                             f"understands ({FORMAT_VERSION}); upgrade napari-ambiseg")
        if version < 2:
            d = migrate_v1(d)
        if version <= 3:  # `name` (never read) was dropped; format 2-3 files still carry it
            d.pop("name", None)
        if isinstance(d.get("scope"), dict):
            scope_fields = {f.name for f in dataclasses.fields(Scope)}
            unknown = set(d["scope"]) - scope_fields
            if unknown:
                raise ValueError(f"ModelConfig: unknown scope fields {sorted(unknown)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def sampling_counts(cfg: ModelConfig | None, n: int | None = None,
                    steps: int | None = None) -> tuple[int, int]:
    """N samples and denoising steps of a request: as given, else the model's (`cfg`, else
    ModelConfig's defaults for a stand-in without one); checked."""
    from .errors import InputError

    n = int(getattr(cfg, "n_samples", ModelConfig.n_samples) if n is None else n)
    steps = int(getattr(cfg, "steps", ModelConfig.steps) if steps is None else steps)
    if not 1 <= n <= 1024:
        raise InputError(f"n must be between 1 and 1024; got {n}")
    if steps < 1:
        raise InputError(f"steps must be >= 1; got {steps}")
    return n, steps


def migrate_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: `modality` and `extra["pixel_spacing_mm"]` move into `scope`."""
    d, extra = dict(d), dict(d.get("extra") or {})
    scope = dict(d.get("scope") or {})
    if "modality" in d:
        scope["modality"] = d.pop("modality")
    if "pixel_spacing_mm" in extra:
        scope["pixel_spacing_mm"] = float(extra.pop("pixel_spacing_mm"))
    d["scope"], d["extra"] = scope, extra
    return d
