"""Does ranking backbones first find the best one sooner? (about an hour a task, 2 cores)

    .venv/bin/python benchmarks/backbone_ranking.py              # every task
    .venv/bin/python benchmarks/backbone_ranking.py --task text  # one task
    .venv/bin/python benchmarks/backbone_ranking.py --no-race    # steps 1-2 only
    .venv/bin/python benchmarks/backbone_ranking.py --report     # reprint the last tables
    .venv/bin/python benchmarks/backbone_ranking.py --race       # step 3 again, on the saved
                                                                 # steps 1-2
    .venv/bin/python benchmarks/backbone_ranking.py --task photos --race --variants ranked_cut1

Four tasks. ``photos`` and ``digits64`` (64 px, 20 training and 40 validation images per
class) have seven real candidates of three families and two source domains, from the zoo
plugin (``autotransfer[zoo]``, ``photos`` also needs ``autotransfer[photos]``): the
EfficientNet-Lite0/1/2 and MobileNetV2 (ImageNet), ccexam's MNIST, USPS and SVHN CNNs
(digits); a randomly initialised Lite0 is ranked beside them (step 1 only).

- ``photos``: ``at.data.demo("photos")``, which of ten scikit-image pictures a crop is from.
- ``digits64``: scikit-learn's digits at 64 px.

The first two tasks, ranked by LogME until 2026-12-05, have ImageNet- or text-pretrained
candidates and decoys of the same families with random weights ("pretrained" on nothing):

- ``image``: digits at 32 px (20 labels per class, 400 validation images); EfficientNet-
  Lite0/1/2 and timm's resnet18 and mobilenetv3_small_100 as decoys.
- ``text``: short review sentences, positive or negative, where the validation sentences
  use adjectives the training sentences never do (pretrained word knowledge must carry
  over); MiniLM-L6 and two randomly initialised BERTs (MiniLM's shape, and a 2-layer one).

For each it prints:

1. each backbone's ranking score (a held-out linear probe; LogME beside it) and the
   seconds it took (``at.rank_backbones``);
2. the best accuracy each reaches with a fixed budget of its own (a search of N trials
   on that backbone alone), and Kendall's tau between the two;
3. over seeds, the time a search over all candidates needs to come within ``TOLERANCE``
   of the best backbone's accuracy from step 2, with the ranking (``rank=True``: warm
   start on the best-ranked, a rank-seeded race) and with uniform backbone choice
   (``rank=False``). Both searches get the candidates in the same seeded random order, as
   a user would list them without knowing which transfer (the order decides which two
   backbones the warm-start portfolio covers when there is no ranking).
   ``--variants ranked_cut1`` adds a third search: ranked, with every trial judged once,
   after its first epoch, the worse half stopped (the default pruner judges at the first
   epoch after the learning-rate warm-up, then at each doubling).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import autotransfer as at  # noqa: E402

OUT = Path(__file__).parent / "results" / "backbone_ranking.json"
SEEDS = (0, 1, 2)
TOLERANCE = 0.02  # about one standard error of an accuracy on 400 images


@dataclass
class Task:
    name: str
    data: Callable[[], tuple[at.data.Dataset, at.data.Dataset]]
    named: list[str]  # registered backbones with real pretrained weights
    decoys: Callable[[], list[Any]]  # backbone objects with random weights
    space: dict[str, Any]
    trials_each: int  # step 2: trials per backbone on its own (the warm start, then TPE)
    budget_s: int  # step 3: seconds per search
    rank_kw: dict[str, Any] = field(default_factory=dict)
    ranked_only: Callable[[], list[Any]] = list  # step 1 only: decoys the ranking must sink

    def candidates(self) -> list[Any]:
        return [*self.named, *self.decoys()]

    def names(self) -> list[str]:
        return [c if isinstance(c, str) else c.name for c in self.candidates()]


def image_decoys() -> list[at.TimmBackbone]:
    return [at.TimmBackbone("decoy_resnet18", timm_name="resnet18", weights=None),
            at.TimmBackbone("decoy_mobilenetv3", timm_name="mobilenetv3_small_100",
                            weights=None)]


def digits() -> tuple[at.data.Dataset, at.data.Dataset]:
    return at.data.demo("digits", image_size=32, per_class=20, valid_per_class=40)


POSITIVE = ("good great excellent wonderful superb delightful fantastic lovely brilliant "
            "pleasant outstanding marvelous terrific splendid enjoyable charming perfect "
            "amazing fabulous impressive").split()
NEGATIVE = ("bad terrible awful horrible dreadful poor disappointing lousy unpleasant "
            "mediocre dismal miserable atrocious boring painful annoying disgusting weak "
            "pathetic unbearable").split()
SUBJECTS = ("the film", "the meal", "our stay", "the service", "this book", "the concert",
            "the hotel room", "the game", "the lecture", "the trip", "the coffee", "the show")
TEMPLATES = ("{s} was {a}.", "honestly, {s} was {a}", "i found {s} {a}", "{s}: {a}, really",
             "all in all {s} was {a}", "we thought {s} was {a}")


def reviews() -> tuple[at.data.Dataset, at.data.Dataset]:
    """Train on half the adjectives of each polarity, validate on the other half."""
    def sentences(adjectives: dict[str, int], n: int, seed: int):
        rng = random.Random(seed)
        words = sorted(adjectives)
        texts, labels = [], []
        for i in range(n):
            a = words[i % len(words)]
            texts.append(rng.choice(TEMPLATES).format(s=rng.choice(SUBJECTS), a=a))
            labels.append(["negative", "positive"][adjectives[a]])
        return at.data.from_texts(texts, labels)

    half = len(POSITIVE) // 2
    seen = {**{a: 1 for a in POSITIVE[:half]}, **{a: 0 for a in NEGATIVE[:half]}}
    unseen = {**{a: 1 for a in POSITIVE[half:]}, **{a: 0 for a in NEGATIVE[half:]}}
    return sentences(seen, 200, 0), sentences(unseen, 400, 1)


def text_decoys() -> list[at.HFBackbone]:
    from autotransfer_plugins.packaged_backbones import _minilm  # the tokenizer only
    from transformers import BertConfig

    shapes = {"decoy_bert_l6": dict(hidden_size=384, num_hidden_layers=6,
                                    num_attention_heads=12, intermediate_size=1536),
              "decoy_bert_l2": dict(hidden_size=128, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=512)}
    return [at.HFBackbone(name, weights=None, config=BertConfig(vocab_size=30522, **shape),
                          tokenizer=str(_minilm()), max_length=32)
            for name, shape in shapes.items()]


def random_lite0() -> list[at.TimmBackbone]:
    return [at.TimmBackbone("random_lite0", timm_name="efficientnet_lite0", weights=None)]


def digits64() -> tuple[at.data.Dataset, at.data.Dataset]:
    return at.data.demo("digits", image_size=64, per_class=20, valid_per_class=40)


def photos() -> tuple[at.data.Dataset, at.data.Dataset]:
    return at.data.demo("photos", image_size=64, per_class=20, valid_per_class=40)


# Three families and two source domains: ImageNet (EfficientNet-Lite, MobileNetV2) and
# digits (MNIST, USPS, SVHN CNNs); the zoo plugin (autotransfer[zoo]) registers the last four.
ZOO = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2",
       "mnist_cnn", "usps_cnn", "svhn_cnn"]
AT_64 = dict(space=dict(epochs=8, image_size=64), trials_each=12, budget_s=300,
             rank_kw=dict(image_size=64), ranked_only=random_lite0)

TASKS = {
    "photos": Task("photos", photos, ZOO, list, **AT_64),
    "digits64": Task("digits64", digits64, ZOO, list, **AT_64),
    "image": Task("image", digits, ["efficientnet_lite0", "efficientnet_lite1",
                                    "efficientnet_lite2"], image_decoys,
                  dict(epochs=10, image_size=32), trials_each=12, budget_s=240,
                  rank_kw=dict(image_size=32)),
    "text": Task("text", reviews, ["minilm_l6"], text_decoys, dict(epochs=6),
                 trials_each=8, budget_s=180),
}


def step_rank(task: Task, train) -> list[dict]:
    from autotransfer import plugins

    extra = task.ranked_only()
    for d in [*task.decoys(), *extra]:
        plugins.current().add_backbone(d)
    df = at.rank_backbones(train, backbones=[*task.names(), *(d.name for d in extra)],
                           **task.rank_kw)
    return df.to_dict("records")


def step_alone(task: Task, train, valid, folder: Path) -> dict[str, float]:
    best = {}
    for c in task.candidates():
        name = c if isinstance(c, str) else c.name
        study = at.search(train, valid=valid, backbones=[c], n_trials=task.trials_each,
                          storage=folder / f"alone-{name}.db", name=name, progress=False,
                          space=at.SearchSpace(**task.space), baselines=False, final="best")
        best[name] = float(study.best_trial.value)
        print(f"  {name}: best accuracy {best[name]:.4f} from {task.trials_each} trials",
              flush=True)
    return best


def listed(task: Task, seed: int) -> list[Any]:
    """The candidates in the order a user might list them: seeded, random."""
    return random.Random(seed).sample(task.candidates(), k=len(task.candidates()))


def one_epoch_cut():
    """The rule the issue proposed: judge every trial once, after its first epoch, and keep
    the better half (the default judges at the first epoch after the warm-up)."""
    import optuna

    from autotransfer.backends._policy import EarlyRungs

    return EarlyRungs(optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=2, min_early_stopping_rate=0), last=1)


# step 3's searches: keyword arguments of at.search beside the candidates and the budget
VARIANTS: dict[str, Callable[[], dict[str, Any]]] = {
    "ranked": lambda: {"rank": True},
    "uniform": lambda: {"rank": False},
    "ranked_cut1": lambda: {"rank": True, "pruner": one_epoch_cut()},
}


def variant(row: dict) -> str:
    return row.get("variant", "ranked" if row["rank"] else "uniform")  # older rows: rank


def step_race(task: Task, train, valid, folder: Path, target: float,
              seeds: tuple[int, ...] = SEEDS,
              variants: tuple[str, ...] = ("ranked", "uniform")) -> list[dict]:
    rows = []
    for seed in seeds:
        order = listed(task, seed)
        print(f"  seed {seed}: candidates listed as "
              f"{[c if isinstance(c, str) else c.name for c in order]}", flush=True)
        for name in variants:
            kwargs = VARIANTS[name]()
            t0 = datetime.datetime.now()
            study = at.search(train, valid=valid, backbones=order, timeout=task.budget_s,
                              storage=folder / f"race-{seed}-{name}.db", name="race",
                              seed=seed, progress=False, space=at.SearchSpace(**task.space),
                              final="best", **kwargs)  # trials only: no ensemble row
            reached, best = _time_to(study, target, t0)
            per = study.leaderboard().groupby("backbone")["trial"].count().to_dict()
            first = min(t.datetime_start for t in study.trials() if t.datetime_start)
            rows.append({"seed": seed, "variant": name, "rank": kwargs["rank"],
                         "seconds_to_target": reached, "best": best,
                         "seconds_before_first_trial": (first - t0).total_seconds(),
                         "trials": int(sum(per.values())), "per_backbone": per})
            print(f"  seed {seed} {name}: target {target:.4f} {_show(reached)}, "
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


def kendall(scores: list[float], accs: list[float], *, draws: int = 2000,
            seed: int = 0) -> tuple[float, float, float]:
    """Kendall's tau, and its 95% percentile bootstrap interval over the candidates
    (resampled with replacement; draws where every score or accuracy ties are skipped)."""
    import numpy as np
    from scipy.stats import kendalltau

    x, y = np.asarray(scores, float), np.asarray(accs, float)
    rng, taus = np.random.default_rng(seed), []
    for _ in range(draws):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            taus.append(kendalltau(x[i], y[i]).statistic)
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(kendalltau(x, y).statistic), float(low), float(high)


def report(task: str, result: dict) -> None:
    print(f"\n## {task} ({result.get('seconds', '?')} s)")
    alone = result["alone"]
    print("\n| backbone | probe score (se) | degenerate | LogME | seconds | best accuracy alone |"
          "\n|---|---|---|---|---|---|")
    for r in result["ranking"]:
        logme, se = r.get("logme"), r.get("score_se")  # older runs: LogME was the score
        best = alone.get(r["backbone"])
        print(f"| {r['backbone']} | {r['score']:.3f}"
              f"{'' if se is None else f' ({se:.3f})'} | {r.get('degenerate', '-')} | "
              f"{'-' if logme is None else f'{logme:.3f}'} | {r['seconds']:.1f} | "
              f"{'ranked only' if best is None else f'{best:.4f}'} |")
    rows = [r for r in result["ranking"] if r["backbone"] in alone]
    accs = [alone[r["backbone"]] for r in rows]
    for column in ("score", "logme"):
        if all(r.get(column) is not None for r in rows):
            tau, low, high = kendall([r[column] for r in rows], accs)
            print(f"\nKendall tau ({column} vs best accuracy alone, {len(rows)} candidates): "
                  f"{tau:.2f} (bootstrap 95%: {low:.2f} to {high:.2f})")
    print(f"\ntarget: {result['target']:.4f} (best alone - {TOLERANCE})\n")
    by = {(r["seed"], variant(r)): r for r in result["race"]}
    names = [n for n in VARIANTS if any(v == n for _, v in by)]
    print("| seed | " + " | ".join(f"{n}: s to target (best, trials)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for seed in sorted({seed for seed, _ in by}):
        cells = [by.get((seed, n)) for n in names]
        print(f"| {seed} | " + " | ".join(
            "-" if r is None else
            f"{_show(r['seconds_to_target'])} ({r['best']:.4f}, {r['trials']})" for r in cells)
            + " |")
    seconds = {key: r["seconds_to_target"] for key, r in by.items()}
    for name in (n for n in names if n != "ranked"):
        ratios = [seconds[(s, "ranked")] / seconds[(s, n)] for s, n in seconds
                  if n == name and seconds[(s, n)] and seconds.get((s, "ranked"))]
        if ratios:
            print(f"\nratio (ranked / {name}) where both reached it: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}")


def run(task: Task, saved: dict | None, seeds: tuple[int, ...] = SEEDS,
        keep: Callable[[dict], None] = lambda result: None,
        variants: tuple[str, ...] = ("ranked", "uniform")) -> dict:
    """Steps 1-3 for one task; with ``saved`` (``--race``), step 3 only, for ``seeds``
    (the saved rows of other seeds are kept). ``keep`` saves the result after step 2."""
    train, valid = task.data()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{task.name} 1. ranking", flush=True)
        ranking = step_rank(task, train)  # also registers the decoys
        if saved is None:
            print(f"{task.name} 2. each backbone alone", flush=True)
            alone = step_alone(task, train, valid, folder)
            result = {"ranking": ranking, "alone": alone,
                      "target": max(alone.values()) - TOLERANCE, "race": []}
            keep(result)
        else:
            result = saved
        if seeds:
            print(f"{task.name} 3. search over all candidates, with and without the ranking",
                  flush=True)
            rows = step_race(task, train, valid, folder, result["target"], seeds, variants)
            redone = {(r["seed"], variant(r)) for r in rows}
            result["race"] = [r for r in result.get("race", [])
                              if (r["seed"], variant(r)) not in redone] + rows
    result["seconds"] = round(time.perf_counter() - t0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), action="append",
                        help="run only this task (repeatable; default all)")
    parser.add_argument("--report", action="store_true", help="reprint the last results")
    parser.add_argument("--race", action="store_true",
                        help="rerun step 3 only, on the saved steps 1-2")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="the seeds step 3 runs (default 0 1 2)")
    parser.add_argument("--no-race", action="store_true", help="steps 1-2 only")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                        default=["ranked", "uniform"],
                        help="step 3's searches (default: ranked uniform)")
    args = parser.parse_args()
    saved = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if "ranking" in saved:  # the first version's file: the image task only
        saved = {"image": saved}
    for name in args.task or list(TASKS):
        if not args.report:
            def keep(result: dict, name: str = name) -> None:
                saved[name] = result
                OUT.parent.mkdir(parents=True, exist_ok=True)
                OUT.write_text(json.dumps(saved, indent=1, default=str))

            keep(run(TASKS[name], saved.get(name) if args.race else None,
                     () if args.no_race else tuple(args.seeds), keep, tuple(args.variants)))
        if name in saved:
            report(name, saved[name])


if __name__ == "__main__":
    sys.exit(main())
