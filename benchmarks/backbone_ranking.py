"""Does ranking backbones by LogME find the best one sooner? (about 45 minutes on 2 cores)

    .venv/bin/python benchmarks/backbone_ranking.py            # everything
    .venv/bin/python benchmarks/backbone_ranking.py --report   # reprint the last tables
    .venv/bin/python benchmarks/backbone_ranking.py --race     # step 3 again, on the saved
                                                               # steps 1-2 (about 26 min)

Digits at 32 px (20 labels per class, 400 validation images), five image candidates: the
ImageNet EfficientNet-Lite0/1/2 and two decoys with random weights (timm's resnet18 and
mobilenetv3_small_100, "pretrained" on nothing). Prints:

1. each backbone's LogME score and the seconds it took (``at.rank_backbones``);
2. the best accuracy each reaches with a fixed budget of its own (a search of N trials
   on that backbone alone), and Kendall's tau between the two;
3. over seeds, the time a search over all five needs to come within ``TOLERANCE`` of the
   best backbone's accuracy from step 2, with the ranking (``rank=True``: warm start on
   the best-ranked, a rank-seeded race) and with uniform backbone choice (``rank=False``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import autotransfer as at  # noqa: E402

OUT = Path(__file__).parent / "results" / "backbone_ranking.json"
IMAGENET = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
TRIALS_EACH = 12  # step 2: trials per backbone on its own (the warm start, then TPE)
BUDGET_S = 240  # step 3: seconds per search
SEEDS = (0, 1, 2)
TOLERANCE = 0.02  # about one standard error of an accuracy on 400 images
SPACE = dict(epochs=10, image_size=32)


def decoys() -> list[at.TimmBackbone]:
    return [at.TimmBackbone("decoy_resnet18", timm_name="resnet18", weights=None),
            at.TimmBackbone("decoy_mobilenetv3", timm_name="mobilenetv3_small_100",
                            weights=None)]


def data() -> tuple[at.data.Dataset, at.data.Dataset]:
    return at.data.demo("digits", image_size=32, per_class=20, valid_per_class=40)


def candidates() -> list:
    return [*IMAGENET, *decoys()]


def names() -> list[str]:
    return [c if isinstance(c, str) else c.name for c in candidates()]


def step_rank(train) -> list[dict]:
    from autotransfer import plugins

    for d in decoys():
        plugins.current().add_backbone(d)
    df = at.rank_backbones(train, backbones=names(), image_size=32)
    return df.to_dict("records")


def step_alone(train, valid, folder: Path) -> dict[str, float]:
    best = {}
    for c in candidates():
        name = c if isinstance(c, str) else c.name
        study = at.search(train, valid=valid, backbones=[c], n_trials=TRIALS_EACH,
                          storage=folder / f"alone-{name}.db", name=name, progress=False,
                          space=at.SearchSpace(**SPACE), baselines=False)
        best[name] = float(study.best_trial.value)
        print(f"  {name}: best accuracy {best[name]:.4f} from {TRIALS_EACH} trials",
              flush=True)
    return best


def step_race(train, valid, folder: Path, target: float) -> list[dict]:
    rows = []
    for seed in SEEDS:
        for rank in (True, False):
            t0 = datetime.datetime.now()
            study = at.search(train, valid=valid, backbones=candidates(), timeout=BUDGET_S,
                              storage=folder / f"race-{seed}-{rank}.db", name="race",
                              seed=seed, rank=rank, progress=False,
                              space=at.SearchSpace(**SPACE))
            reached, best = _time_to(study, target, t0)
            per = study.leaderboard().groupby("backbone")["trial"].count().to_dict()
            rows.append({"seed": seed, "rank": rank, "seconds_to_target": reached,
                         "best": best, "trials": int(sum(per.values())), "per_backbone": per})
            print(f"  seed {seed} rank={rank}: target {target:.4f} {_show(reached)}, "
                  f"best {best:.4f}, trials {per}", flush=True)
    return rows


def _show(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds:.0f} s"


def _time_to(study: at.Study, target: float, t0: datetime.datetime):
    done = sorted((t for t in study.trials() if t.value is not None
                   and t.datetime_complete is not None), key=lambda t: t.datetime_complete)
    best, reached = float("-inf"), None
    for t in done:
        best = max(best, t.value)
        if reached is None and t.value >= target:
            reached = (t.datetime_complete - t0).total_seconds()
    return reached, best


def report(result: dict) -> None:
    from scipy.stats import kendalltau

    alone = result["alone"]
    print("\n| backbone | LogME | seconds | best accuracy alone |\n|---|---|---|---|")
    for r in result["ranking"]:
        print(f"| {r['backbone']} | {r['score']:.3f} | {r['seconds']:.1f} | "
              f"{alone[r['backbone']]:.4f} |")
    scores = [r["score"] for r in result["ranking"]]
    accs = [alone[r["backbone"]] for r in result["ranking"]]
    tau = kendalltau(scores, accs).statistic
    print(f"\nKendall tau (LogME vs best accuracy alone): {tau:.2f}")
    print(f"target: {result['target']:.4f} (best alone - {TOLERANCE})\n")
    print("| seed | with ranking: s to target | uniform: s to target | best (rank / uniform) |")
    print("|---|---|---|---|")
    by = {(r["seed"], r["rank"]): r for r in result["race"]}
    ratios = []
    for seed in SEEDS:
        a, b = by[(seed, True)], by[(seed, False)]
        ta, tb = a["seconds_to_target"], b["seconds_to_target"]
        if ta is not None and tb is not None:
            ratios.append(ta / tb)
        print(f"| {seed} | {_show(ta)} | {_show(tb)} | {a['best']:.4f} / {b['best']:.4f} |")
    if ratios:
        print(f"\nratio (ranking / uniform) where both reached it: "
              f"{', '.join(f'{r:.2f}' for r in ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="reprint the last results")
    parser.add_argument("--race", action="store_true",
                        help="rerun step 3 only, on the saved steps 1-2")
    args = parser.parse_args()
    if args.report:
        report(json.loads(OUT.read_text()))
        return
    train, valid = data()
    if args.race:
        result = json.loads(OUT.read_text())
        step_rank(train)  # registers the decoys
        with tempfile.TemporaryDirectory() as tmp:
            result["race"] = step_race(train, valid, Path(tmp), result["target"])
        OUT.write_text(json.dumps(result, indent=1, default=str))
        report(result)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        print("1. LogME ranking", flush=True)
        ranking = step_rank(train)
        print("2. each backbone alone", flush=True)
        alone = step_alone(train, valid, folder)
        target = max(alone.values()) - TOLERANCE
        print("3. search over all five, with and without the ranking", flush=True)
        race = step_race(train, valid, folder, target)
    result = {"ranking": ranking, "alone": alone, "target": target, "race": race,
              "seconds": round(time.perf_counter() - t0)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1, default=str))
    report(result)


if __name__ == "__main__":
    sys.exit(main())
