"""Model soups and ensembles against the best single trial, on the quickstart's task or the
photo crops.

    .venv/bin/python benchmarks/soups.py [--seeds 0 1] [--keep 8]
    .venv/bin/python benchmarks/soups.py --task photos [--seeds 0 1] [--trials 20]

For each seed: the quickstart's search (studies/quickstart.toml: three EfficientNet-Lites,
20 trials, 200 digits at 32 px), or with ``--task photos`` the search of ``samplers.py
--task photos`` (the zoo's seven candidates on the photo crops at 64 px, ``--trials``
trials, no reference trials or warm start), keeping ``--keep`` checkpoints; then a
uniform soup of the kept trials of the best trial's backbone and a greedy soup chosen on
the validation set, then the same two ensembles (predictions averaged, any backbone). Prints each
model's validation score (a greedy one's is the walk's, chosen on that set) and test
accuracy with its bootstrap standard error; docs/benchmarks.md ("Model soups and
ensembles") holds the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import autotransfer as at  # noqa: E402
from autotransfer.config import load_study_file  # noqa: E402
from autotransfer.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def task(name: str, trials: int) -> tuple[dict, at.data.Dataset, at.data.Dataset]:
    if name == "quickstart":
        return load_study_file(ROOT / "studies" / "quickstart.toml")
    from samplers import photos

    kwargs, train, valid = photos()
    return {**kwargs, "n_trials": trials, "baselines": False, "warm_start": False}, train, valid


def run(seed: int, keep: int, folder: Path, name: str = "quickstart", trials: int = 20) -> None:
    kwargs, train, valid = task(name, trials)
    test = kwargs.pop("test")
    study = at.search(train, valid=valid, **{**kwargs, "seed": seed, "keep_checkpoints": keep,
                                             "storage": folder / "soups.db", "final": "best"},
                      progress=False)  # the soups and ensembles are made below
    rows = []
    for kind in ("soup", "ensemble"):
        for method in ("uniform", "greedy"):
            try:
                getattr(study, kind)(method=method, valid=valid if method == "greedy" else None)
            except ConfigError as exc:
                print(f"seed {seed}: no {method} {kind}: {exc}")
                continue
            scores = study.evaluate(test).set_index("model")
            made = study.system_attrs()[f"autotransfer:{kind}"]
            members = [f"{n} ({study.optuna.trials[n].user_attrs['backbone']})"
                       for n in made["members"]]
            rows.append((f"{method} {kind} of {', '.join(members)}", made["valid"],
                         scores.loc[kind, "accuracy"], scores.loc[kind, "accuracy_se"]))
    best = study.best_trial
    scores = study.evaluate(test).set_index("model")
    rows.insert(0, (f"best trial {best.number} ({best.user_attrs['backbone']})", best.value,
                    scores.loc[str(best.number), "accuracy"],
                    scores.loc[str(best.number), "accuracy_se"]))
    for name, val, acc, se in rows:
        shown = "-" if val is None else f"{val:.4f}"
        print(f"seed {seed}  {name:48s} valid {shown}  test {acc:.4f} ± {se:.4f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--keep", type=int, default=8)
    p.add_argument("--task", choices=["quickstart", "photos"], default="quickstart")
    p.add_argument("--trials", type=int, default=20, help="with --task photos")
    args = p.parse_args()
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            run(seed, args.keep, Path(folder), args.task, args.trials)


if __name__ == "__main__":
    main()
