"""npe2 reader: medical images into napari as plain LayerData tuples (napari is not imported).

``napari_get_reader`` claims only what :func:`napari_ambiseg.io.can_read` accepts (DICOM
folders and files, NIfTI, MHA/MHD, NRRD, PNG/JPEG/TIFF) and returns None otherwise, so other
readers get their chance. Reading errors are :class:`~napari_ambiseg.errors.ReadError` with
one clear sentence: napari shows it as an error notification and the viewer keeps working.

Folders: npe2 offers a folder to every reader that accepts directories (filename patterns
apply to files only), and napari's builtins accept all folders, so File > Open on a folder
first asks which reader to use (napari's rule; "Remember this choice" keeps it for that
folder). Chosen, this reader reads the DICOM series or says the folder contains none.
File > IO Utilities > "Open DICOM folder..." (`widgets/open_folder.py`) skips the
question (tests/test_reader_folders.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .io import MedicalImage, can_read, read_image

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike | Sequence[str | os.PathLike]


def layer_data(images: Sequence[MedicalImage]) -> list[LayerData]:
    """LayerData for each image, followed by its hidden '<name> (gray)' layer for colour data."""
    out: list[LayerData] = []
    for image in images:
        out.append(image.to_layer_data())
        gray = image.gray_layer_data()
        if gray is not None:
            out.append(gray)
    return out


def read_layers(path: PathLike) -> list[LayerData]:
    """The reader function napari calls (also the sample-data path)."""
    return layer_data(read_image(path))


def napari_get_reader(path: PathLike) -> Callable[[PathLike], list[LayerData]] | None:
    """Return :func:`read_layers` if every path is something we read, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(can_read(p) for p in paths):
        return None
    return read_layers
