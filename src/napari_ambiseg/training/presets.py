"""The model presets a new run can start from (the training dock's "Model" choices), as
`ModelConfig` field overrides. Plain data: importing this module loads nothing else.

* standard: the LIDC recipe (`ModelConfig()` as it is);
* small: narrower networks, CPU friendly;
* tiny: the smallest model that runs the whole pipeline in seconds (smoke tests; the test
  suite's `testing.tiny_config` is this one).
"""

from __future__ import annotations

from typing import Any

TINY: dict[str, Any] = dict(crop_size=32, context_size=64, image_widths=(8, 16, 32),
                            mask_widths=(8, 16, 32))

PRESETS: dict[str, dict[str, Any]] = {
    "standard (LIDC recipe)": {},
    "small (CPU friendly)": {"image_widths": (16, 32, 64), "mask_widths": (16, 32, 64)},
    "tiny (smoke tests)": TINY,
}
