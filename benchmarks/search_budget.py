"""Does a time budget hold? The quickstart's search with ``timeout`` and no ``n_trials``.

    .venv/bin/python benchmarks/search_budget.py [--timeout 120] [--repeats 1]

Prints, per run, when ``search`` returned against the timeout, where the time went
(ranking, trials, test scoring: the phases' start and end, seconds from the call), and
each trial's state, seconds and reason (a cut trial says so). The figures in
docs/benchmarks.md ("Budgets") come from this script.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import autotransfer as at  # noqa: E402
from autotransfer.config import load_study_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(module, name: str, marks: list) -> None:
    """Record when ``module.name`` is called and returns (seconds from the call's start)."""
    f = getattr(module, name)

    def wrapper(*args, **kwargs):
        t = time.time()
        try:
            return f(*args, **kwargs)
        finally:
            marks.append((name, t, time.time()))

    setattr(module, name, wrapper)


def run(timeout: float, folder: Path) -> None:
    from autotransfer.study import opening, results

    search_module = sys.modules["autotransfer.search"]
    marks: list = []
    timed(opening, "_ranking", marks)
    timed(search_module, "_score_test", marks)
    timed(results, "score", marks)
    kwargs, train, valid = load_study_file(ROOT / "studies" / "quickstart.toml")
    kwargs.pop("n_trials", None)
    start = time.time()
    study = at.search(train, valid=valid, **{**kwargs, "timeout": timeout,
                                             "storage": folder / "budget.db"}, progress=False)
    took = time.time() - start
    print(f"timeout {timeout:g} s: returned after {took:.1f} s ({took - timeout:+.1f} s)")
    for name, t0, t1 in marks:
        print(f"  {name:12s} {t0 - start:6.1f} -> {t1 - start:6.1f} s")
    lb = study.leaderboard().sort_values("trial")
    shown = [c for c in ("trial", "state", "baseline", "backbone", "epochs", "epochs_run",
                         "accuracy", "duration_s", "reason") if c in lb]
    print(lb[shown].to_string(index=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            run(args.timeout, Path(folder))


if __name__ == "__main__":
    main()
