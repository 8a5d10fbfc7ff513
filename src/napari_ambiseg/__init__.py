"""napari-ambiseg: show where experts would disagree, with diffusion-sampled segmentations.

The core (config, diffusion, models, segmenter, metrics, io, training) imports without Qt;
the napari widgets live in `napari_ambiseg.widgets`.
"""

__version__ = "0.1.0"
