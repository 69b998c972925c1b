"""Augmentation at cache speed: frozen trials with train-time augmentation, live vs cached views.

A trial that freezes part of its backbone and augments its inputs either runs the frozen
prefix on every augmented batch (live: a fresh view of every image each epoch) or reads
the cached prefix outputs of ``AUG_VIEWS`` augmented views per image (one drawn at random
each epoch). This compares their time and validation accuracy on digits, and a plain
(unaugmented) cached trial for reference.

    python benchmarks/augmented_views.py            # about 5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import autotransfer as at  # noqa: E402
from autotransfer.training import features  # noqa: E402


def run(strategy: at.Strategy, train, valid, views: int) -> tuple[float, float, str]:
    features.AUG_VIEWS = views
    t0 = time.perf_counter()
    r = at.run_trial(strategy, train, valid, patience=None)
    return time.perf_counter() - t0, r.value, r.cache_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--augment", default="trivial")
    args = ap.parse_args()
    train, valid = at.data.demo("digits", image_size=args.image_size, per_class=20,
                                valid_per_class=40)
    base = at.Strategy("efficientnet_lite0", epochs=args.epochs, image_size=args.image_size,
                       lr=3e-3, layer_decay=0.8)
    print(f"digits at {args.image_size} px, 200 train / 400 valid, {args.epochs} epochs, "
          f"EfficientNet-Lite0, augment={args.augment}\n")
    print("| frozen groups | trial | seconds | accuracy | cached |")
    print("|---|---|---|---|---|")
    for frozen in (4, 6):
        s = base.replace(frozen_groups=frozen)
        aug = s.replace(augment=args.augment)
        rows = [("no augmentation, cached", s, features.AUG_VIEWS),
                ("augmented, prefix live", aug, 0),
                ("augmented, 4 cached views", aug, 4)]
        for label, strategy, views in rows:
            secs, acc, source = run(strategy, train, valid, views)
            print(f"| {frozen}/8 | {label} | {secs:.1f} | {acc:.4f} | {source} |", flush=True)


if __name__ == "__main__":
    main()
