"""How much search a budget buys: autotransfer vs plain Optuna TPE vs random search.

    python benchmarks/search_efficiency.py                 # ~35 minutes on 2 CPU cores
    python benchmarks/search_efficiency.py --budget 60 --seeds 0   # a quick look

Task: scikit-learn digits at 32 px, 20 labels per class (400 validation images),
ImageNet EfficientNet-Lite0, the default SearchSpace with 10 epochs. Each method gets the
same wall-clock budget per seed (no trial starts after it) and the same seeds:
  - autotransfer: as shipped (feature cache, Hyperband on epochs, baselines, warm-start
    portfolio, cheap first)
  - tpe: plain Optuna TPE over the same space, no cache, no pruning, no baselines
  - random: random search over the same space, no cache, no pruning, no baselines
Then: cached vs uncached trial speed, orchestration overhead, and peak memory of a
30-trial search against its largest single trial (each in a fresh process).
Prints Markdown tables; raw figures go to benchmarks/results/search_efficiency.json
(`--report` prints the tables again from that file).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import autotransfer as at

RESULTS = Path(__file__).parent / "results" / "search_efficiency.json"

SPACE = at.SearchSpace(epochs=10, image_size=32)
METHODS = {
    "autotransfer": {},
    "tpe": dict(sampler="tpe", pruner="none", feature_cache=False, baselines=False,
                warm_start=False),
    "random": dict(sampler="random", pruner="none", feature_cache=False, baselines=False,
                warm_start=False),
}


def data(seed: int = 0):
    return at.data.demo("digits", image_size=32, per_class=20, valid_per_class=40, seed=seed)


def run_method(method: str, seed: int, budget: float) -> dict:
    train, valid = data()
    folder = Path(tempfile.mkdtemp(prefix="at-eff-"))
    t0 = time.time()
    study = at.search(train, valid=valid, backbones=["efficientnet_lite0"], timeout=budget,
                      storage=folder / "s.db", name=method, seed=seed, space=SPACE,
                      progress=False, final="best", **METHODS[method])
    wall = time.time() - t0
    trials = [t for t in study.trials() if t.datetime_complete]
    start = min(t.datetime_start for t in trials).timestamp()
    curve, best = [], 0.0
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        if t.state.name == "COMPLETE" and t.value > best:
            best = t.value
        curve.append((t.datetime_complete.timestamp() - t0, best))
    busy = max(t.datetime_complete.timestamp() for t in trials) - start
    durations = [t.user_attrs.get("duration_s", 0.0) for t in trials]
    compute = [t.user_attrs.get("compute_s", 0.0) for t in trials]
    shutil.rmtree(folder, ignore_errors=True)
    return {"method": method, "seed": seed, "wall_s": wall, "curve": curve, "final": best,
            "trials": len(trials), "busy_s": busy, "runner_s": sum(durations),
            "compute_s": sum(compute),
            "pruned": sum(t.state.name == "PRUNED" for t in trials)}


def best_at(curve, t):
    return max([b for s, b in curve if s <= t], default=0.0)


def time_to(curve, target):
    return next((s for s, b in curve if b >= target - 1e-12), None)


def speedups() -> list[dict]:
    """One trial cached (features from the cache) vs uncached (prefix every batch).

    At 32 px (the task) and, for contrast, 64 px, where the early groups weigh more.
    """
    from autotransfer.training.cache import FeatureCache

    groups = len(at.get_backbone("efficientnet_lite0").layer_groups(
        at.create_backbone("efficientnet_lite0", pretrained=False)))
    rows = []
    for label, frozen, size in (("linear probe", groups, 32), ("half frozen", groups // 2, 32),
                                ("half frozen", groups // 2, 64)):
        train, valid = at.data.demo("digits", image_size=size, per_class=20,
                                    valid_per_class=40)
        s = at.Strategy("efficientnet_lite0", frozen_groups=frozen, epochs=10,
                        image_size=size, lr=3e-3)
        cache = FeatureCache(None)
        t = time.perf_counter()
        at.run_trial(s, train, valid, cache=False, patience=None)
        uncached = time.perf_counter() - t
        t = time.perf_counter()
        at.run_trial(s, train, valid, cache=cache, patience=None)
        first = time.perf_counter() - t
        t = time.perf_counter()
        at.run_trial(s.replace(lr=1e-3), train, valid, cache=cache, patience=None)
        hit = time.perf_counter() - t
        rows.append({"trial": f"{label}, {size} px", "uncached_s": uncached,
                     "first_cached_s": first, "cache_hit_s": hit,
                     "speedup_first": uncached / first, "speedup_hit": uncached / hit})
    return rows


_MEMORY = r'''
import resource, sys, tempfile, time
import autotransfer as at
sys.path.insert(0, {bench!r})
from search_efficiency import SPACE, data
train, valid = data()
if sys.argv[1] == "search":
    at.search(train, valid=valid, backbones=["efficientnet_lite0"], n_trials=30,
              storage=tempfile.mkdtemp() + "/m.db", name="m", space=SPACE, progress=False)
else:  # the largest trial of that space: everything trains
    at.run_trial(at.Strategy("efficientnet_lite0", epochs=10, image_size=32), train, valid,
                 patience=None)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
'''


def peak_memory() -> dict:
    code = _MEMORY.format(bench=str(Path(__file__).parent))
    out = {}
    for what in ("trial", "search"):
        t = time.time()
        res = subprocess.run([sys.executable, "-c", code, what], capture_output=True, text=True,
                             check=True)
        kb = int(next(line.split()[1] for line in res.stdout.splitlines()
                      if line.startswith("PEAK_KB")))
        out[what] = {"peak_mb": kb / 1024, "seconds": time.time() - t}
    out["ratio"] = out["search"]["peak_mb"] / out["trial"]["peak_mb"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=180, help="seconds per method and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--report", action="store_true",
                        help=f"print the tables again from {RESULTS.name}, run nothing")
    args = parser.parse_args()
    if args.report:
        report(json.loads(RESULTS.read_text()))
        return

    runs = []
    for seed in args.seeds:
        for method in METHODS:
            r = run_method(method, seed, args.budget)
            runs.append(r)
            print(f"seed {seed} {method:<13} best {r['final']:.4f}  trials {r['trials']:>3} "
                  f"(pruned {r['pruned']})  {r['wall_s']:.0f} s", flush=True)

    rows = speedups()
    memory = None if args.skip_memory else peak_memory()
    results = {"runs": runs, "speedups": rows, "memory": memory, "budget": args.budget,
               "seeds": args.seeds}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    report(results)


def report(results: dict) -> None:
    """Print the Markdown tables for one run's raw figures."""
    runs, budget, seeds = results["runs"], results["budget"], results["seeds"]
    rows, memory = results["speedups"], results["memory"]
    by = {m: [r for r in runs if r["method"] == m] for m in METHODS}
    marks = [budget * f for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
    print("\n### Best validation accuracy by elapsed time (mean over seeds)\n")
    print("| method | " + " | ".join(f"{m:.0f} s" for m in marks) + " | trials | pruned |")
    print("|---|" + "---|" * (len(marks) + 2))
    for m, rs in by.items():
        cells = [statistics.mean(best_at(r["curve"], t) for r in rs) for t in marks]
        print(f"| {m} | " + " | ".join(f"{c:.3f}" for c in cells) +
              f" | {statistics.mean(r['trials'] for r in rs):.1f} | "
              f"{statistics.mean(r['pruned'] for r in rs):.1f} |")

    print("\n### Time autotransfer needs to reach each baseline method's final best\n")
    print("| seed | vs | their final best | their time | autotransfer's time | fraction |")
    print("|---|---|---|---|---|---|")
    for seed in seeds:
        ours = next(r for r in by["autotransfer"] if r["seed"] == seed)
        for other in ("tpe", "random"):
            theirs = next(r for r in by[other] if r["seed"] == seed)
            target = best_at(theirs["curve"], budget)
            their_t = time_to(theirs["curve"], target)
            our_t = time_to(ours["curve"], target)
            frac = None if our_t is None or not their_t else our_t / their_t
            print(f"| {seed} | {other} | {target:.4f} | {their_t:.0f} s | "
                  f"{'never' if our_t is None else f'{our_t:.0f} s'} | "
                  f"{'-' if frac is None else f'{frac:.2f}'} |")

    print("\n### Cached vs uncached trial (10 epochs, 200 train / 400 valid images)\n")
    print("| trial | uncached s | first cached s | cache hit s | speed-up (first) | "
          "speed-up (hit) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trial']} | {r['uncached_s']:.1f} | {r['first_cached_s']:.1f} | "
              f"{r['cache_hit_s']:.2f} | {r['speedup_first']:.1f}x | {r['speedup_hit']:.1f}x |")

    ours = by["autotransfer"]
    busy = sum(r["busy_s"] for r in ours)
    compute = sum(r["compute_s"] for r in ours)
    n = sum(r["trials"] for r in ours)
    print("\n### Orchestration overhead (autotransfer runs)\n")
    print(f"time outside training/validation: {(busy - compute) / n:.3f} s per trial, "
          f"{100 * (busy - compute) / busy:.1f}% of the search's busy time "
          f"(model build + weights load included: "
          f"{100 * (sum(r['runner_s'] for r in ours) - compute) / busy:.1f}%; "
          f"sampling, storage and pruning: "
          f"{100 * (busy - sum(r['runner_s'] for r in ours)) / busy:.1f}%)")

    if memory:
        print("\n### Peak memory (RSS, fresh processes)\n")
        print(f"largest single trial: {memory['trial']['peak_mb']:.0f} MB; 30-trial search: "
              f"{memory['search']['peak_mb']:.0f} MB; ratio {memory['ratio']:.2f}")



if __name__ == "__main__":
    main()
