"""Domain shift between photographs: colour crops to grey, dimmed ones (about 25 minutes).

    .venv/bin/python benchmarks/photo_shift.py [--seeds 0 1] [--trials 12] [--report]

The task is ``at.data.demo("photos")``'s: which of ten scikit-image pictures a 64 px crop
was cut from.
Training crops are colour, from the pictures' white tiles (20 per class). The target is
crops of the black tiles as a grey, dimmed camera would take them (luma, then contrast
x 0.4 around a dark offset): 40 per class unlabelled, 20 per class labelled to choose on
(a standard error of about 0.03, against 0.07 for part (c)'s 5 per class), 40 per class
to test on; the unlabelled, validation and test crops are different random crops of the
same black tiles, none of them seen in training. For each seed it runs part (c) of
``beyond.py``: a search of ``efficientnet_lite0`` with the adaptation fields in the space
(``unlabeled=`` given: ``adabn``, ``dann``) and one without, both from the same warm-start
portfolio; then the plain search's best strategy retrained with each adaptation added.
Needs scikit-image (``pip install 'autotransfer[photos]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

import beyond  # noqa: E402
from _beyond_data import DomainShift  # noqa: E402

import autotransfer as at  # noqa: E402
from autotransfer.data._demos import PICTURES, crops, picture  # noqa: E402

OUT = Path(__file__).parent / "results" / "photo_shift.json"
SIZE = 64
SPLITS = {"train": 20, "source_test": 20, "unlabeled": 40, "target_valid": 20,
          "target_test": 40}
DIM = (0.4, 20.0)  # contrast, offset (uint8 levels)


def to_target(x: np.ndarray) -> np.ndarray:
    """Grey (ITU-R 601 luma), then dimmed: what a grey camera in poor light records."""
    luma = x[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    dim = np.clip(np.round(luma * DIM[0] + DIM[1]), 0, 255).astype(np.uint8)
    return np.repeat(dim[..., None], 3, axis=-1)


def photo_shift(seed: int = 0) -> DomainShift:
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list, list]] = {k: ([], []) for k in SPLITS}
    for name in PICTURES:
        image = picture(name)
        for split, n in SPLITS.items():
            cut = crops(image, "white" if split == "train" else "black", n, SIZE, rng)
            if split not in ("train", "source_test"):
                cut = [to_target(c) for c in cut]
            parts[split][0].extend(cut)
            parts[split][1].extend([name] * n)
    data = {k: at.data.from_arrays(np.stack(x), y) for k, (x, y) in parts.items()}
    unlabeled = torch.from_numpy(np.stack(parts["unlabeled"][0])).permute(0, 3, 1, 2)
    return DomainShift("photos-grey-dim", data["train"], data["source_test"],
                       unlabeled.contiguous(), data["target_valid"], data["target_test"],
                       data["source_test"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--report", action="store_true", help="reprint the last results")
    args = parser.parse_args()
    if not args.report:
        result = beyond.part_c(tuple(args.seeds), args.trials, ("photos",),
                               make=lambda kind: photo_shift(),
                               space={**beyond.IMAGE_SPACE, "image_size": SIZE})
        result["config"]["data"] = (f"photo crops at {SIZE} px, colour -> grey and dimmed "
                                    f"{DIM}; per class: {SPLITS}")
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=1, default=str))
    beyond.report_c(json.loads(OUT.read_text()))


if __name__ == "__main__":
    sys.exit(main())
