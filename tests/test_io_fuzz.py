"""Fuzz: mutated real files make the readers raise only the project's own errors.

A longer run lives in benchmarks/fuzz_readers.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from napari_ambiseg.errors import AmbisegError
from napari_ambiseg.io import read_image

CT_BYTES = Path(get_testdata_file("CT_small.dcm")).read_bytes()


def _nifti_bytes(tmp: Path) -> bytes:
    affine = np.diag([-0.8, 0.8, 2.0, 1.0])
    data = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    nib.save(nib.Nifti1Image(data, affine), tmp / "seed.nii")
    return (tmp / "seed.nii").read_bytes()


def mutations(size: int, header: int):
    """Byte edits (biased to the header), an optional truncation, and an optional insertion."""
    pos = st.one_of(st.integers(0, header - 1), st.integers(0, size - 1))
    return st.tuples(
        st.lists(st.tuples(pos, st.integers(0, 255)), min_size=1, max_size=12),
        st.one_of(st.none(), st.integers(0, size)),
        st.one_of(st.none(), st.tuples(pos, st.binary(min_size=1, max_size=16))),
    )


def mutate(data: bytes, edits) -> bytes:
    changes, cut, insert = edits
    buf = bytearray(data)
    for p, b in changes:
        buf[p] = b
    if insert:
        buf[insert[0]:insert[0]] = insert[1]
    return bytes(buf[:cut] if cut is not None else buf)


def check_reader(path: Path, payload: bytes) -> None:
    path.write_bytes(payload)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            images = read_image(path)
        except AmbisegError:
            return
    assert images and all(im.data.size > 0 for im in images)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=mutations(len(CT_BYTES), 1200))
def test_mutated_dicom_only_raises_ambiseg_errors(work, edits):
    check_reader(work / "ct.dcm", mutate(CT_BYTES, edits))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_nifti_only_raises_ambiseg_errors(work, data):
    seed = work / "seed_bytes.nii"
    if not seed.exists():
        seed.write_bytes(_nifti_bytes(work))
    raw = seed.read_bytes()
    edits = data.draw(mutations(len(raw), 352))
    check_reader(work / "vol.nii", mutate(raw, edits))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=600), suffix=st.sampled_from([".dcm", ".nii", ".mha", ".nrrd", ".png"]))
def test_random_bytes_with_any_extension(work, payload, suffix):
    check_reader(work / f"random{suffix}", payload)
