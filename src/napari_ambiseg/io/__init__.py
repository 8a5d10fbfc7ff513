"""Medical image I/O without Qt or napari.

Read: :func:`read_image` (DICOM series folders, DICOM files, NIfTI, MHA/MHD, NRRD, PNG/JPEG/TIFF)
returns :class:`MedicalImage` objects; ``MedicalImage.to_layer_data()`` gives napari LayerData.
Write: :func:`write_labels` (NIfTI/MHA/MHD/NRRD, DICOM-SEG for ``.dcm``), :func:`write_agreement`,
:func:`write_image`, all with the source geometry.
Windows: :data:`CT_PRESETS`, :func:`preset_limits`, :func:`apply_window_preset`.
Model input: :mod:`.preprocess`.
"""

from .dicom_seg import write_dicom_seg, write_fractional_seg
from .reader import read_image
from .seg_read import read_dicom_seg
from .sniff import can_read
from .volume import METADATA_KEY, MedicalImage
from .windows import CT_PRESETS, apply_window_preset, parse_windows, preset_limits, window_to_limits
from .writers import as_reference, embed_in_reference, reference_from_layer, write_agreement, write_image, write_labels

__all__ = [
    "CT_PRESETS",
    "METADATA_KEY",
    "MedicalImage",
    "apply_window_preset",
    "as_reference",
    "can_read",
    "embed_in_reference",
    "parse_windows",
    "preset_limits",
    "read_dicom_seg",
    "read_image",
    "reference_from_layer",
    "window_to_limits",
    "write_agreement",
    "write_dicom_seg",
    "write_fractional_seg",
    "write_image",
    "write_labels",
]
