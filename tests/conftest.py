import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("AMBISEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LIDC = SHARED / "data" / "lidc"


@pytest.fixture(scope="session")
def lidc_dir() -> Path:
    if not (LIDC / "test.npz").is_file():
        pytest.skip(f"LIDC data not found at {LIDC} (../shared is absent on this machine; "
                    "set AMBISEG_SHARED to its location)")
    return LIDC


@pytest.fixture(autouse=True)
def _recovery_dir(tmp_path_factory, monkeypatch):
    """Crash-recovery snapshots made by tests go to a temporary folder, never the user's."""
    monkeypatch.setenv("AMBISEG_RECOVERY_DIR", str(tmp_path_factory.mktemp("recovery")))


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep tests polite on a 2-core machine shared with other work."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_viewer(monkeypatch):
    """The napari writers see no viewer; their warning notifications are recorded (returned)."""
    from napari_ambiseg import _writer

    shown: list[str] = []
    monkeypatch.setattr(_writer, "_current_viewer", lambda: None)
    monkeypatch.setattr(_writer, "_warn", shown.append)
    return shown
