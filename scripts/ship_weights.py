"""Ship trained weights as the bundled model: same tensors, the sampling settings chosen on
`val`, and the provenance in `info`.

    python scripts/ship_weights.py RUN5/best.safetensors --neighbour-steps 5 \
        --info docs/results/lidc_v5_ship.json [--out weights/ambiseg_lidc]

`--info` is a JSON object merged into the weights' own info (what it was trained on, how it
was selected, wall clock); the weights are re-saved with the current format version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_ambiseg.weights_io import load_weights, save_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", help="trained .safetensors (with its .json beside it)")
    p.add_argument("--neighbour-steps", type=int, default=None,
                   help="steps of neighbour-conditioned slices (coherent models)")
    p.add_argument("--sampler", default=None, help="the shipped sampler (default: unchanged)")
    p.add_argument("--info", default=None, help="JSON file merged into the weights' info")
    p.add_argument("--out", default="weights/ambiseg_lidc")
    args = p.parse_args(argv)

    model, cfg, info = load_weights(args.weights)
    changes = {k: v for k, v in (("neighbour_steps", args.neighbour_steps),
                                 ("sampler", args.sampler)) if v is not None}
    cfg = cfg.replace(**changes)
    if args.info:
        info = {**info, **json.loads(Path(args.info).read_text())}
    path = save_weights(model, cfg, args.out, info=info)
    print(f"shipped {args.weights} as {path} ({', '.join(f'{k}={v}' for k, v in changes.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
