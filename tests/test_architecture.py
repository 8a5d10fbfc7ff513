"""The rooms stay layered: no import cycle, the core never reaches the widgets (#26)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "dependency_graph.py"


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("dependency_graph", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.edges()


def test_rooms_have_no_import_cycle(graph):
    mod, edges = graph
    assert mod.cycles(edges) == []


def test_only_front_ends_import_the_widgets(graph):
    _, edges = graph
    assert {room for room, deps in edges.items() if "widgets" in deps} <= {"cli"}


def test_the_segmenter_does_not_import_what_is_built_on_it(graph):
    _, edges = graph
    assert not edges["segmenter"] & {"volume_sampling", "training", "triage", "widgets", "cli"}
    assert not edges["config"] - {"errors"}  # the model's description is at the bottom


def test_the_volume_sampler_and_docks_open_without_pytorch():
    """PyTorch loads when a model is, not when a dock opens (it takes seconds)."""
    import subprocess
    import sys

    code = ("import sys, napari_ambiseg.volume_sampling, napari_ambiseg.widgets.engine; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
