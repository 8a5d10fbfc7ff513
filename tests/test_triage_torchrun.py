"""`torchrun --nproc_per_node 2 -m napari_ambiseg.cli triage ...` gives the worklist of one
process: prompt i on rank i % 2 with seed + i, rank 0 merging after the barrier."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_triage_run import tiny_weights, write_cases

from napari_ambiseg import worklist as wl

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))

needs_torchrun = pytest.mark.skipif(not Path(TORCHRUN).is_file(),
                                    reason="torchrun is not installed beside this Python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_module_runs():
    out = subprocess.run([sys.executable, "-m", "napari_ambiseg.cli", "triage", "--help"],
                         capture_output=True, text=True, check=True)
    assert "--prompts" in out.stdout and "--unconditional" in out.stdout


@needs_torchrun
def test_two_processes_give_the_worklist_of_one(tmp_path):
    cases = write_cases(tmp_path / "cases")
    weights = str(tiny_weights(tmp_path / "tiny.safetensors"))
    args = ["triage", str(cases), "--weights", weights, "--samples", "3", "--steps", "2"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    run([sys.executable, "-m", "napari_ambiseg.cli", *args, "--out", str(tmp_path / "one")],
        env)
    two = run([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "napari_ambiseg.cli", *args, "--out",
               str(tmp_path / "two")], env)
    assert "rank 1/2" in two.stderr and two.stdout.count("4 prompts (3 ranked") == 1
    one_csv = (tmp_path / "one" / "worklist.csv").read_text()
    assert one_csv == (tmp_path / "two" / "worklist.csv").read_text()
    assert (tmp_path / "two" / "report.html").is_file()
    for key in ("ct_a", "series_c", "slice_b"):
        a, _ = wl.load_samples(tmp_path / "one", key)
        b, _ = wl.load_samples(tmp_path / "two", key)
        np.testing.assert_array_equal(a, b)
