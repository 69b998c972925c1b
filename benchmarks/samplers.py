"""Samplers for short budgets: TPE against Optuna's GPSampler (``sampler="gp"``, TPE for
the conditional fields) at 20 trials, on the quickstart's task or the photo crops.

    .venv/bin/python benchmarks/samplers.py [--seeds 0 1 2] [--trials 20] [--quickstart]
    .venv/bin/python benchmarks/samplers.py --task photos [--seeds 0]

For each seed and sampler: the quickstart's search (studies/quickstart.toml: three
EfficientNet-Lites, 200 digits at 32 px, 400 validation and 400 test digits), by default
with no reference trials and no warm start so that every trial is the sampler's
(``--quickstart``: as the study file has it, 9 reference trials and 3 warm-start points
first). ``--task photos``: ``at.data.demo("photos")`` at 64 px (20 training, 40
validation and 40 test crops per class) over ``backbone_ranking.ZOO``'s seven candidates,
8 epochs a trial, no reference trials or warm start (needs ``autotransfer[zoo,photos]``).
Prints the best validation accuracy, the best trial's test accuracy, the trial at which
the best was first reached and the seconds taken; docs/benchmarks.md
("Samplers") holds the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import autotransfer as at  # noqa: E402
from autotransfer.config import load_study_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def photos() -> tuple[dict, at.data.Dataset, at.data.Dataset]:
    from backbone_ranking import ZOO

    train, valid, test = at.data.demo("photos", image_size=64, per_class=20,
                                      valid_per_class=40, test_per_class=40)
    return {"test": test, "backbones": ZOO,
            "space": at.SearchSpace(epochs=8, image_size=64)}, train, valid


def run(seed: int, sampler: str, trials: int, quickstart: bool, folder: Path,
        task: str = "quickstart") -> dict:
    kwargs, train, valid = photos() if task == "photos" else load_study_file(
        ROOT / "studies" / "quickstart.toml")
    test = kwargs.pop("test")
    plain = {} if quickstart else {"baselines": False, "warm_start": False}
    started = time.perf_counter()
    study = at.search(train, valid=valid, test=test, **{
        **kwargs, **plain, "seed": seed, "sampler": sampler, "n_trials": trials,
        "storage": folder / f"{sampler}.db", "name": f"{sampler}-{seed}", "final": "best"},
        progress=False)
    seconds = time.perf_counter() - started
    lb = study.leaderboard()
    done = lb[lb["state"] == "complete"]
    best = done.iloc[0]
    first = min(int(t) for t, v in zip(done["trial"], done["accuracy"])
                if v == best["accuracy"])
    return {"valid": float(best["accuracy"]), "test": float(best["test_accuracy"]),
            "first_best_trial": first, "seconds": round(seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--quickstart", action="store_true",
                   help="keep the study file's reference trials and warm start")
    p.add_argument("--task", choices=["quickstart", "photos"], default="quickstart")
    args = p.parse_args()
    results: dict[str, list[dict]] = {"tpe": [], "gp": []}
    for seed in args.seeds:
        for sampler in results:
            with tempfile.TemporaryDirectory() as folder:
                r = run(seed, sampler, args.trials, args.quickstart, Path(folder), args.task)
            results[sampler].append(r)
            print(f"seed {seed}  {sampler:4s} best valid {r['valid']:.4f}  its test "
                  f"{r['test']:.4f}  first reached at trial {r['first_best_trial']:2d}  "
                  f"{r['seconds']:.0f} s", flush=True)
    for sampler, rows in results.items():
        print(f"mean {sampler:4s} best valid {statistics.mean(r['valid'] for r in rows):.4f}  "
              f"its test {statistics.mean(r['test'] for r in rows):.4f}  "
              f"{statistics.mean(r['seconds'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
