"""Drill: two ``search`` processes started together on one new study run no strategy twice.

    .venv/bin/python benchmarks/concurrent_searches.py            # 3 repetitions, ~1 min
    .venv/bin/python benchmarks/concurrent_searches.py --reps 5 --trials 8

Each repetition makes a new study: two processes (spawned, so nothing is shared but the
storage) wait on one event, then both call ``at.search`` with the same arguments, storage
and name, on the tiny test backbone at 16 px. Both draw from the sampler (no baselines, no
warm-start points), the hardest case: before each search() call was seeded apart, both
processes seeded alike and ran the same first sampled strategy. One line per repetition:
trials, distinct strategies, duplicated strategies (trial numbers), and each trial's process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path

os.environ["AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD"] = "1"


def _search(storage: str, n_trials: int, go, seed: int) -> None:
    import autotransfer as at
    from autotransfer.testing import toy_images

    at.register_plugin("autotransfer.testing")
    at.register_plugin("autotransfer_plugins.heads")
    at.register_plugin("autotransfer_plugins.techniques")
    go.wait()
    at.search(toy_images(48, classes=3, size=16), backbones=["tiny_cnn", "tiny_resnet"],
              n_trials=n_trials, storage=storage, name="drill", seed=seed,
              space=at.SearchSpace(epochs=1, image_size=16), progress=False,
              baselines=False, warm_start=False, rank=False)


def repetition(folder: Path, n_trials: int, seed: int) -> dict:
    import autotransfer as at
    from autotransfer import storage as st

    storage = str(folder / "drill.db")
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_search, args=(storage, n_trials, go, seed)) for _ in range(2)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join()
    trials = at.Study.load(storage, "drill").trials()
    seen: dict[str, list[int]] = {}
    for t in trials:
        key = json.dumps(t.system_attrs.get(st.STRATEGY), sort_keys=True)
        seen.setdefault(key, []).append(t.number)
    return {"trials": len(trials), "distinct": len(seen),
            "duplicated": [numbers for numbers in seen.values() if len(numbers) > 1],
            "pids": sorted({t.system_attrs.get(st.PID) for t in trials}),
            "exit codes": [p.exitcode for p in procs]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--trials", type=int, default=6, help="n_trials of the study")
    args = p.parse_args()
    bad = 0
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="drill_") as d:
            r = repetition(Path(d), args.trials, seed=rep)
        bad += bool(r["duplicated"]) or any(r["exit codes"])
        print(f"repetition {rep}: {r['trials']} trials from {len(r['pids'])} processes, "
              f"{r['distinct']} distinct strategies, duplicated: {r['duplicated'] or 'none'}, "
              f"exit codes {r['exit codes']}", flush=True)
    print(f"{args.reps - bad} of {args.reps} repetitions ran no strategy twice")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
