"""Save and load weights safely: safetensors for tensors, JSON beside them for the config.

`<stem>.safetensors` + `<stem>.json` ({"config": ..., "format_version": ..., "info": ...}).
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import FORMAT_VERSION, ModelConfig
from .errors import WeightsError

if TYPE_CHECKING:  # PyTorch loads with the weights, not with their config (napari's process)
    import torch

BUNDLED_STEM = "ambiseg_lidc"


def bundled_weights_path() -> Path:
    return Path(str(resources.files("napari_ambiseg.weights"))) / f"{BUNDLED_STEM}.safetensors"


def resolve_weights(spec: str | os.PathLike | None) -> Path:
    """A weights argument: None or "bundled" -> the bundled LIDC model, else the path."""
    return bundled_weights_path() if spec in (None, "bundled") else Path(spec)


def weights_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be loaded as weights, in one sentence (None: it looks loadable).
    An existing file is never reported as "not found"."""
    p = Path(path).expanduser()
    st, _ = _pair(p)
    if p.is_dir():
        return f"{p} is a folder: choose its .safetensors weights file"
    if p.is_file() and p.suffix not in (".safetensors", ".json"):
        return (f"{p.name} is not a .safetensors file: napari-ambiseg loads weights only from "
                ".safetensors (with its .json config beside it); pickles (.pt, .pth, .ckpt) "
                "are never loaded")
    if not st.is_file():
        return f"weights file not found: {st}"
    return None


def _pair(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_weights(model: torch.nn.Module, cfg: ModelConfig, path: str | os.PathLike,
                 info: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save

    from .io.atomic import atomic_write_bytes  # lazily: the io package reads DICOM

    st, js = _pair(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(st, save(tensors))
    meta = {"format_version": FORMAT_VERSION, "config": cfg.to_dict(), "info": info or {}}
    atomic_write_bytes(js, json.dumps(meta, indent=2).encode())
    return st


def load_config(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, Any]]:
    _, js = _pair(path)
    if not js.is_file():
        raise WeightsError(f"model config not found: {js} (weights need their .json beside them)")
    try:
        meta = json.loads(js.read_text())
        config = dict(meta["config"])
        # files older than their config's own version field are format 1: migrated on load
        config.setdefault("format_version", meta.get("format_version", 1))
        return ModelConfig.from_dict(config), meta.get("info", {})
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"model config {js} is not valid: {e}") from None


def load_weights(path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """Return (model, config, info). `path=None` loads the bundled LIDC model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import build_model

    st, _ = _pair(resolve_weights(path))
    problem = weights_problem(resolve_weights(path))
    if problem:
        hint = (" (the bundled weights are missing from this installation)" if path is None
                else "")
        raise WeightsError(f"{problem}{hint}")
    cfg, info = load_config(st)
    try:
        state = load_file(str(st), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"weights file {st} is corrupt or not safetensors: {e}") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise WeightsError(f"weights {st} do not match their config: {first}") from None
    return model.to(device).eval(), cfg, info
