"""`TrainConfig`: the recipe (optimiser, schedule, EMA, validation, checkpoints, augmentation).

Plain data, no PyTorch: the training dock plans runs with it in napari's own process."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig


@dataclass
class AugmentConfig:
    """The training batches' augmentation (`training.augment`)."""
    crop_mode: str = "center"     # "center": nodule-centred crops (+jitter); "random": anywhere
    jitter: float = 6.0           # max centre shift in pixels ("center" mode)
    flips: bool = True            # flips and rot90
    rotate_deg: float = 15.0      # small affine
    scale: float = 0.1            # zoom in [1 - scale, 1 + scale]
    gamma: float = 0.2            # gamma in [exp(-g), exp(g)] on the [0, 1] scale
    brightness: float = 0.05
    contrast: float = 0.1
    enabled: bool = True


@dataclass
class TrainConfig:
    data: str = ""                    # npz, case folder or (opt-in) pickle
    val_data: str | None = None
    init: str | None = None           # start from these weights ("bundled" or a .safetensors)
    iterations: int = 20_000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 500
    min_lr_ratio: float = 0.05        # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    val_every: int = 1000
    val_size: int = 64                # fixed, evenly spaced subset of val
    val_n: int = 16
    checkpoint_every: int = 200
    log_every: int = 20               # a log.csv row (window mean and median) every k steps
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    allow_pickle: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # 3D models: where the training rows' nodule stacks are (LIDC index.csv) and which split
    volume_index: str | None = None
    volume_split: str = "train"
    p_neighbour: float = 0.5          # share of items given the adjacent slice's outline
    # click-conditioned models: share of items given simulated clicks (`training.clicks`)
    p_clicks: float = 0.0
    # share of those batches whose clicks are made on the model's own masks (`clicks.on_own_masks`)
    p_own_clicks: float = 0.0
    # clicked items' loss per outline pixel, not per crop pixel (`trainer.click_item_weights`):
    # Dice, which clicks are judged by, weighs a pixel of a small outline more
    click_loss_per_area: bool = False
    # train only the parameters whose names start so (e.g. ["clicks."]: the rest stays as
    # loaded from `init`); empty: all
    train_only: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        aug = AugmentConfig(**d.pop("augment", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        return cls(augment=aug, **d)


def load_run_config(path: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """A run config JSON: {"model": {...ModelConfig}, "train": {...TrainConfig}}."""
    from ..errors import InputError

    p = Path(path)
    try:
        raw = json.loads(p.read_text())
        return ModelConfig.from_dict(raw.get("model", {})), TrainConfig.from_dict(raw.get("train", {}))
    except FileNotFoundError:
        raise InputError(f"config file not found: {p}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"config {p} is not valid: {e}") from None


def save_run_config(model_cfg: ModelConfig, train_cfg: TrainConfig, path: str | Path) -> None:
    """Write the run config JSON atomically (a stopped run never leaves half a file)."""
    from ..io.atomic import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"model": model_cfg.to_dict(), "train": train_cfg.to_dict()},
                                  indent=2))
