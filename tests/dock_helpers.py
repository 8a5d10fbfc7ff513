"""Helpers for the docks' tests: a stand-in segmenter with an existence head, and the
sampling and gallery docks run once on what a viewer holds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from napari_ambiseg.testing import ScriptedSegmenter


class Evident(ScriptedSegmenter):
    """The scripted masks (`ScriptedSegmenter`'s groups and radii) with an existence head's
    answer: p of each slice of a volume (of a plane: `p[0]`); records whether each plane was
    drawn given a finding."""

    model = SimpleNamespace(existence=object())  # what the core checks for a head

    def __init__(self, p, **scripted):
        super().__init__(**scripted)
        self.p, self.given = list(p), []

    def finding_probabilities(self, volume, zs, prompts, spacing=None, modality="auto"):
        return np.array([self.p[z] for z in zs])

    def sample(self, image, *args, given_finding=True, **kwargs):
        self.given.append(given_finding)
        r = super().sample(image, *args, **kwargs)
        r.finding_probability, r.conditional = self.p[0], given_finding
        return r


def sampled(viewer, qtbot, segmenter, n: int = 16, steps: int = 1):
    """A sampling and a gallery dock on `viewer`, `n` samples of `segmenter` drawn once at
    the chosen image's centre: (sampler, gallery)."""
    from napari_ambiseg.widgets.gallery import GalleryWidget
    from napari_ambiseg.widgets.sampling import SamplingWidget

    sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
    sampler.set_segmenter(segmenter, "stand-in")
    sampler.n.setValue(n)
    sampler.steps.setValue(steps)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    return sampler, gallery
