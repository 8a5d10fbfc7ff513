"""Layer bookkeeping: outputs keyed to their source layer, source geometry, adoption as labels.

Pure functions over napari layers (no Qt widgets). Every output layer carries
``metadata["ambiseg_output"] = {"source": <source layer unique id>, "source_name", "kind", ...}``
so a re-run replaces the outputs of the same image, and the gallery finds them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine import Outputs

KEY = "ambiseg_output"
KINDS = ("samples", "agreement", "uncertainty")


# ------------------------------------------------------------------------------ identity
def source_id(layer) -> str:
    """A stable id for a source layer (survives renaming)."""
    return str(layer.unique_id)


def output_info(layer) -> dict[str, Any] | None:
    """The ambiseg output record of a layer, or None for any other layer."""
    info = layer.metadata.get(KEY) if isinstance(layer.metadata, dict) else None
    return info if isinstance(info, dict) else None


def is_output(layer) -> bool:
    return output_info(layer) is not None


def outputs_of(layers, source) -> dict[str, Any]:
    """{kind: layer} of the outputs made from `source`."""
    sid = source_id(source)
    return {info["kind"]: layer for layer in layers
            if (info := output_info(layer)) and info.get("source") == sid}


def find_source(layers, info: dict[str, Any]):
    """The source layer of an output record (by id, then by name), or None."""
    for layer in layers:
        if source_id(layer) == info.get("source"):
            return layer
    for layer in layers:
        if layer.name == info.get("source_name") and not is_output(layer):
            return layer
    return None


# ------------------------------------------------------------------------------ geometry
def spatial_shape(layer) -> tuple[int, ...]:
    """Shape of a layer's pixel grid without the colour channel (what its labels have)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def _embed_matrix(m: np.ndarray, lead: int) -> np.ndarray:
    out = np.eye(m.shape[0] + lead)
    out[lead:, lead:] = m
    return out


def _shear_matrix(shear, nd: int) -> np.ndarray:
    s = np.asarray(shear, dtype=float)
    if s.ndim == 2:
        return s
    m = np.eye(nd)
    m[np.triu_indices(nd, 1)] = s
    return m


def geometry(source, lead: int = 0, z0: int | None = None) -> dict[str, Any]:
    """Layer kwargs putting data on the source's grid: scale, translate, (rotate, shear,
    affine when not identity), axis labels and units, with `lead` extra leading axes (sample
    axis: scale 1, translate 0) and the first spatial axis starting at slice `z0`."""
    from napari.utils.transforms import CompositeAffine

    nd = len(source.scale)
    rotate = np.asarray(source.rotate, dtype=float)
    shear = _shear_matrix(source.shear, nd)
    translate = np.asarray(source.translate, dtype=float).copy()
    if z0:
        step = np.zeros(nd)
        step[0] = z0
        translate += CompositeAffine(scale=source.scale, translate=np.zeros(nd), rotate=rotate,
                                     shear=shear, ndim=nd)(step)
    kw: dict[str, Any] = {
        "scale": (1.0,) * lead + tuple(float(s) for s in source.scale),
        "translate": (0.0,) * lead + tuple(float(t) for t in translate),
        "axis_labels": ("sample",) * lead + tuple(source.axis_labels),
        "units": ("pixel",) * lead + tuple(str(u) for u in source.units),
    }
    if not np.allclose(rotate, np.eye(nd)):
        kw["rotate"] = _embed_matrix(rotate, lead)
    if not np.allclose(shear, np.eye(nd)):
        kw["shear"] = _embed_matrix(shear, lead)
    affine = np.asarray(source.affine.affine_matrix, dtype=float)
    if not np.allclose(affine, np.eye(nd + 1)):
        kw["affine"] = _embed_matrix(affine, lead)
    return kw


def embed(mask: np.ndarray, shape: tuple[int, ...], z0: int | None) -> np.ndarray:
    """A slab mask (Z, H, W) starting at slice z0 placed into a full-size (D, H, W) array."""
    mask = np.asarray(mask, dtype=bool)
    if z0 is None or mask.shape == tuple(shape):
        return mask
    full = np.zeros(shape, dtype=bool)
    full[z0:z0 + mask.shape[0]] = mask
    return full


# ------------------------------------------------------------------------------ outputs
MODE_COLORS = ("cyan", "magenta", "yellow", "lime", "orange", "deepskyblue", "red")


def mode_colormap():
    """Bright, distinct contour colours by mode rank (1 = commonest), readable over CT."""
    from napari.utils.colormaps import DirectLabelColormap

    colors = {0: "transparent", None: "white"}
    colors.update({rank: c for rank, c in enumerate(MODE_COLORS, start=1)})
    return DirectLabelColormap(color_dict=colors)
def _transparent_floor(name: str):
    """A named colormap whose value 0 is fully transparent (blends over the image)."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    colors = np.array(ensure_colormap(name).colors, dtype=float)
    colors[0, 3] = 0.0
    return Colormap(colors=colors, name=f"ambiseg {name}", display_name=f"{name} (0 clear)")


def output_data(source, out: Outputs) -> dict[str, tuple[Any, dict[str, Any], str]]:
    """napari LayerData tuples {kind: (data, kwargs, layer_type)} for `out` on the source's
    grid. Inserted one after the other just above the source, they stack as source,
    uncertainty, agreement, samples (contours drawn on top)."""
    lead_geo, geo = geometry(source, 1, out.z0), geometry(source, 0, out.z0)
    base = {"source": source_id(source), "source_name": source.name, **out.describe()}

    def meta(kind: str) -> dict[str, Any]:
        return {KEY: {**base, "kind": kind}}

    heat = {"contrast_limits": (0.0, 1.0), "blending": "translucent", "opacity": 0.6}
    return {
        "samples": (out.labelled(), {"name": f"{source.name} samples", "opacity": 0.9,
                                     "metadata": meta("samples"), **lead_geo}, "labels"),
        "agreement": (out.agreement, {"name": f"{source.name} agreement",
                                      "colormap": _transparent_floor("inferno"),
                                      "metadata": meta("agreement"), **heat, **geo}, "image"),
        "uncertainty": (out.entropy, {"name": f"{source.name} uncertainty",
                                      "colormap": _transparent_floor("viridis"),
                                      "visible": False, "metadata": meta("uncertainty"),
                                      **heat, **geo}, "image"),
    }


_UPDATE = ("name", "scale", "translate", "rotate", "shear", "affine", "axis_labels", "units")


def _update(layer, data, kwargs: dict[str, Any]) -> None:
    """Put new results into an existing output layer, keeping the user's display choices.

    Updating in place costs a texture upload; removing and adding layers makes napari
    rebuild its scene graph (and run the garbage collector), a visible stall."""
    layer.metadata = {**layer.metadata, **kwargs["metadata"]}  # first: listeners read it
    layer.data = data
    identity = {"rotate": np.eye(layer.ndim), "shear": np.eye(layer.ndim),
                "affine": np.eye(layer.ndim + 1)}
    current = {"rotate": lambda: layer.rotate, "affine": lambda: layer.affine.affine_matrix,
               "shear": lambda: _shear_matrix(layer.shear, layer.ndim)}
    for key in _UPDATE:
        if key in kwargs:
            if not _same(getattr(layer, key), kwargs[key]):
                setattr(layer, key, kwargs[key])
        elif key in identity and not np.allclose(current[key](), identity[key]):
            setattr(layer, key, identity[key])


def _same(a, b) -> bool:
    """Equal layer properties (names, labels, units, vectors, matrices)."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if hasattr(a, "affine_matrix"):
        a = a.affine_matrix
    try:
        return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))
    except (TypeError, ValueError):  # axis labels, units
        return [str(x) for x in a] == [str(x) for x in b]


def replace_outputs(viewer, source, out: Outputs) -> dict[str, Any]:
    """Show `out` for `source`: previous outputs of the same source are updated in place
    (list position, visibility, opacity and colormap kept); new ones go above the source."""
    from napari.layers import Image, Labels, Layer

    classes = {"labels": Labels, "image": Image}
    layers = viewer.layers
    old = outputs_of(layers, source)
    shown = {}
    for kind, (data, kwargs, layer_type) in output_data(source, out).items():
        prev = old.get(kind)
        if isinstance(prev, classes[layer_type]) and prev.ndim == data.ndim:
            _update(prev, data, kwargs)
            shown[kind] = prev
            continue
        layer = Layer.create(data, kwargs, layer_type)
        if layer_type == "labels":
            layer.contour = 1
            layer.colormap = mode_colormap()
        if prev is not None:
            index = layers.index(prev)
            layers.remove(prev)
            layers.insert(index, layer)
        else:
            layers.insert(layers.index(source) + 1, layer)
        shown[kind] = layer
    return shown


def read_outputs(samples_layer) -> dict[str, Any]:
    """What the gallery needs from a samples layer: masks (N, ...) bool and its record."""
    info = output_info(samples_layer) or {}
    data = np.asarray(samples_layer.data)
    return {"masks": data > 0, "info": info}


# ------------------------------------------------------------------------------ adoption
def adopt_new(viewer, source, mask: np.ndarray, name: str | None = None, label: int = 1):
    """A new editable Labels layer on the source's grid holding `mask` as `label`.

    The mask is written through the layer's edit history, so napari's undo (Ctrl+Z on the
    layer) takes the adoption back.
    """
    from napari.layers import Labels

    shape = spatial_shape(source)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask of shape {mask.shape} does not fit {source.name} {shape}")
    labels = Labels(np.zeros(shape, dtype=np.uint16), name=name or f"{source.name} labels",
                    **{k: v for k, v in geometry(source).items()})
    viewer.layers.insert(viewer.layers.index(source) + 1, labels)
    write_where_empty(labels, mask, label)
    labels.selected_label = label
    return labels


def write_where_empty(labels, mask: np.ndarray, label: int) -> tuple[int, int]:
    """Paint `label` where `mask` is set and `labels` is 0, as one undoable edit.

    Returns (written, kept): pixels written, and pixels of the mask that already held another
    label and were left as they were (painted labels are never overwritten).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(labels.data.shape):
        raise ValueError(f"mask of shape {mask.shape} does not fit {labels.name} "
                         f"{tuple(labels.data.shape)}")
    current = np.asarray(labels.data)
    free = mask & (current == 0)
    kept = int((mask & (current != 0) & (current != label)).sum())
    index = np.nonzero(free)
    if index[0].size:
        with labels.block_history():  # one undo step, however many pixels
            labels.data_setitem(index, label)
    return int(index[0].size), kept


def next_label(labels) -> int:
    """A label value not used yet in `labels` (so an adoption is its own object)."""
    data = np.asarray(labels.data)
    return int(data.max()) + 1 if data.size else 1
