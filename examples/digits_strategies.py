"""Four fixed ways to transfer an ImageNet EfficientNet-Lite0 to 200 handwritten digits.

    python examples/digits_strategies.py [--epochs 15]

scikit-learn's digits, upsampled to 32 px, 20 labelled examples per class for training
and the other 1,597 for validation. Runs offline (weights from the `weights` extra).
"""

import argparse
import time

import torch

import autotransfer as at

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=15)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.set_num_threads(max(1, torch.get_num_threads()))

train, valid = at.data.demo("digits", image_size=32, per_class=20, seed=args.seed)
groups = len(at.get_backbone("efficientnet_lite0").layer_groups(
    at.create_backbone("efficientnet_lite0", pretrained=False)))
base = at.Strategy("efficientnet_lite0", epochs=args.epochs, image_size=32, batch_size=32)
strategies = {
    "scratch (random init)": base.replace(pretrained=False, lr=1e-3),
    "linear probe": base.replace(frozen_groups=groups, lr=3e-2, weight_decay=0.0),
    "half frozen + layer decay": base.replace(frozen_groups=groups // 2, lr=3e-3,
                                              layer_decay=0.8),
    "full fine-tune": base.replace(lr=1e-3),
}

print(f"digits at 32 px: {len(train)} train, {len(valid)} valid; efficientnet_lite0 has "
      f"{groups} layer groups; {args.epochs} epochs each\n")
print(f"{'strategy':<28}{'frozen':>7}{'val acc':>9}{'best ep':>9}{'seconds':>9}")
for label, strategy in strategies.items():
    t0 = time.perf_counter()
    r = at.run_trial(strategy, train, valid, task="classification", patience=None,
                     seed=args.seed)
    print(f"{label:<28}{strategy.frozen_groups:>7}{r.value:>9.3f}{r.best_epoch:>9}"
          f"{time.perf_counter() - t0:>9.1f}", flush=True)
