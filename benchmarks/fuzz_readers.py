"""Longer fuzzing of the readers: mutated real files must only raise AmbisegError.

    python benchmarks/fuzz_readers.py [--seconds 180] [--seed 0] [--out fuzz-failures]
    python benchmarks/fuzz_readers.py --atheris -- -max_total_time=180   # if atheris is installed

Seeds: pydicom's CT_small.dcm, MR_small.dcm, US1_UNCR.dcm (pydicom-data, if installed), and a
small NIfTI, MHA, NRRD and PNG written here. Each round flips/overwrites bytes (biased towards
the header), truncates or inserts, writes the result with the seed's extension and reads it.
A non-AmbisegError (or a crash, seen as a dead process) is a bug: the input is saved under
``--out`` to reproduce with ``python -c "from napari_ambiseg.io import read_image; read_image(PATH)"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from napari_ambiseg.errors import AmbisegError
from napari_ambiseg.io import read_image


def seeds(folder: Path) -> dict[str, bytes]:
    """name (with extension) -> bytes of every seed file."""
    import nibabel as nib
    import SimpleITK as sitk
    from PIL import Image
    from pydicom.data import get_testdata_file

    out = {}
    for name in ("CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm"):
        path = get_testdata_file(name, download=False)
        if path:
            out[name] = Path(path).read_bytes()
    vol = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    nib.save(nib.Nifti1Image(vol, np.diag([-0.8, 0.8, 2.0, 1.0])), folder / "seed.nii")
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((0.5, 0.6, 2.0))
    sitk.WriteImage(img, str(folder / "seed.mha"))
    sitk.WriteImage(img, str(folder / "seed.nrrd"))
    Image.fromarray((vol[0] * 3).astype(np.uint8)).save(folder / "seed.png")
    for name in ("seed.nii", "seed.mha", "seed.nrrd", "seed.png"):
        out[name] = (folder / name).read_bytes()
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    header = min(len(buf), 1500)
    for _ in range(int(rng.integers(1, 16))):
        pos = int(rng.integers(0, header if rng.random() < 0.7 else len(buf)))
        buf[pos] = int(rng.integers(0, 256)) if rng.random() < 0.7 else buf[pos] ^ (1 << int(rng.integers(0, 8)))
    if rng.random() < 0.2:
        pos = int(rng.integers(0, len(buf)))
        buf[pos:pos] = rng.bytes(int(rng.integers(1, 64)))
    if rng.random() < 0.2:
        buf = buf[: int(rng.integers(0, len(buf)))]
    return bytes(buf)


def run_one(path: Path, payload: bytes) -> str:
    """'ok', 'error' (an AmbisegError) or raise the unexpected exception."""
    path.write_bytes(payload)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_image(path)
        except AmbisegError:
            return "error"
    return "ok"


def fuzz_loop(seconds: float, seed: int, out: Path) -> int:
    rng = np.random.default_rng(seed)
    stats: Counter = Counter()
    bugs = 0
    with tempfile.TemporaryDirectory(prefix="ambiseg-fuzz-") as tmp:
        work = Path(tmp)
        corpus = seeds(work)
        names = sorted(corpus)
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            name = names[n % len(names)]
            payload = mutate(corpus[name], rng)
            target = work / f"case{Path(name).suffix}"
            try:
                stats[(name, run_one(target, payload))] += 1
            except Exception:  # noqa: BLE001 - exactly what we are hunting
                bugs += 1
                out.mkdir(parents=True, exist_ok=True)
                keep = out / f"bug{bugs:03d}_{name}"
                keep.write_bytes(payload)
                print(f"BUG on {keep}:\n{traceback.format_exc()}", file=sys.stderr)
            n += 1
    for name in names:
        print(f"{name:16s} ok={stats[(name, 'ok')]:5d} AmbisegError={stats[(name, 'error')]:5d}")
    print(f"{n} inputs in {seconds:.0f} s, {bugs} unexpected exceptions")
    return 1 if bugs else 0


def fuzz_atheris(argv: list[str]) -> int:  # pragma: no cover - optional tool
    import atheris

    work = Path(tempfile.mkdtemp(prefix="ambiseg-atheris-"))
    corpus = seeds(work)
    names = sorted(corpus)

    def one(data: bytes) -> None:
        if not data:
            return
        name = names[data[0] % len(names)]
        run_one(work / f"case{Path(name).suffix}", mutate(corpus[name], np.random.default_rng(list(data[:32]))))

    atheris.Setup([sys.argv[0], *argv], one)
    atheris.Fuzz()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    p.add_argument("--atheris", action="store_true", help="use atheris (pip install atheris)")
    args, rest = p.parse_known_args()
    if args.atheris:
        return fuzz_atheris(rest)
    return fuzz_loop(args.seconds, args.seed, args.out)


if __name__ == "__main__":
    sys.exit(main())
