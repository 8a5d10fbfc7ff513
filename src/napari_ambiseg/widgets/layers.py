"""Layer bookkeeping: outputs keyed to their source layer, source geometry, adoption as labels.

Pure functions over napari layers (no Qt widgets). Every output layer carries
``metadata["ambiseg_output"] = {"source": <source layer unique id>, "source_name", "kind", ...}``
so a re-run replaces the outputs of the same image, and the gallery finds them; and, like
every layer made here, ``metadata["ambiseg"]``: a copy of its source's geometry record
(contract C1), so it can be saved on the source's grid after the source is closed.

Axes: a samples layer is always (sample, slice, y, x). napari aligns layers' axes from the
right, so a 2D result's samples get a one-slice axis ("flat": True in the record) that keeps
their sample axis off the slice axis of any volume in the viewer. That slice is
`FLAT_SCALE` thick (shown at every slice, like the 2D image itself) and sits inside the other
layers' slice range (`park_flat`), so it adds no steps to the slice slider.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import numpy as np

from ..io import reference_from_layer
from ..layer_contract import ADOPTED_KEY as ADOPTED
from ..layer_contract import METADATA_KEY, adoption_record, layer_record, spatial_shape
from ..layer_contract import OUTPUT_KEY as KEY
from .engine import Outputs

KINDS = ("samples", "agreement", "uncertainty")
SAMPLE_AXIS = "sample"
FLAT_SCALE = 1e6  # world units: thicker than any stack of slices a viewer will show


# ------------------------------------------------------------------------------ identity
def source_id(layer) -> str:
    """A stable id for a source layer (survives renaming)."""
    return str(layer.unique_id)


def output_info(layer) -> dict[str, Any] | None:
    """The ambiseg output record of a layer, or None for any other layer."""
    return layer_record(layer, KEY)


def is_output(layer) -> bool:
    return output_info(layer) is not None


def outputs_of(layers, source) -> dict[str, Any]:
    """{kind: layer} of the outputs made from `source`."""
    sid = source_id(source)
    return {info["kind"]: layer for layer in layers
            if (info := output_info(layer)) and info.get("source") == sid}


def is_flat(layer) -> bool:
    """A 2D result's samples layer (sample, one slice, y, x)."""
    return bool((output_info(layer) or {}).get("flat"))


def sample_masks(samples_layer) -> np.ndarray:
    """(N, *spatial) bool masks of a samples layer (a 2D result's one-slice axis dropped)."""
    masks = np.asarray(samples_layer.data) > 0
    return masks[:, 0] if is_flat(samples_layer) else masks


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
def reference_of(source, z0: int | None = None) -> dict[str, Any]:
    """A deep copy of the source's geometry record (C1) for a layer made from it: the
    reader's ``metadata["ambiseg"]`` when it describes this grid, else one built from the
    layer's scale and translate by io (flagged as assumed there). With `z0`, the layer holds
    only slices z0.. of the source (a slab)."""
    shape = spatial_shape(source)
    meta = layer_record(source, METADATA_KEY)
    if (meta is not None and "geometry" in meta
            and [int(s) for s in meta.get("shape", ())] == list(shape)):
        ref = copy.deepcopy(meta)
    else:
        nd = len(shape)
        ref = reference_from_layer(shape, [float(s) for s in source.scale[-nd:]],
                                   [float(t) for t in source.translate[-nd:]])
    ref.pop("z0", None)
    if z0 is not None:
        ref["z0"] = int(z0)
    return ref


def _default_labels(n: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(-n, 0))


def axis_names(source) -> tuple[str, ...]:
    """Names of the source's spatial axes: its own axis labels when set, else the reader's
    axes (z or t, y, x), else z, y, x."""
    nd = len(spatial_shape(source))
    labels = tuple(str(a) for a in source.axis_labels)[-nd:]
    if labels != _default_labels(nd):
        return labels
    meta = layer_record(source, METADATA_KEY)
    axes = meta.get("axes") if meta is not None else None
    if axes and len(axes) == nd:
        return tuple(str(a) for a in axes)
    return ("z", "y", "x")[-nd:]


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


def geometry(source, lead: int = 0, z0: int | None = None,
             flat: tuple[str, float] | None = None) -> dict[str, Any]:
    """Layer kwargs putting data on the source's grid: scale, translate, (rotate, shear,
    affine when not identity), axis labels and units, with `lead` extra leading axes (sample
    axis: scale 1, translate 0) and the first spatial axis starting at slice `z0`.
    `flat` = (name, world position) adds, after those, a one-slice axis `FLAT_SCALE` thick
    (a 2D source's samples; see `flat_position`)."""
    from napari.utils.transforms import CompositeAffine

    nd = len(source.scale)
    units = tuple(str(u) for u in source.units)
    pre = {"scale": (1.0,) * lead, "translate": (0.0,) * lead,
           "axis_labels": (SAMPLE_AXIS,) * lead, "units": ("pixel",) * lead}
    if flat is not None:
        for key, value in zip(pre, (FLAT_SCALE, float(flat[1]), str(flat[0]), units[0])):
            pre[key] += (value,)
        lead += 1
    rotate = np.asarray(source.rotate, dtype=float)
    shear = _shear_matrix(source.shear, nd)
    translate = np.asarray(source.translate, dtype=float).copy()
    if z0:
        step = np.zeros(nd)
        step[0] = z0
        translate += CompositeAffine(scale=source.scale, translate=np.zeros(nd), rotate=rotate,
                                     shear=shear, ndim=nd)(step)
    kw: dict[str, Any] = {
        "scale": pre["scale"] + tuple(float(s) for s in source.scale),
        "translate": pre["translate"] + tuple(float(t) for t in translate),
        "axis_labels": pre["axis_labels"] + axis_names(source),
        "units": pre["units"] + units,
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
    """A slab mask (Z, H, W) starting at slice z0 placed into a full-size (D, H, W) array
    (the writers' rule, :func:`napari_ambiseg.io.writers.embed_in_reference`)."""
    from ..io.writers import embed_in_reference

    return embed_in_reference(np.asarray(mask, dtype=bool), {"shape": list(shape), "z0": z0})


# ------------------------------------------------------------------------------ world axes
def _slice_span(viewer) -> tuple[float, float] | None:
    """World range of the slice axis (world axis -3) over the layers that have one, flat
    samples layers excepted; None if no such layer."""
    spans = [layer.extent.world[:, layer.ndim - 3] for layer in viewer.layers
             if layer.ndim >= 3 and not is_flat(layer)]
    if not spans:
        return None
    return float(min(s.min() for s in spans)), float(max(s.max() for s in spans))


def flat_position(viewer) -> tuple[str, float]:
    """(name, world position) of a 2D result's one-slice axis: the name the viewer already
    gives its slice axis (else "z"), at the current slice if a volume is open there."""
    dims, name, here = viewer.dims, "z", 0.0
    if dims.ndim >= 3:
        label = str(dims.axis_labels[dims.ndim - 3])
        if label != SAMPLE_AXIS and label not in _default_labels(dims.ndim):
            name = label
        here = float(dims.point[dims.ndim - 3])
    span = _slice_span(viewer)
    return name, (0.0 if span is None else float(np.clip(here, *span)))


def park_flat(viewer) -> None:
    """Move 2D results' one-slice axis inside the other layers' slice range (volumes opened,
    closed or moved since), so it never stretches the slice slider."""
    span = _slice_span(viewer)
    if span is None:
        return
    for layer in viewer.layers:
        if is_flat(layer) and not span[0] <= layer.translate[1] <= span[1]:
            translate = np.array(layer.translate, dtype=float)
            translate[1] = flat_position(viewer)[1]
            layer.translate = translate


_PARKING: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def keep_flat_parked(viewer) -> None:
    """Re-park 2D results whenever the viewer's ranges change (once per viewer)."""
    if _PARKING.get(id(viewer)) is viewer:
        return
    _PARKING[id(viewer)] = viewer
    ref = weakref.ref(viewer)

    def on_range(*_) -> None:
        if (v := ref()) is not None:
            park_flat(v)

    viewer.dims.events.range.connect(on_range)


# ------------------------------------------------------------------------------ outputs
MODE_COLORS = ("cyan", "magenta", "yellow", "lime", "orange", "deepskyblue", "red")


def mode_colormap():
    """Bright, distinct contour colours by mode rank (1 = commonest), readable over CT."""
    from napari.utils.colormaps import DirectLabelColormap

    colors = {0: "transparent", None: "white"}
    colors.update({rank: c for rank, c in enumerate(MODE_COLORS, start=1)})
    return DirectLabelColormap(color_dict=colors)


# Agreement heatmap, a brightened plasma: 0 clear; any agreement > 0 at least a light blue
# at alpha 0.7 (1 sample of 64 shows on a lung window's black air and on gray tissue), then
# magenta, orange and yellow, rising in luminance and opacity with the fraction of samples.
AGREEMENT_COLORS = (  # (value, (r, g, b, alpha))
    (0.0, (0.0, 0.0, 0.0, 0.0)),
    (1 / 256, (0.30, 0.52, 1.00, 0.70)),
    (0.35, (1.00, 0.40, 1.00, 0.72)),
    (0.65, (1.00, 0.60, 0.10, 0.76)),
    (1.0, (1.00, 0.95, 0.30, 0.80)),
)


def agreement_colormap():
    """The agreement heatmap's colormap (see AGREEMENT_COLORS); use at layer opacity 1."""
    from napari.utils.colormaps import Colormap

    controls, colors = zip(*AGREEMENT_COLORS)
    return Colormap(colors=np.array(colors), controls=np.array(controls),
                    name="ambiseg agreement", display_name="agreement (0 clear)")


SCALE_TITLE = "share of samples"  # what the agreement's colour bar measures
TITLE_OVERLAY = "ambiseg_scale_title"  # its title: a text overlay of the viewer's canvas


def show_agreement_scale(viewer, layer) -> None:
    """The agreement layer's colour bar (its contrast limits, 0 to 1) on the canvas, with
    the title "share of samples" beside it while any agreement bar is shown (napari has no
    title on a colour bar, nor text overlays of a layer's own)."""
    layer.colorbar.visible = True
    update = _title_updater(viewer)
    if scale_title(viewer) is None:
        from napari.components.overlays import ColorBarOverlay, TextOverlay

        bar = ColorBarOverlay()  # napari's colour bar: its corner, box and font
        viewer.canvas.overlays[TITLE_OVERLAY] = TextOverlay(
            text=SCALE_TITLE, position=bar.position, box=bar.box, font_size=bar.font_size,
            visible=False)
        viewer.layers.events.removed.connect(update)
    layer.events.visible.connect(update)
    layer.colorbar.events.visible.connect(update)
    update()


def scale_title(viewer):
    """The agreement colour bars' title overlay of `viewer`, or None."""
    return viewer.canvas.overlays.get(TITLE_OVERLAY)


def _title_updater(viewer):
    """A callback showing the title while an agreement layer shows its colour bar (holds the
    viewer weakly)."""
    ref = weakref.ref(viewer)

    def update(*_) -> None:
        if (v := ref()) is not None and (title := scale_title(v)) is not None:
            title.visible = any(
                (output_info(la) or {}).get("kind") == "agreement" and la.visible
                and la.colorbar.visible for la in v.layers)

    return update


def _transparent_floor(name: str):
    """A named colormap whose value 0 is fully transparent (blends over the image)."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    colors = np.array(ensure_colormap(name).colors, dtype=float)
    colors[0, 3] = 0.0
    return Colormap(colors=colors, name=f"ambiseg {name}", display_name=f"{name} (0 clear)")


def output_data(source, out: Outputs, flat_at: tuple[str, float] = ("z", 0.0)
                ) -> dict[str, tuple[Any, dict[str, Any], str]]:
    """napari LayerData tuples {kind: (data, kwargs, layer_type)} for `out` on the source's
    grid. Inserted one after the other just above the source, they stack as source,
    uncertainty, agreement, samples (contours drawn on top). A 2D result's samples get a
    one-slice axis at `flat_at` = (name, world position) (see `flat_position`)."""
    flat = out.z0 is None
    samples = out.labelled()[:, None] if flat else out.labelled()
    lead_geo = geometry(source, 1, out.z0, flat=flat_at if flat else None)
    geo = geometry(source, 0, out.z0)
    base = {"source": source_id(source), "source_name": source.name, **out.describe()}

    def meta(kind: str, **extra) -> dict[str, Any]:
        return {KEY: {**base, "kind": kind, **extra}, METADATA_KEY: reference_of(source, out.z0)}

    heat = {"contrast_limits": (0.0, 1.0), "blending": "translucent"}
    return {
        "samples": (samples, {"name": f"{source.name} samples", "opacity": 0.9,
                              "metadata": meta("samples", flat=flat), **lead_geo}, "labels"),
        "agreement": (out.agreement, {"name": f"{source.name} agreement",
                                      "colormap": agreement_colormap(), "opacity": 1.0,
                                      "metadata": meta("agreement"), **heat, **geo}, "image"),
        "uncertainty": (out.entropy, {"name": f"{source.name} uncertainty",
                                      "colormap": _transparent_floor("viridis"), "opacity": 0.6,
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
    if out.z0 is None:
        keep_flat_parked(viewer)
    for kind, (data, kwargs, layer_type) in output_data(source, out,
                                                         flat_position(viewer)).items():
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
        if kind == "agreement":
            show_agreement_scale(viewer, layer)
        shown[kind] = layer
    return shown


# ------------------------------------------------------------------------------ adoption
def mark_adopted(labels, source, what: str) -> None:
    """Record an adoption from `source` on `labels`: its geometry (C1) unless the layer has
    a read one of its own, and the adoption record (C4)."""
    meta = dict(labels.metadata) if isinstance(labels.metadata, dict) else {}
    own = meta.get(METADATA_KEY)
    if not isinstance(own, dict) or "geometry" not in own or own.get("assumed"):
        meta[METADATA_KEY] = reference_of(source)
    meta[ADOPTED] = adoption_record(source.name, what)
    labels.metadata = meta


def adopt_new(viewer, source, mask: np.ndarray, name: str | None = None, label: int = 1,
              what: str = "mask"):
    """A new editable Labels layer on the source's grid holding `mask` as `label`, carrying
    the source's geometry and the adoption record (`what` was adopted).

    The mask is written through the layer's edit history, so napari's undo (Ctrl+Z on the
    layer) takes the adoption back.
    """
    from napari.layers import Labels

    shape = spatial_shape(source)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask of shape {mask.shape} does not fit {source.name} {shape}")
    labels = Labels(np.zeros(shape, dtype=np.uint16), name=name or f"{source.name} labels",
                    **geometry(source))
    mark_adopted(labels, source, what)
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


# ------------------------------------------------------------------------------ readers
def show_readers_per_pixel(viewer, readers, source):
    """A readers' layer with a leading reader axis, (R, Z, H, W) or (R, H, W), shares a world
    axis with the samples ((N, Z, H, W), or (N, 1, H, W) for a 2D image): the sample slider
    (or the parked flat axis) would choose the reader shown. Hide it and show, on the
    source's grid, how many readers outlined each pixel as outlines (nested contours, one per
    count); updated in place on re-runs. Returns that layer, or None when `readers` has no
    reader axis or was hidden already."""
    from napari.layers import Labels

    if readers.ndim != len(spatial_shape(source)) + 1:
        return None
    count = np.asarray(readers.data).astype(bool).sum(0).astype(np.uint8)
    sid = source_id(source)
    for layer in viewer.layers:
        info = output_info(layer) or {}
        if info.get("kind") == "readers" and info.get("source") == sid:
            layer.data = count
            break
    else:
        if not readers.visible:  # already hidden (e.g. the demo shows its own outlines)
            _to_bottom(viewer, readers)
            return None
        kw = geometry(source)
        layer = Labels(count, name=f"{readers.name} per pixel", opacity=0.9,
                       metadata={METADATA_KEY: reference_of(source),
                                 KEY: {"kind": "readers", "source": sid,
                                       "source_name": source.name, "of": readers.name}},
                       **kw)
        layer.contour = 1
        viewer.layers.insert(viewer.layers.index(readers) + 1, layer)
    readers.visible = False
    _to_bottom(viewer, readers)
    return layer


def _to_bottom(viewer, readers) -> None:
    """A hidden readers' layer goes to the bottom of the list, so that the shared first axis
    takes the samples' name ("sample"): napari names axes after the topmost layer that labels
    them."""
    if viewer.layers.index(readers) != 0:
        viewer.layers.move(viewer.layers.index(readers), 0)
