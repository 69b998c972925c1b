"""Parallel trials and orchestration overhead (issue: trials across devices / Ray).

    python benchmarks/parallel.py            # ~6 minutes on a 2-core CPU machine

1. Trials per hour with 1 and 2 worker processes on a small real task: scikit-learn digits
   at 32 px, ImageNet EfficientNet-Lite0, 4 epochs per trial, no pruning, no baselines.
2. Orchestration overhead per trial of the Optuna and Ray backends on a trivial runner
   (a tiny CNN, one epoch on 60 images): wall time between the first trial's start and the
   last one's end, minus the time the runner itself reported, per trial.
Figures are printed as a Markdown table (and saved under benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import autotransfer as at
from autotransfer.testing import toy_images


def run(data, valid, *, backend: str, devices, n_trials: int, space, backbone: str):
    folder = Path(tempfile.mkdtemp(prefix="at-bench-"))
    t0 = time.perf_counter()
    study = at.search(data, valid=valid, backbones=[backbone], n_trials=n_trials,
                      storage=folder / "b.db", name="bench",
                      backend=(at.RayBackend if backend == "ray" else at.OptunaBackend)(
                          devices=devices),
                      baselines=False, pruner="none", patience=None, final="best",
                      space=space, progress=False)
    wall = time.perf_counter() - t0
    trials = [t for t in study.trials() if t.datetime_complete]
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    busy = (last - first).total_seconds()
    runner = sum(t.user_attrs.get("duration_s", 0.0) for t in trials)
    shutil.rmtree(folder, ignore_errors=True)
    return {"wall_s": wall, "trials": len(trials), "busy_s": busy, "runner_s": runner,
            "startup_s": wall - busy}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8, help="trials per real-task run")
    parser.add_argument("--trivial-trials", type=int, default=20)
    args = parser.parse_args()
    rows = []

    train, valid = at.data.demo("digits", image_size=32, per_class=20, valid_per_class=40)
    real = at.SearchSpace(epochs=4, image_size=32, mixup=0.0)
    for workers in (1, 2):
        r = run(train, valid, backend="optuna", devices=workers, n_trials=args.trials,
                space=real, backbone="efficientnet_lite0")
        rows.append({"measure": f"real task, {workers} worker(s)",
                     "trials/hour": round(r["trials"] / r["busy_s"] * 3600),
                     "wall s": round(r["wall_s"], 1), **r})
        print(rows[-1], flush=True)

    at.register_plugin("autotransfer.testing")
    toy = toy_images(80, classes=2, size=16)
    tr, va = toy.split(0.25)
    trivial = at.SearchSpace(epochs=1, image_size=16, mixup=0.0, frozen_groups=0)
    for backend in ("optuna", "ray"):
        r = run(tr, va, backend=backend, devices=1, n_trials=args.trivial_trials,
                space=trivial, backbone="tiny_cnn")
        per_trial = (r["busy_s"] - r["runner_s"]) / r["trials"]
        rows.append({"measure": f"trivial runner, {backend}",
                     "overhead s/trial": round(per_trial, 3),
                     "startup s": round(r["startup_s"], 1),
                     "runner s/trial": round(r["runner_s"] / r["trials"], 3), **r})
        print(rows[-1], flush=True)

    print("\n| measure | trials/hour | overhead s/trial | startup s | runner s/trial |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['measure']} | {row.get('trials/hour', '')} | "
              f"{row.get('overhead s/trial', '')} | {row.get('startup s', '')} | "
              f"{row.get('runner s/trial', '')} |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "parallel.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
