"""Beyond plain fine-tuning: adapters, distillation, domain shift, multi-task (issue 13).

    .venv/bin/python benchmarks/beyond.py                    # every part, seeds 0 1
    .venv/bin/python benchmarks/beyond.py --part a           # one part (repeatable: a c)
    .venv/bin/python benchmarks/beyond.py --part a --seeds 0 --trials 6
    .venv/bin/python benchmarks/beyond.py --part c --shift invert   # one target domain
    .venv/bin/python benchmarks/beyond.py --report           # reprint the stored results

Each part runs its searches on the same budget (``--trials``, else the part's default)
and seeds, stores its rows in ``benchmarks/results/beyond.json`` (a rerun replaces the
rows of the seeds it ran and keeps the others) and prints a table:

a. ``minilm_l6`` on a short-text task whose label needs word order
   (:func:`_beyond_data.contrast_reviews`), searched without adapters
   (``SearchSpace(adapter="none")``) and with them (the default space, which searches
   none / lora / bitfit / norm): best validation accuracy, test accuracy of the best,
   its trainable parameters, seconds per trial; and, within the search with adapters, the
   best trial with an adapter against the best without.
b. the digits quickstart's best model (``studies/quickstart.toml``'s search) distilled
   into a smaller or identical-size student: test accuracy kept, speed-up.
c. train on clean digits, target = inverted or noisy digits (unlabelled target inputs
   given, a small labelled target validation set chosen on): target test accuracy with
   and without the domain-adaptation fields (``adabn``, ``dann``) in the space; and the
   plain search's best strategy retrained with each adaptation added (``ABLATION``).
d. two targets of the digits (``_beyond_data.MULTITASK``) in one multi-task search
   against one single-task search per target.

Searches run without the baseline trials and pruning (see ``COMMON``), so every trial
runs to the end. Parts a and b search without the warm start too, so every trial there is
one the sampler drew from the space being compared; parts c and d begin both arms with the
same warm-start portfolio (``WARM``), without which 12 trials of the default space do not
train the clean digits well enough (best clean test accuracy 0.1-0.35 at 6 trials) for
the comparison to mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # _beyond_data, also when run from elsewhere

from _beyond_data import (  # noqa: E402
    MULTITASK,
    SHIFTS,
    DomainShift,
    contrast_reviews,
    digits_multitask,
    digits_shift,
    quickstart_digits,
    single_task,
)

import autotransfer as at  # noqa: E402

HERE = Path(__file__).parent
OUT = HERE / "results" / "beyond.json"
KEPT = HERE / "results" / "beyond_studies"  # part b's teacher searches, reused by reruns
QUICKSTART = HERE.parent / "studies" / "quickstart.toml"
SEEDS = (0, 1)
TRIALS = {"a": 8, "b": 6, "c": 12, "d": 12}  # per search, when --trials is not given
# No baselines or pruning (the warm start: WARM): every trial is one the sampler drew from
# the space under comparison, and runs all its epochs. With hyperband, 8-trial searches of part a
# completed only their first trial (the other 7 were pruned at epoch 1-2, adapter trials
# learning slower early), so "best" was whatever trial 0 drew.
COMMON = dict(baselines=False, pruner="none", progress=False, final="best")  # trials' figures
WARM = {"a": False, "b": False, "c": True, "d": True}  # the portfolio, in both arms alike
A_SPACE = dict(epochs=4, max_length=32, batch_size=16)  # 40 steps on 160 sentences
A_ARMS = {"without": dict(adapter="none"), "with": {}}
C_BACKBONES = ["efficientnet_lite0"]
D_BACKBONES = ["efficientnet_lite0"]
IMAGE_SPACE = dict(epochs=8, image_size=32)


# --- shared helpers ------------------------------------------------------------------------
def _timed_search(data: at.data.Dataset, folder: Path, name: str, **kw: Any) -> tuple[Any, float]:
    """``at.search`` under COMMON, with its part's (the name's first letter) warm start."""
    t0 = time.perf_counter()
    study = at.search(data, storage=folder / f"{name}.db", name=name, **COMMON,
                      warm_start=WARM[name[0]], **kw)
    return study, time.perf_counter() - t0


def _best(df: Any, metric: str, mask: Any = None) -> tuple[float | None, int]:
    """The best value among complete trials (under ``mask``) and how many there were."""
    done = df[(df["state"] == "complete") & (True if mask is None else mask)]
    if done.empty:
        return None, 0
    return float(done[metric].max()), len(done)


def _summary(study: at.Study, seconds: float) -> dict[str, Any]:
    """The best trial's scores and the search's cost, from its leaderboard."""
    df, metric = study.leaderboard(), study.metric
    ran = df[df["state"].isin(["complete", "pruned"])]
    best = df[df["state"] == "complete"].iloc[0]  # the leaderboard is best first
    test = best.get(f"test_{metric}")
    return {"best_val": float(best[metric]),
            "test": None if test is None or test != test else float(test),
            "best_trial": int(best["trial"]), "frozen_groups": int(best["frozen_groups"]),
            "n_groups": int(best["n_groups"]), "lr": float(best["lr"]),
            "trainable_params": int(best["trainable_params"]),
            "trials": len(ran), "pruned": int((df["state"] == "pruned").sum()),
            "failed": int((df["state"] == "failed").sum()),
            "mean_trial_s": float(ran["duration_s"].mean()),
            "mean_complete_s": float(ran[ran["state"] == "complete"]["duration_s"].mean()),
            "search_s": round(seconds, 1)}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


# --- part (a): adapters --------------------------------------------------------------------
def part_a(seeds: tuple[int, ...], trials: int) -> dict:
    """minilm_l6 searched with and without adapters on the contrast-sentiment task."""
    train, valid, test = contrast_reviews()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for arm, fixed in A_ARMS.items():
                study, seconds = _timed_search(
                    train, Path(tmp), f"a-{arm}-{seed}", valid=valid, test=test,
                    backbones=["minilm_l6"], n_trials=trials, seed=seed,
                    space=at.SearchSpace(**A_SPACE, **fixed))
                row = {"seed": seed, "arm": arm, "n_trials": trials,
                       **_summary(study, seconds), **_adapter_split(study)}
                rows.append(row)
                print(f"  a seed {seed} {arm} adapters: best {row['best_val']:.4f} "
                      f"({row['adapter']}), test {_fmt(row['test'])}, "
                      f"{row['mean_trial_s']:.1f} s/trial, {row['search_s']:.0f} s", flush=True)
    return {"config": {"data": "contrast_reviews() 160 / 200 / 200", "space": A_SPACE,
                       "backbone": "minilm_l6"}, "rows": rows}


def _adapter_split(study: at.Study) -> dict[str, Any]:
    """The best trial's adapter, and the best complete trials with and without one."""
    df, metric = study.leaderboard(), study.metric
    best = df[df["state"] == "complete"].iloc[0]
    with_adapter = df["adapter"] != "none"
    ran = df[df["state"].isin(["complete", "pruned"])]
    top_adapter, n_adapter = _best(df, metric, with_adapter)
    top_none, n_none = _best(df, metric, ~with_adapter)
    rank = best["lora_rank"] if best["adapter"] == "lora" else None
    return {"adapter": best["adapter"] + (f" r{int(rank)}" if rank else ""),
            "best_adapter_val": top_adapter, "complete_adapter": n_adapter,
            "best_none_val": top_none, "complete_none": n_none,
            "adapters_tried": ran["adapter"].value_counts().to_dict()}


def report_a(result: dict) -> None:
    rows = result["rows"]
    print(f"\n## (a) adapters: minilm_l6, {result['config']['data']}, "
          f"space {result['config']['space']}\n")
    print("| seed | adapters in space | best val acc | test acc of best | best trial "
          "| trainable params | s/trial (all / complete) | trials (pruned) | search s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['arm']} | {r['best_val']:.4f} | {_fmt(r['test'])} | "
              f"#{r['best_trial']} {r['adapter']}, frozen {r['frozen_groups']}/{r['n_groups']} | "
              f"{_params(r['trainable_params'])} | {r['mean_trial_s']:.1f} / "
              f"{_fmt(r['mean_complete_s'], 1)} | {r['trials']} ({r['pruned']}) | "
              f"{r['search_s']:.0f} |")
    for arm in A_ARMS:
        sub = [r for r in rows if r["arm"] == arm]
        print(f"| mean | {arm} | {_fmt(_mean(sub, 'best_val'))} | {_fmt(_mean(sub, 'test'))} "
              f"| | {_params(_mean(sub, 'trainable_params'))} | "
              f"{_fmt(_mean(sub, 'mean_trial_s'), 1)} / {_fmt(_mean(sub, 'mean_complete_s'), 1)}"
              f" | | {_fmt(_mean(sub, 'search_s'), 0)} |")
    print("\nWithin the search with adapters (complete trials):\n")
    print("| seed | best with an adapter (n) | best with adapter=none (n) | trials by adapter |")
    print("|---|---|---|---|")
    for r in (r for r in rows if r["arm"] == "with"):
        print(f"| {r['seed']} | {_fmt(r['best_adapter_val'])} ({r['complete_adapter']}) | "
              f"{_fmt(r['best_none_val'])} ({r['complete_none']}) | {r['adapters_tried']} |")


# --- part (b): distillation ----------------------------------------------------------------
STUDENTS = ("efficientnet_lite0", "teacher")  # the smallest Lite; the teacher's own size


def distill_student(teacher: at.Study, train: at.data.Dataset, valid: at.data.Dataset,
                    test: at.data.Dataset, *, student: str, transfer: Any, seed: int,
                    n_trials: int) -> Any:
    """The student distilled from ``teacher``'s best model (a Predictor) on the train
    digits plus ``transfer`` (the digits the quickstart leaves out, unlabelled). The
    sub-study is stored beside the kept teacher, so a rerun continues it."""
    return teacher.distill(student, train, transfer, valid=valid, test=test,
                           n_trials=n_trials, seed=seed, progress=False).student


def _teacher(seed: int, train: at.data.Dataset, valid: at.data.Dataset,
             test: at.data.Dataset) -> at.Study:
    """studies/quickstart.toml's search (its backbones, trials, space) for ``seed``, kept
    under results/beyond_studies/ so a rerun of part b reuses it."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    spec = tomllib.loads(QUICKSTART.read_text())
    KEPT.mkdir(parents=True, exist_ok=True)
    return at.search(train, valid=valid, test=test, backbones=spec["backbones"],
                     n_trials=spec["n_trials"], seed=seed, progress=False,
                     space=at.SearchSpace(**spec["space"]), storage=KEPT / f"teacher-{seed}.db",
                     name=f"quickstart-{seed}", final="best")  # the best trial teaches


def _score(predictor: Any, test: at.data.Dataset, repeats: int = 3) -> tuple[float, float]:
    """Test accuracy, and images/s of ``predict`` on the test set (best of ``repeats``:
    the machine is shared, so the fastest run is the least disturbed)."""
    accuracy = float(predictor.evaluate(test)["accuracy"])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict(test)
        best = min(best, time.perf_counter() - t0)
    return accuracy, len(test) / best


def part_b(seeds: tuple[int, ...], trials: int) -> dict:
    """The quickstart's best model distilled into each of STUDENTS."""
    train, valid, test, transfer = quickstart_digits()
    rows = []
    for seed in seeds:
        teacher = _teacher(seed, train, valid, test)
        backbone = teacher.leaderboard().iloc[0]["backbone"]
        t_acc, t_speed = _score(teacher.load_best(), test)
        for student in dict.fromkeys(backbone if s == "teacher" else s for s in STUDENTS):
            t0 = time.perf_counter()
            model = distill_student(teacher, train, valid, test, student=student,
                                    transfer=transfer, seed=seed, n_trials=trials)
            s_acc, s_speed = _score(model, test)
            rows.append({"seed": seed, "n_trials": trials, "teacher": backbone,
                         "student": student, "teacher_test": t_acc, "student_test": s_acc,
                         "teacher_img_s": t_speed, "student_img_s": s_speed,
                         "distill_s": round(time.perf_counter() - t0, 1)})
            print(f"  b seed {seed} {backbone} -> {student}: {t_acc:.4f} -> {s_acc:.4f}, "
                  f"speed-up {s_speed / t_speed:.2f}x", flush=True)
    return {"config": {"data": "quickstart digits 200 / 400 / 400 + transfer set"},
            "rows": rows}


def report_b(result: dict) -> None:
    print("\n## (b) distillation of the quickstart's best model\n")
    print("| seed | teacher | student | teacher test acc | student test acc | kept "
          "| images/s teacher / student | speed-up | distil s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['seed']} | {r['teacher']} | {r['student']} | {r['teacher_test']:.4f} | "
              f"{r['student_test']:.4f} | {r['student_test'] / r['teacher_test']:.1%} | "
              f"{r['teacher_img_s']:.0f} / {r['student_img_s']:.0f} | "
              f"{r['student_img_s'] / r['teacher_img_s']:.2f}x | {r['distill_s']:.0f} |")


# --- part (c): domain shift ----------------------------------------------------------------
def search_domain_adapted(shift: DomainShift, *, seed: int, n_trials: int, folder: Path,
                          space: dict = IMAGE_SPACE) -> tuple[at.Study, float]:
    """The search with the domain-adaptation fields (the default space searches ``adabn``
    and ``dann`` once ``unlabeled`` is given), and its seconds."""
    return _timed_search(shift.train, folder, "c-with", valid=shift.target_valid,
                         test=shift.target_test, unlabeled=shift.unlabeled,
                         backbones=C_BACKBONES, n_trials=n_trials, seed=seed,
                         space=at.SearchSpace(**space))


def part_c(seeds: tuple[int, ...], trials: int, shifts: tuple[str, ...] = SHIFTS, *,
           make: Callable[[str], DomainShift] = digits_shift,
           space: dict = IMAGE_SPACE) -> dict:
    """Clean digits -> inverted / noisy digits (or what ``make`` makes of each of
    ``shifts``), with and without adabn / dann searched."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in shifts:
            shift = make(kind)
            for seed in seeds:
                folder = Path(tmp) / f"c-{kind}-{seed}"
                arms = {"with": search_domain_adapted(shift, seed=seed, n_trials=trials,
                                                      folder=folder, space=space),
                        "without": _timed_search(
                            shift.train, folder, "c-without", valid=shift.target_valid,
                            test=shift.target_test, backbones=C_BACKBONES, n_trials=trials,
                            seed=seed, space=at.SearchSpace(**space))}
                for arm, (study, seconds) in arms.items():
                    row = {"shift": kind, "seed": seed, "arm": arm, "n_trials": trials,
                           **_summary(study, seconds), **_domain_split(study),
                           "source_test": _score(study.load_best(), shift.source_test, 1)[0]}
                    rows.append(row)
                    print(f"  c {kind} seed {seed} {arm}: target test {_fmt(row['test'])}, "
                          f"clean test {row['source_test']:.4f}", flush=True)
                best_plain = arms["without"][0].best_strategy
                rows[-1]["ablation"] = _ablation(best_plain, shift, seed)
    return {"config": {"backbones": C_BACKBONES, "space": IMAGE_SPACE, "warm_start": WARM["c"],
                       "data": "digits_shift(): 20/class clean train, 5/class target valid, "
                               "60/class unlabelled target, 50/class target test"},
            "rows": rows}


# Each adaptation added to the plain search's best strategy, all else equal.
ABLATION = {"plain": {}, "adabn": {"adabn": True}, "dann 0.1": {"dann": 0.1},
            "dann 0.3": {"dann": 0.3}, "adabn + dann 0.1": {"adabn": True, "dann": 0.1}}


def _ablation(strategy: at.Strategy, shift: DomainShift, seed: int) -> dict[str, float]:
    """Target test accuracy of ``strategy`` retrained (same seed, all its epochs, the
    last epoch's weights: nothing chosen on the test set) with each ABLATION change."""
    unlabeled = at.data.Dataset(shift.unlabeled, [0] * len(shift.unlabeled))
    out = {}
    for name, change in ABLATION.items():
        result = at.run_trial(strategy.replace(**change), shift.train, shift.target_test,
                              keep="last", patience=None, seed=seed, unlabeled=unlabeled)
        out[name] = float(result.metrics["accuracy"])
    print(f"  c {shift.kind} seed {seed} ablation: {out}", flush=True)
    return out


def _domain_split(study: at.Study) -> dict[str, Any]:
    """The best trial's adaptation, and the best complete trials with and without one."""
    df, metric = study.leaderboard(), study.metric
    best = df[df["state"] == "complete"].iloc[0]
    adapts = df["adabn"].fillna(False).astype(bool) | (df["dann"].fillna(0.0) > 0)
    top_da, n_da = _best(df, metric, adapts)
    top_plain, n_plain = _best(df, metric, ~adapts)
    return {"adabn": bool(best.get("adabn") or False), "dann": float(best.get("dann") or 0.0),
            "best_adapted_val": top_da, "complete_adapted": n_da,
            "best_plain_val": top_plain, "complete_plain": n_plain}


def report_c(result: dict) -> None:
    print(f"\n## (c) domain shift: {result['config']['data']}\n")
    print("| target | seed | adaptation in space | target val acc (best) | target test acc "
          "| clean test acc | best trial | best adapted / plain val (n) | s/trial |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        how = f"adabn={r['adabn']}, dann={r['dann']:g}, frozen {r['frozen_groups']}"
        print(f"| {r['shift']} | {r['seed']} | {r['arm']} | {r['best_val']:.4f} | "
              f"{_fmt(r['test'])} | {r['source_test']:.4f} | {how} | "
              f"{_fmt(r['best_adapted_val'])} ({r['complete_adapted']}) / "
              f"{_fmt(r['best_plain_val'])} ({r['complete_plain']}) | "
              f"{r['mean_trial_s']:.1f} |")
    for kind in dict.fromkeys(r["shift"] for r in result["rows"]):
        for arm in ("without", "with"):
            sub = [r for r in result["rows"] if r["shift"] == kind and r["arm"] == arm]
            if sub:
                print(f"| {kind} | mean | {arm} | {_fmt(_mean(sub, 'best_val'))} | "
                      f"{_fmt(_mean(sub, 'test'))} | {_fmt(_mean(sub, 'source_test'))} | | | "
                      f"{_fmt(_mean(sub, 'mean_trial_s'), 1)} |")
    _report_ablation(result["rows"])


def _report_ablation(rows: list[dict]) -> None:
    rows = [r for r in rows if r.get("ablation")]
    if not rows:
        return
    print("\nThe plain search's best strategy retrained with each adaptation added "
          "(target test accuracy, last epoch):\n")
    print(f"| target | seed | {' | '.join(ABLATION)} |")
    print("|---|---|" + "---|" * len(ABLATION))
    for r in rows:
        print(f"| {r['shift']} | {r['seed']} | "
              f"{' | '.join(_fmt(r['ablation'].get(k)) for k in ABLATION)} |")
    for kind in dict.fromkeys(r["shift"] for r in rows):
        sub = [r["ablation"] for r in rows if r["shift"] == kind]
        if sub:
            means = [_fmt(sum(a[k] for a in sub) / len(sub)) for k in ABLATION]
            print(f"| {kind} | mean | {' | '.join(means)} |")
    print()


# --- part (d): multi-task ------------------------------------------------------------------
def search_multitask(train: at.data.Dataset, valid: at.data.Dataset, test: at.data.Dataset,
                     *, seed: int, n_trials: int,
                     folder: Path) -> tuple[at.Study, float, dict[str, dict[str, float]]]:
    """One search over both MULTITASK targets, its seconds, and the best trial's scores
    per target ``{column: {"metric": name, "val": v, "test": t}}``."""
    study, seconds = _timed_search(train, folder, "d-multi", valid=valid, test=test,
                                   task=MULTITASK, backbones=D_BACKBONES, n_trials=n_trials,
                                   seed=seed, space=at.SearchSpace(**IMAGE_SPACE))
    best = study.leaderboard().query("state == 'complete'").iloc[0]
    per = {}
    for column, task in MULTITASK.items():
        metric = f"{column}_{at.plugins.get_head(task).metric}"
        test_value = best.get(f"test_{metric}")
        per[column] = {"metric": metric, "val": float(best[metric]),
                       "test": None if test_value is None else float(test_value)}
    return study, seconds, per


def part_d(seeds: tuple[int, ...], trials: int) -> dict:
    """One multi-task search against one single-task search per target."""
    train, valid, test = digits_multitask()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            folder = Path(tmp) / f"d-{seed}"
            multi, multi_s, per = search_multitask(train, valid, test, seed=seed,
                                                   n_trials=trials, folder=folder)
            multi_trial_s = _summary(multi, multi_s)["mean_trial_s"]
            for column, task in MULTITASK.items():
                study, seconds = _timed_search(
                    single_task(train, column), folder, f"d-{column}",
                    valid=single_task(valid, column), test=single_task(test, column),
                    task=task, backbones=D_BACKBONES, n_trials=trials, seed=seed,
                    space=at.SearchSpace(**IMAGE_SPACE))
                single = _summary(study, seconds)
                rows.append({"seed": seed, "n_trials": trials, "target": column,
                             "metric": study.metric, "single_val": single["best_val"],
                             "single_test": single["test"], "single_s": single["search_s"],
                             "multi_val": per[column]["val"], "multi_test": per[column]["test"],
                             "multi_s": round(multi_s, 1), "single_trial_s":
                             single["mean_trial_s"], "multi_trial_s": multi_trial_s})
                print(f"  d seed {seed} {column}: single {_fmt(single['test'])}, "
                      f"multi {_fmt(per[column]['test'])}", flush=True)
    return {"config": {"targets": MULTITASK, "backbones": D_BACKBONES, "space": IMAGE_SPACE,
                       "warm_start": WARM["d"]},
            "rows": rows}


def report_d(result: dict) -> None:
    print(f"\n## (d) multi-task: {result['config']['targets']}\n")
    print("| seed | target | metric | single-task val / test | multi-task val / test "
          "| search s: single / multi (both targets) | s/trial: single / multi |")
    print("|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['seed']} | {r['target']} | {r['metric']} | {_fmt(r['single_val'])} / "
              f"{_fmt(r['single_test'])} | {_fmt(r['multi_val'])} / {_fmt(r['multi_test'])} | "
              f"{r['single_s']:.0f} / {r['multi_s']:.0f} | "
              f"{r['single_trial_s']:.1f} / {r['multi_trial_s']:.1f} |")


# --- command line --------------------------------------------------------------------------
PARTS: dict[str, tuple[Callable[..., dict], Callable[[dict], None]]] = {
    "a": (part_a, report_a), "b": (part_b, report_b),
    "c": (part_c, report_c), "d": (part_d, report_d)}


def _merge(old: dict | None, new: dict) -> dict:
    """``new``'s rows, and ``old``'s rows of the (seed, shift) pairs this run did not run."""
    ran = {(r["seed"], r.get("shift")) for r in new["rows"]}
    kept = [r for r in (old or {}).get("rows", []) if (r["seed"], r.get("shift")) not in ran]
    return {**new, "rows": kept + new["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=sorted(PARTS), default=sorted(PARTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--trials", type=int, default=None,
                        help=f"trials per search (default per part: {TRIALS})")
    parser.add_argument("--shift", nargs="+", choices=SHIFTS, default=list(SHIFTS),
                        help="part c's target domains")
    parser.add_argument("--report", action="store_true", help="reprint the stored results")
    args = parser.parse_args()
    saved = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for part in args.part:
        run, report = PARTS[part]
        if not args.report:
            seeds = tuple(args.seeds)
            t0 = time.perf_counter()
            extra = {"shifts": tuple(args.shift)} if part == "c" else {}
            new = run(seeds, args.trials or TRIALS[part], **extra)
            new["seconds"] = round(time.perf_counter() - t0)
            saved[part] = _merge(saved.get(part), new)
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(saved, indent=1, default=str))
        if part in saved:
            report(saved[part])
        else:
            print(f"\n## ({part}) no stored results", flush=True)


if __name__ == "__main__":
    sys.exit(main())
