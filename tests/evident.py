"""A stand-in segmenter with an existence head's answer, for the docks' tests."""

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
