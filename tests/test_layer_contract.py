"""The layer-metadata contract (napari_ambiseg.layer_contract): keys, records, the grid rule.

Layers are stood in for by plain objects (the contract reads attributes only), and a state
dict (what npe2 writers receive) works where a transform is read.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from napari_ambiseg import layer_contract as C


def layer(shape, *, scale=None, translate=None, rgb=False, multiscale=False, metadata=None,
          **transforms):
    nd = len(shape) - (1 if rgb else 0)
    data = np.zeros(shape, np.uint8)
    return SimpleNamespace(
        data=[data, data[..., ::2, ::2]] if multiscale else data, rgb=rgb,
        multiscale=multiscale, metadata=metadata if metadata is not None else {},
        scale=np.asarray(scale if scale is not None else (1.0,) * nd, float),
        translate=np.asarray(translate if translate is not None else (0.0,) * nd, float),
        **transforms)


def test_the_contract_imports_without_napari_or_qt():
    code = ("import sys, napari_ambiseg.layer_contract; bad = [m for m in sys.modules if "
            "m.split('.')[0] in ('PyQt6', 'PySide6', 'qtpy', 'napari')]; print(bad); "
            "sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_keys_are_distinct_and_io_uses_them():
    from napari_ambiseg.io import sitk_io, volume

    keys = [C.METADATA_KEY, C.OUTPUT_KEY, C.ADOPTED_KEY, C.READERS_KEY, C.KIND_KEY, C.FLIP_KEY]
    assert len(set(keys)) == len(keys)
    assert volume.METADATA_KEY is C.METADATA_KEY
    assert (sitk_io.KIND_KEY, sitk_io.FLIP_KEY) == (C.KIND_KEY, C.FLIP_KEY)


def test_records_are_dicts_or_none():
    ref = {"shape": [4, 5], "geometry": {}}
    la = layer((4, 5), metadata={C.METADATA_KEY: ref, C.OUTPUT_KEY: "not a record"})
    assert C.layer_record(la, C.METADATA_KEY) is ref
    assert C.layer_record(la, C.OUTPUT_KEY) is None and C.layer_record(la, C.READERS_KEY) is None
    assert C.record(None, C.METADATA_KEY) is None
    assert C.geometry_record(la.metadata) is ref
    assert C.geometry_record({C.METADATA_KEY: {"shape": [4, 5]}}) is None  # no geometry
    assert C.readers_record(np.int64(4), "ct") == {"count": 4, "image_name": "ct"}
    adopted = C.adoption_record("ct", "mode 1")
    assert adopted["source_name"] == "ct" and adopted["what"] == "mode 1" and adopted["time"]


def test_base_data_and_spatial_shape():
    assert C.spatial_shape(layer((3, 4, 5))) == (3, 4, 5)
    assert C.spatial_shape(layer((4, 5, 3), rgb=True)) == (4, 5)
    pyramid = layer((8, 10), multiscale=True)
    assert C.base_data(pyramid) is pyramid.data[0] and C.spatial_shape(pyramid) == (8, 10)


def test_same_grid_needs_the_same_shape_and_transform():
    image = layer((3, 4, 5), scale=(2.5, 0.7, 0.7), translate=(10.0, 0.0, -5.0))
    assert C.on_grid(layer((3, 4, 5), scale=(2.5, 0.7, 0.7), translate=(10.0, 0.0, -5.0)),
                     image)
    assert not C.on_grid(layer((3, 4, 5)), image)  # same shape, other spacing
    assert not C.on_grid(layer((3, 4, 6), scale=(2.5, 0.7, 0.7),
                               translate=(10.0, 0.0, -5.0)), image)
    sheared = layer((3, 4, 5), scale=(2.5, 0.7, 0.7), translate=(10.0, 0.0, -5.0),
                    shear=np.array([0.2, 0.0, 0.0]))
    plain = layer((3, 4, 5), scale=(2.5, 0.7, 0.7), translate=(10.0, 0.0, -5.0),
                  shear=np.zeros(3))
    assert not C.on_grid(sheared, plain) and C.on_grid(plain, plain)
    state = {"scale": [2.5, 0.7, 0.7], "translate": [10.0, 0.0, -5.0 + 1e-6]}  # a state dict
    assert C.on_grid(image, state, (3, 4, 5))  # rounding from a file is the same grid


@pytest.mark.parametrize("shape, count", [((3, 4, 5), 1), ((4, 3, 4, 5), 4), ((3, 4, 6), None),
                                          ((2, 4, 3, 4, 5), None)])
def test_reader_count(shape, count):
    image = layer((3, 4, 5), scale=(2.5, 0.7, 0.7))
    lead = len(shape) - 3
    readers = layer(shape, scale=(1.0,) * lead + (2.5, 0.7, 0.7)[-len(shape) + lead:])
    assert C.reader_count(readers, image) == count


def test_readers_on_another_spacing_are_off_the_grid():
    image = layer((3, 4, 5), scale=(2.5, 0.7, 0.7))
    assert C.reader_count(layer((4, 3, 4, 5), scale=(1.0, 1.25, 0.7, 0.7)), image) is None
