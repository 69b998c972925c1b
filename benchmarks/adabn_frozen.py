"""AdaBN with and without frozen BatchNorm layers, on a shift AdaBN should undo exactly.

    .venv/bin/python benchmarks/adabn_frozen.py [--seeds 0 1] [--frozen 0 4]

The target is the clean digits dimmed (``_beyond_data.DIM``: contrast x 0.25 on grey), a
positive affine change of intensity. A stem convolution followed by BatchNorm sees it as
an affine change of each channel, which statistics re-estimated on the target remove
exactly, provided the layer's statistics were estimated on the training data. A frozen
BatchNorm layer keeps ImageNet's statistics instead: classic AdaBN (target statistics in
place of the layer's, so the target leaves it N(0, 1)) misaligns it, since the training
data never was N(0, 1) there; ``adabn`` maps the target's moments onto the training
data's at each frozen layer (classic AdaBN at the trained ones). For each seed and number
of frozen groups this trains ``efficientnet_lite0`` (8 epochs, lr 1e-3, layer decay 0.8)
on 20 clean digits per class and prints the accuracy on 500 dimmed digits without
``adabn``, with classic AdaBN and with ``adabn`` (600 unlabelled dimmed digits), and on
200 clean ones; last epoch's weights, nothing chosen. The ``adabn`` column maps onto the
training data only where the trial runner hands the technique its data (``Trial.data``);
without it, it is classic.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from _beyond_data import digits_shift  # noqa: E402

import autotransfer as at  # noqa: E402
from autotransfer import plugins  # noqa: E402


def accuracy(strategy: at.Strategy, train: at.data.Dataset, test: at.data.Dataset,
             seed: int, unlabeled: at.data.Dataset | None = None,
             relative: bool = True) -> float:
    """``relative=False``: classic AdaBN (the technique's switch, put back after)."""
    adabn = plugins.technique_registry()["adabn"]
    adabn.relative = relative
    try:
        result = at.run_trial(strategy, train, test, keep="last", patience=None, seed=seed,
                              unlabeled=unlabeled)
    finally:
        adabn.relative = True
    return float(result.metrics["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--frozen", type=int, nargs="+", default=[0, 4])
    args = parser.parse_args()
    shift = digits_shift("dim")
    unlabeled = at.data.Dataset(shift.unlabeled, [0] * len(shift.unlabeled))
    print("| seed | frozen groups | clean test | dimmed test | dimmed, classic AdaBN | "
          "dimmed, adabn |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        for frozen in args.frozen:
            plain = at.Strategy("efficientnet_lite0", epochs=8, image_size=32, lr=1e-3,
                                layer_decay=0.8, frozen_groups=frozen)
            clean = accuracy(plain, shift.train, shift.source_test, seed)
            dimmed = accuracy(plain, shift.train, shift.target_test, seed)
            adabn = plain.replace(adabn=True)
            classic = accuracy(adabn, shift.train, shift.target_test, seed, unlabeled,
                               relative=False)
            adapted = accuracy(adabn, shift.train, shift.target_test, seed, unlabeled)
            print(f"| {seed} | {frozen}/8 | {clean:.3f} | {dimmed:.3f} | {classic:.3f} | "
                  f"{adapted:.3f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
