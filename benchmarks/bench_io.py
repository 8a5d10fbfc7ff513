"""Time and peak memory of reading a 512x512x300 int16 CT series (the issue's budget: <= 2.5x).

    python benchmarks/bench_io.py [--slices 300] [--size 512] [--repeat 1] [--compare] [--write-doc]

Builds the series with pydicom (napari_ambiseg.io.synthetic, intercept -1024, 16 bits stored)
in a temporary folder, then reads it in a fresh child process per measurement. tracemalloc
cannot see SimpleITK's C++ allocations, so memory is the process RSS: the baseline is the RSS
after imports and a warm-up read of a 2-slice series; the peak is ``ru_maxrss`` after the read.
``--compare`` also measures the plain ``sitk.ReadImage(files)`` + ``GetArrayFromImage`` route.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np, SimpleITK as sitk
from napari_ambiseg.io import read_image

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

mode, folder, small = sys.argv[1], sys.argv[2], sys.argv[3]
read_image(small)  # warm-up: GDCM dictionaries, lazy imports
if mode == "plain":
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(small)
    sitk.GetArrayFromImage(sitk.ReadImage(files))
base = rss_mb()
t = time.perf_counter()
if mode == "ambiseg":
    [im] = read_image(folder)
    arr = im.data
else:
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder)
    arr = sitk.GetArrayFromImage(sitk.ReadImage(files))
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": dt, "base_mb": base, "peak_mb": peak, "nbytes": int(arr.nbytes),
                  "dtype": str(arr.dtype), "shape": list(arr.shape),
                  "min": int(arr[::7, ::7, ::7].min()), "max": int(arr[::7, ::7, ::7].max())}))
"""


def build_series(folder: Path, slices: int, size: int) -> float:
    """Write the CT series; the HU content is a disc of soft tissue in air with a bone ring."""
    from napari_ambiseg.io.synthetic import write_ct_series

    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    base = np.where(r < 0.8, 1064, 24).astype(np.int16)  # stored = HU + 1024
    base[(r > 0.7) & (r < 0.8)] = 2024
    rng = np.random.default_rng(0)

    def slice_k(k: int) -> np.ndarray:
        return base + rng.integers(-20, 20, base.shape, dtype=np.int16) + np.int16(k % 50)

    t = time.perf_counter()
    write_ct_series(folder / "big", shape=(slices, size, size), spacing=(1.0, 0.7, 0.7),
                    volume=slice_k, description="Benchmark CT")
    write_ct_series(folder / "small", shape=(2, size, size), description="Warm-up")
    return time.perf_counter() - t


def measure(mode: str, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder / "big"), str(folder / "small")],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict, args, build_s: float) -> str:
    a = results["ambiseg"]
    volume_mb = a["nbytes"] / 2**20
    lines = [
        "# I/O benchmark: reading a CT series",
        "",
        f"Command: `python benchmarks/bench_io.py --slices {args.slices} --size {args.size}"
        f"{' --compare' if args.compare else ''} --write-doc`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other work), no GPU; "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}.",
        "",
        f"Series: N = {args.slices} slices of {args.size}x{args.size} int16 (16 bits stored, "
        f"intercept -1024), written with pydicom in {build_s:.1f} s. Volume: {volume_mb:.0f} MiB as {a['dtype']}.",
        "",
        "Memory is the child process's RSS: peak (`ru_maxrss`) minus the RSS after imports and a "
        "warm-up read. Budget: 2.5x the volume.",
        "",
        "| reader | time (s) | peak above baseline (MiB) | x volume | output dtype |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        extra = r["peak_mb"] - r["base_mb"]
        lines.append(f"| {name} | {r['seconds']:.2f} | {extra:.0f} | {extra / volume_mb:.2f} | {r['dtype']} |")
    lines += ["", "`ambiseg` is `napari_ambiseg.io.read_image(folder)` (chunked SimpleITK reads into one "
              "int16 array); `plain` is `sitk.GetArrayFromImage(sitk.ReadImage(files))`.", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--compare", action="store_true", help="also measure plain SimpleITK")
    p.add_argument("--write-doc", action="store_true", help="write docs/benchmarks_io.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ambiseg-bench-") as tmp:
        folder = Path(tmp)
        build_s = build_series(folder, args.slices, args.size)
        results = {"ambiseg": measure("ambiseg", folder)}
        if args.compare:
            results["plain"] = measure("plain", folder)
    text = report(results, args, build_s)
    print(text)
    a = results["ambiseg"]
    ratio = (a["peak_mb"] - a["base_mb"]) / (a["nbytes"] / 2**20)
    print(f"ambiseg: {a['seconds']:.2f} s, peak {ratio:.2f}x the volume, values {a['min']}..{a['max']} HU")
    if args.write_doc:
        (ROOT / "docs" / "benchmarks_io.md").write_text(text)
    return 0 if ratio <= 2.5 else 1


if __name__ == "__main__":
    sys.exit(main())
