"""The docks' layer chooser follows the layer list: renames, reordering, removal, filters
(the reasons it is not magicgui's ComboBox, which matches choices by their text)."""

import numpy as np
from napari.layers import Image

from napari_ambiseg.widgets._qt import LayerChoice


def _texts(choice):
    return [choice.itemText(i) for i in range(choice.count())]


def test_choice_follows_the_layer_list(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    a = viewer.add_image(np.zeros((4, 4)), name="a")
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="labels")
    viewer.add_image(np.ones((4, 4)), name="b")
    choice = LayerChoice(viewer, (Image,), fixed=[("none", "none")],
                         keep=lambda la: not la.name.startswith("hidden"))
    assert _texts(choice) == ["none", "b", "a"]  # fixed entries first, then top layer first
    choice.set_value(a)
    changes = []
    choice.currentIndexChanged.connect(changes.append)

    a.name = "renamed"  # the chosen layer keeps its place, under its new name
    assert choice.value() is a and _texts(choice) == ["none", "b", "renamed"]
    viewer.layers.move(viewer.layers.index(a), len(viewer.layers))  # a on top
    assert choice.value() is a and _texts(choice) == ["none", "renamed", "b"]
    viewer.add_image(np.zeros((4, 4)), name="hidden")  # filtered out by `keep`
    assert _texts(choice) == ["none", "renamed", "b"] and changes == []  # nothing changed

    viewer.layers.remove(a)  # the choice is gone: the first entry, and one signal
    assert choice.value() == "none" and len(changes) == 1
