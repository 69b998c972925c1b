"""The lazy data pipeline at scale: memory, time to first step, loader and padding speed.

    python benchmarks/data_scale.py                       # N = 2,000 and 20,000 (~20 min)
    python benchmarks/data_scale.py --sizes 200 400       # a quick look
    python benchmarks/data_scale.py --report              # the tables again, from the JSON

1. Writes N generated JPEGs (sides 400-600 px, 10 classes: a shape and a colour family
   drawn over a noisy gradient with distractors) as ``root/<class>/<i>.jpg`` under
   ``--cache`` (reused when complete).
2. Per N, in a fresh process: a 2-trial search of ``efficientnet_lite0`` at 64 px, 1 epoch
   (small so that N = 20,000 runs in minutes on 2 cores), one linear probe on cached
   features (augment="none") and one half-frozen trial with augment="flip", both enqueued
   into the study before ``at.search`` resumes it. Peak PSS of the process tree (main
   process + loader workers, sampled every 0.2 s), the main process's ru_maxrss, time from
   the ``at.search`` call to the first optimizer step, each trial, held vs streamed data.
3. At the backbone's default 224 px: images/s of the streamed training loader
   (augment="flip") on the first N's folder vs a full fine-tune step on random batches.
4. ``minilm_l6`` fine-tune steps on 1-10-word texts: padded to 128 tokens vs padded per
   batch by the library (``TextPreprocessing.prepare``).
Raw figures go to ``--out`` (default /tmp/autotransfer-bench/data_scale.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

CACHE = Path("/tmp/autotransfer-bench")
BACKBONE, TEXT_BACKBONE = "efficientnet_lite0", "minilm_l6"
SEARCH_SIZE, SEARCH_EPOCHS, SEARCH_BATCH = 64, 1, 64
TARGETS = {"mem_ratio": 1.2, "peak_gb": 3.0, "first_step_s": 15.0, "loader_ratio": 1.5,
           "padding_ratio": 5.0}
SHAPES = ("ellipse", "square", "triangle", "cross", "ring")
HUES = ((0, 40), (180, 250))  # warm and cool families (degrees); class = shape x family
ME = Path(__file__).resolve()
# Wrapped and timed in the search: data readied, model built, frozen-prefix features.
PHASES = {"ready_s": "prepare data", "build_s": "build model", "features_s": "prefix features"}


# --- 1. the image folder ---

def draw(job: tuple[int, str]) -> None:
    """Image i: its class's shape and colour family, jittered, over a noisy background."""
    from PIL import Image, ImageDraw

    i, root = job
    rng = random.Random(i)
    c = i % 10
    w, h = rng.randint(400, 600), rng.randint(400, 600)
    im = Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize((w, h))
    bg = [tuple(rng.randint(40, 200) for _ in range(3)) for _ in range(2)]
    im = Image.merge("RGB", [im.point(lambda v, a=a, b=b: a + (b - a) * v // 255)
                             for a, b in zip(*bg)])
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(2, 6)):  # distractors: grey lines
        g = rng.randint(60, 220)
        d.line([(rng.randint(0, w), rng.randint(0, h)) for _ in range(2)], fill=(g, g, g),
               width=rng.randint(2, 12))
    hue = rng.uniform(*HUES[c // 5]) % 360
    colour = _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    r = rng.uniform(0.15, 0.3) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    _shape(d, SHAPES[c % 5], cx, cy, r, rng.uniform(0, 2 * math.pi), colour)
    noise = Image.effect_noise((w // 4, h // 4), rng.uniform(20, 50)).resize((w, h))
    im = Image.blend(im, Image.merge("RGB", [noise] * 3), 0.2)
    path = Path(root) / f"c{c}" / f"{i}.jpg"
    im.save(path, quality=85)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    return tuple(int(255 * x) for x in colorsys.hsv_to_rgb(h / 360, s, v))


def _shape(d, kind: str, cx: float, cy: float, r: float, angle: float, colour) -> None:
    def poly(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in points]

    if kind == "ellipse":
        d.ellipse([cx - r, cy - 0.6 * r, cx + r, cy + 0.6 * r], fill=colour)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(4, int(r / 4)))
    elif kind == "square":
        d.polygon(poly([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]), fill=colour)
    elif kind == "triangle":
        d.polygon(poly([(0, -1), (0.87, 0.5), (-0.87, 0.5)]), fill=colour)
    else:  # cross
        for pts in ([(-1, -0.25), (1, -0.25), (1, 0.25), (-1, 0.25)],
                    [(-0.25, -1), (0.25, -1), (0.25, 1), (-0.25, 1)]):
            d.polygon(poly(pts), fill=colour)


def make_folder(n: int, cache: Path) -> tuple[Path, float]:
    """``cache/jpegs-n`` with n JPEGs (reused when its marker says it is complete)."""
    root = cache / f"jpegs-{n}"
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(n):
        return root, 0.0
    t0 = time.perf_counter()
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    with Pool(2) as pool:
        for _ in pool.imap_unordered(draw, [(i, str(root)) for i in range(n)], chunksize=64):
            pass
    marker.write_text(str(n))
    return root, time.perf_counter() - t0


# --- memory of a process tree ---

def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text()
                         .split()]
        except OSError:
            continue  # exited meanwhile
    return out


def pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(args: list[str], out: Path) -> dict:
    """Run this file with ``args`` in a fresh process; its JSON, with the tree's peak PSS."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ME), *args, "--child-out", str(out)], env=env)
    peak, procs, load = 0, 0, os.getloadavg()[0]
    while proc.poll() is None:
        pids = tree(proc.pid)
        peak, procs = max(peak, sum(pss(p) for p in pids)), max(procs, len(pids))
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"child {args} exited with code {proc.returncode}")
    result = json.loads(out.read_text())
    return {**result, "peak_pss_mb": peak / 2**20, "max_procs": procs,
            "load_before": load, "load_after": os.getloadavg()[0]}


# --- 2. the search (child process) ---

def search_child(root: str, aug_views: int | None) -> dict:
    import torch.optim.optimizer as optim_mod

    import autotransfer as at
    from autotransfer.data import pipeline
    from autotransfer.training import features

    if aug_views is not None:
        features.AUG_VIEWS = aug_views
    from autotransfer.training import runner

    marks: dict = {"held": [], "ready_s": 0.0, "features_s": 0.0, "build_s": 0.0}

    def first_step(*_) -> None:  # what the first trial spent before its first step
        if "first_step" not in marks:
            marks["first_step"] = time.time()
            marks["before_step"] = {k: marks[k] for k in PHASES}

    optim_mod.register_optimizer_step_post_hook(first_step)
    _time_calls(pipeline, "ready", marks, "ready_s",
                lambda p: marks["held"].append(p.held))
    _time_calls(features, "prefix_features", marks, "features_s")
    _time_calls(runner, "build_model", marks, "build_s")
    t0 = time.perf_counter()
    data = at.data.from_folder(root)
    listed = time.perf_counter() - t0
    backbone = at.get_backbone(BACKBONE)
    groups = len(backbone.layer_groups(backbone.build(pretrained=False)))
    space = at.SearchSpace(
        epochs=SEARCH_EPOCHS, image_size=SEARCH_SIZE, batch_size=SEARCH_BATCH,
        frozen_groups=[groups, groups // 2], augment=["none", "flip"], lr=3e-3,
        layer_decay=0.8, weight_decay=0.01, dropout=0.0, drop_path=0.0,
        label_smoothing=0.0, mixup=0.0, cutmix=0.0, l2sp=0.0)
    folder = Path(tempfile.mkdtemp(prefix="at-scale-"))
    points = [{"frozen_groups": groups, "augment": "none"},
              {"frozen_groups": groups // 2, "augment": "flip"}]
    called = time.time()
    result = at.search(data, backbones=[BACKBONE], n_trials=2, baselines=False,
                       warm_start=False, storage=folder / "s.db", name="scale",
                       progress=False, space=space, sampler=_points_sampler(points),
                       final="best")
    wall = time.time() - called
    trials = sorted(result.trials(), key=lambda t: t.number)
    first = trials[0]
    from_attrs = (first.datetime_start.timestamp() - called
                  + first.user_attrs.get("first_step_s", math.nan))
    board = result.leaderboard()
    cols = ["trial", "state", "frozen_groups", "augment", "cached", "accuracy", "duration_s",
            "first_step_s"]
    return {"n": len(data), "listing_s": listed, "search_s": wall,
            "first_step_s": marks.get("first_step", math.nan) - called,
            "first_step_from_attrs_s": from_attrs, "held": marks["held"],
            "phases": {k: marks[k] for k in PHASES},
            "before_first_step": marks.get("before_step", {}),
            "aug_views": features.AUG_VIEWS, "hold_bytes": pipeline.HOLD_BYTES,
            "n_groups": groups, "trials": board[[c for c in cols if c in board]]
            .sort_values("trial").to_dict("records"),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _points_sampler(points: list[dict]):
    """A sampler whose trial i takes ``points[i]``'s values (a linear probe on kept
    features, then a half-frozen trial with flips) in a study autotransfer makes: no plain
    Optuna study with enqueued trials, which search() refuses to adopt."""
    import optuna

    class Points(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):
            point = points[trial.number % len(points)]
            if name in point:
                return point[name]
            return super().sample_independent(study, trial, name, distribution)

    return Points(seed=0)


def _time_calls(module, name: str, marks: dict, key: str, then=None) -> None:
    """Wrap ``module.name`` to add its wall time to ``marks[key]`` (instrumentation only)."""
    inner = getattr(module, name)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            out = inner(*args, **kwargs)
        finally:
            marks[key] += time.perf_counter() - t0
        if then is not None:
            then(out)
        return out

    setattr(module, name, timed)


# --- 3. loader vs training at 224 px, 4. dynamic padding (child process) ---

def throughput_child(root: str, batches: int, steps: int) -> dict:
    import autotransfer as at
    from autotransfer.data import pipeline
    from autotransfer.training import runner
    from autotransfer.training.model import build_model
    from autotransfer.training.optim import apply

    strategy = at.Strategy(BACKBONE)  # the backbone's default input size
    train, valid = at.data.from_folder(root).split(0.2)
    pipeline.HOLD_BYTES = 0  # force streaming
    prepared = runner.prepare(strategy, train, valid, "classification")
    batches_of = _cycle(pipeline.loader(prepared, "train", 32, shuffle=True, augment="flip"))
    t0 = time.perf_counter()
    xb, _ = next(batches_of)  # warm-up: worker start-up and the first batch
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = sum(len(next(batches_of)[0]) for _ in range(batches))
    loader_ips = n / (time.perf_counter() - t0)
    size = xb.shape[-1]
    ys = prepared.y_train[:32]
    model = build_model(strategy, "classification", prepared.info)
    applied = apply(strategy, model, steps + 1)
    train_ips = _steps(model, applied, lambda: (prepared.preprocessing.normalize(
        _rand_images(32, size)), ys), steps)
    return {"held": prepared.held, "workers": pipeline.workers(len(prepared.y_train)),
            "loader_warmup_s": warmup, "loader_ips": loader_ips, "train_ips": train_ips,
            "image_size": size, "batches": batches, "steps": steps,
            "text": text_speed(steps)}


def _cycle(loader):
    """Batches of ``loader`` epoch after epoch (a small folder has few batches)."""
    while True:
        yield from loader


def _rand_images(n: int, size: int):
    import torch

    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def _steps(model, applied, batch, steps: int) -> float:
    """Items/s of full fine-tune steps (forward, backward, optimizer): the batch size over
    the median step time after one warm-up step (the median resists a busy shared machine)."""
    import statistics

    import torch.nn.functional as F

    model.train()
    times, n = [], 0
    for s in range(steps + 1):
        t0 = time.perf_counter()
        x, y = batch()
        loss = F.cross_entropy(model(x), y)
        applied.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        applied.optimizer.step()
        if s:  # the first step is the warm-up
            times.append(time.perf_counter() - t0)
            n = len(y)
    return n / statistics.median(times)


def text_speed(steps: int) -> dict:
    import autotransfer as at
    from autotransfer.data.preprocessing import load_tokenizer
    from autotransfer.training.model import build_model
    from autotransfer.training.optim import apply

    pre = at.get_backbone(TEXT_BACKBONE).preprocessing()
    tok = load_tokenizer(pre.tokenizer)
    rng = random.Random(0)
    words = [w for w in tok.get_vocab() if w.isalpha() and len(w) > 2]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 10))) for _ in range(32)]
    y, info = at.get_head("classification").encode([i % 2 for i in range(32)])
    strategy = at.Strategy(TEXT_BACKBONE)
    model = build_model(strategy, "classification", info)
    applied = apply(strategy, model, 2 * steps + 2)
    ways = {
        "padded_128": lambda: (dict(tok(texts, padding="max_length", max_length=128,
                                        truncation=True, return_tensors="pt")), y),
        "dynamic": lambda: (pre.prepare(texts), y)}
    out = {k: _steps(model, applied, batch, steps) for k, batch in ways.items()}
    lengths = [len(e["input_ids"]) for e in pre.encode(texts)]
    return {**out, "tokens_max": max(lengths), "tokens_mean": sum(lengths) / len(lengths)}


# --- report ---

def verdict(value: float, target: float, at_most: bool) -> str:
    ok = value <= target if at_most else value >= target
    return "met" if ok else "**not met**"


def targets_table(res: dict) -> list[str]:
    runs = sorted(res["search"], key=lambda r: r["n"])
    rows = []
    for r in runs:
        gb = r["peak_pss_mb"] / 1024
        rows.append((f"peak PSS, process tree, N={r['n']:,}", f"{gb:.2f} GB",
                     f"<= {TARGETS['peak_gb']:g} GB", verdict(gb, TARGETS["peak_gb"], True)))
    if len(runs) >= 2:
        ratio = runs[-1]["peak_pss_mb"] / runs[0]["peak_pss_mb"]
        rows.append((f"peak PSS N={runs[-1]['n']:,} / N={runs[0]['n']:,}", f"{ratio:.2f}x",
                     f"<= {TARGETS['mem_ratio']:g}x", verdict(ratio, TARGETS["mem_ratio"], True)))
    for r in runs:
        s = r["first_step_s"]
        rows.append((f"at.search call -> first optimizer step, N={r['n']:,}", f"{s:.1f} s",
                     f"<= {TARGETS['first_step_s']:g} s",
                     verdict(s, TARGETS["first_step_s"], True)))
    if "throughput" in res:
        t = res["throughput"]
        ratio = t["loader_ips"] / t["train_ips"]
        rows.append((f"loader / training images/s at {t['image_size']} px", f"{ratio:.1f}x",
                     f">= {TARGETS['loader_ratio']:g}x",
                     verdict(ratio, TARGETS["loader_ratio"], False)))
        ratio = t["text"]["dynamic"] / t["text"]["padded_128"]
        rows.append(("dynamic / 128-token padding, sequences/s", f"{ratio:.1f}x",
                     f">= {TARGETS['padding_ratio']:g}x",
                     verdict(ratio, TARGETS["padding_ratio"], False)))
    return (["| figure | value | target | |", "|---|---|---|---|"]
            + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])


def search_tables(res: dict) -> list[str]:
    runs = sorted(res["search"], key=lambda r: r["n"])
    out = [f"Search: {BACKBONE}, {SEARCH_SIZE} px, {SEARCH_EPOCHS} epoch, batch "
           f"{SEARCH_BATCH}, 2 trials, 80/20 split (sizes kept small so N=20,000 runs in "
           f"minutes on 2 cores).", "",
           "| N | data | peak PSS tree MB | main ru_maxrss MB | processes | load avg "
           "before/after |", "|---|---|---|---|---|---|"]
    for r in runs:
        data = "/".join("held" if h else "streamed" for h in r["held"]) or "?"
        out.append(f"| {r['n']:,} | {data} | {r['peak_pss_mb']:.0f} | {r['ru_maxrss_mb']:.0f} "
                   f"| {r['max_procs']} | {r['load_before']:.1f}/{r['load_after']:.1f} |")
    names = list(PHASES.values())
    out += ["", "Seconds; phases in the first trial before its first step (both trials):", "",
            "| N | from_folder | search | first step (hook / attrs) | "
            + " | ".join(names) + " |", "|---|---|---|---|" + "---|" * len(names)]
    for r in runs:
        before = r.get("before_first_step", {})
        phases = " | ".join(f"{before.get(k, math.nan):.1f} ({r['phases'][k]:.1f})"
                            for k in PHASES)
        out.append(f"| {r['n']:,} | {r['listing_s']:.1f} | {r['search_s']:.1f} | "
                   f"{r['first_step_s']:.1f} / {r['first_step_from_attrs_s']:.1f} | {phases} |")
    out += ["", "| N | trial | state | frozen | augment | cached | accuracy | duration s | "
            "first step s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for t in r["trials"]:
            acc = t.get("accuracy")
            out.append(f"| {r['n']:,} | {t['trial']} | {t['state']} | {t.get('frozen_groups')}"
                       f"/{r['n_groups']} | {t.get('augment')} | {t.get('cached')} | "
                       f"{'' if acc is None else f'{acc:.3f}'} | {t.get('duration_s')} | "
                       f"{t.get('first_step_s')} |")
    return out


def throughput_tables(res: dict) -> list[str]:
    if "throughput" not in res:
        return []
    t = res["throughput"]
    x = t["text"]
    return [
        f"Loader vs training at {t['image_size']} px (batch 32, streamed: held="
        f"{t['held']}, {t['workers']} loader worker(s); measured apart, on the same 2 cores; "
        f"load avg {t['load_before']:.1f}/{t['load_after']:.1f} before/after):",
        "", "| measure | images/s |", "|---|---|",
        f"| training loader, augment=flip, {t['batches']} batches after a warm-up "
        f"({t['loader_warmup_s']:.1f} s) | {t['loader_ips']:.1f} |",
        f"| full fine-tune step, median of {t['steps']} after a warm-up | "
        f"{t['train_ips']:.1f} |",
        "", f"{TEXT_BACKBONE} fine-tune steps, batch 32, 1-10 random words (tokens per "
        f"input: mean {x['tokens_mean']:.1f}, max {x['tokens_max']}):", "",
        f"| padding (median of {t['steps']} steps) | sequences/s |", "|---|---|",
        f"| max_length=128 | {x['padded_128']:.1f} |",
        f"| per batch (library) | {x['dynamic']:.1f} |"]


def report(res: dict) -> str:
    lines = [f"Total runtime {res.get('total_s', 0) / 60:.1f} min; images generated in "
             f"{res.get('generate_s', 0):.0f} s.", ""]
    lines += targets_table(res) + [""] + search_tables(res) + [""] + throughput_tables(res)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=CACHE / "data_scale.json")
    parser.add_argument("--report", action="store_true", help="reprint tables from --out")
    parser.add_argument("--batches", type=int, default=20, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=4, help="training steps timed")
    parser.add_argument("--aug-views", type=int, default=None,
                        help="override features.AUG_VIEWS in the search (default: library's)")
    parser.add_argument("--child", choices=["search", "throughput"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = (search_child(args.root, args.aug_views) if args.child == "search"
               else throughput_child(args.root, args.batches, args.steps))
        args.child_out.write_text(json.dumps(out, default=str))
        return
    if args.report:
        print(report(json.loads(args.out.read_text())))
        return
    started = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    res: dict = {"sizes": args.sizes, "search": [], "generate_s": 0.0}
    roots = {}
    for n in args.sizes:
        roots[n], spent = make_folder(n, args.cache)
        res["generate_s"] += spent
        print(f"[data_scale] {roots[n]} ready ({spent:.0f} s)", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="at-scale-out-"))
    for n in args.sizes:
        extra = [] if args.aug_views is None else ["--aug-views", str(args.aug_views)]
        r = run_child(["--child", "search", "--root", str(roots[n]), *extra],
                      scratch / f"search-{n}.json")
        res["search"].append(r)
        print(f"[data_scale] search N={n}: {json.dumps(r, default=str)}", flush=True)
    res["throughput"] = run_child(
        ["--child", "throughput", "--root", str(roots[args.sizes[0]]), "--batches",
         str(args.batches), "--steps", str(args.steps)], scratch / "throughput.json")
    print(f"[data_scale] throughput: {json.dumps(res['throughput'])}", flush=True)
    res["total_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    print("\n" + report(res))


if __name__ == "__main__":
    main()
