"""Bad inputs: does every mistake fail at once, with a message that helps?

    .venv/bin/python benchmarks/bad_inputs.py          # about 20 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bad_inputs.py -k toml  # only cases whose id contains "toml"
    .venv/bin/python benchmarks/bad_inputs.py -k best -k columns  # ids with either word
    .venv/bin/python benchmarks/bad_inputs.py --kind cli  # only the cases run through the CLI
    .venv/bin/python benchmarks/bad_inputs.py -v       # also show what each case printed

Tries ~470 kinds of bad input on the Python API (``at.search`` with its ``test=``,
``warm_start=``, ``callbacks=``, ``sampler=`` and ``backbones=``: ``timm/``/``hf/``
catalogue names, Backbone objects; fine-tuning adapters (``adapter=``, ``lora_rank=``)
where they do not apply or peft is missing; ``at.rank_backbones``, ``at.data.from_*``,
``at.SearchSpace``, ``at.Strategy``, ``at.run_trial``,
``Study.load``/``load_best``/``evaluate``/``refit``/``report``,
``predictor.predict``/``predict_proba``/``export``, ``at.load``), on TOML study files run
through the CLI (``python -m autotransfer.cli run file.toml``) and on the CLI itself
(``leaderboard`` with ``--columns``, ``report``, ``best``, ``predict`` and ``export`` given
a model file or a study's storage with ``--name``/``--trial``, ``backbones``). One line
per case:

    GOOD|WEAK|BAD  <case id>  <short outcome>

- GOOD: an ``AutotransferError`` raised before any training, whose message names the bad
  value and says what is accepted. CLI: exit code 2, which the CLI gives for every
  mistake in what the user gave (an argument, a file that is missing or is not what it
  should be, a data column, a name), stderr starting with ``error:`` with such a message,
  no traceback, no trial recorded in the storage, the case's ``intact`` files unchanged.
- WEAK: an ``AutotransferError`` (CLI: exit 1 or 2, no traceback) whose message lacks the
  value or the hint of what is accepted (or, CLI, does not start with ``error:``); CLI:
  exit 1, which says the work failed (every trial of a search, an export whose files do
  not reproduce the model), for what is a mistake in the input.
- BAD: another exception type, a traceback, the bad input accepted (the call returned, CLI
  exit 0), any other exit code, a refusal that only came after training started, a file
  that had to stay byte-identical changed (``intact``), or a timeout (120 s).

Cases marked "accepted" are inputs that must work (numpy integers, a study name with
``..`` that must stay inside its folder): GOOD when they run, BAD when refused.
Every case runs in its own temporary folder (the working folder too), one at a time, in a
forked child process (its own process group, killed with any workers it started when it
overruns); "trained" means an epoch of ``run_trial`` began (``study.refit`` trains through
it too). Run as root, the read-only folder cases also set ``chattr +i`` on the folder, since
root ignores ``chmod 0o500``.

Fixtures (``fixture(key)``, made once in a child process): ``"db"`` a finished one-trial
study's storage (tiny_cnn on 16 px toy images, labels 0 and 1), ``"study"`` that Study,
``"pred"`` its best model, ``"own_study"`` a copy of the study in the case's folder (for
cases that may write to it, e.g. ``refit``), ``"model"`` a model file the CLI can load
(resnet18 from an entry-point plugin, no pretrained weights; CLI cases with
``autoload=True`` run with the installed plugins autoloaded).
"""

from __future__ import annotations

import os

os.environ["AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

import numpy as np  # noqa: E402
import torch  # noqa: E402

import autotransfer as at  # noqa: E402
import autotransfer.training.loop as _loop  # noqa: E402
from autotransfer.testing import toy_images  # noqa: E402

CASE_TIMEOUT = 120  # seconds per case
EXIT_FAILED, EXIT_USAGE = 1, 2  # the CLI's exit codes: the work failed; a mistake in the input
PLUGINS = ("autotransfer_plugins.heads", "autotransfer_plugins.techniques",
           "autotransfer.testing")
HINTS = ("must", "accepted", "accepts", "expected", "one of", "give", "use ", "pass ", ">=",
         "<=", "needs", "need ", "at least", "at most", "e.g.", "instead", "takes", "try ",
         # or it lists the alternatives (" columns:": not an option's "--all-columns:")
         " columns:", "(columns:", "studies there", "close matches", "this machine has",
         "available:", "choose", "that apply to it:", "completed trials:", "completed:")

for _p in PLUGINS:
    at.register_plugin(_p)
warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------- machinery
class Timeout(BaseException):
    """Raised by SIGALRM; a BaseException so no `except Exception` in the library eats it."""


def _on_alarm(signum, frame):
    raise Timeout()


TRAINED: list[int] = []  # one entry per training epoch started (in this process)
_train_epoch = _loop.Loop.epoch


def _spy_train_epoch(*args, **kwargs):
    TRAINED.append(1)
    return _train_epoch(*args, **kwargs)


_loop.Loop.epoch = _spy_train_epoch  # every trial's epochs go through it


@dataclass
class Case:
    id: str
    kind: str  # "api" | "cli"
    fn: Callable[[Path], Any] | None = None  # api: fn(tmp) -> result
    tokens: tuple[str, ...] = ()  # any one of them in the message = "names the bad value"
    accepted: bool = False  # an input that must be accepted
    check_ok: Callable[[Any, Path], str | None] | None = None  # accepted: None = fine
    read_only: bool = False  # makes a folder unwritable (also for root: chattr +i)
    # cli
    argv: list[str] | Callable[[Path], list[str]] | None = None
    files: dict[str, str] = field(default_factory=dict)  # name -> text, written first
    storage: str | None = None  # a file whose recorded trials mean "it trained"
    autoload: bool = False  # the CLI loads the installed entry-point plugins
    intact: tuple[str, ...] = ()  # files (in the case's folder) that must not change


CASES: list[Case] = []


def api(cid: str, *tokens: str, accepted: bool = False, check_ok=None, read_only=False):
    def deco(fn):
        CASES.append(Case(cid, "api", fn, tokens, accepted, check_ok, read_only))
        return fn
    return deco


def cli(cid: str, argv, *tokens: str, files: dict[str, str] | None = None,
        storage: str | None = None, autoload: bool = False,
        intact: tuple[str, ...] = ()) -> None:
    """A CLI case: ``argv`` (or ``argv(tmp)``, which may make files) run in the case's
    folder; ``intact``: files there that must be byte-identical after the run."""
    CASES.append(Case(cid, "cli", None, tokens, argv=argv, files=files or {},
                      storage=storage, autoload=autoload, intact=intact))


def _has_token(msg: str, tokens: tuple[str, ...]) -> bool:
    for t in tokens:
        pat = re.escape(t)
        if t[:1].isdigit() or t[:1] == "-":  # "5" must not match inside "1.5" or "25"
            pat = r"(?<![\w.])" + pat
        elif t[:1].isalpha():
            pat = r"(?<!\w)" + pat
        if t[-1:].isalnum():
            pat = pat + r"(?!\w)"
        if re.search(pat, msg, re.I):
            return True
    return False


def _judge_message(msg: str, tokens: tuple[str, ...]) -> tuple[str, str]:
    value = _has_token(msg, tokens)
    hint = any(h in msg.lower() for h in HINTS)
    if value and hint:
        return "GOOD", ""
    missing = [w for w, ok in (("value", value), ("accepted-hint", hint)) if not ok]
    return "WEAK", f"[no {' / no '.join(missing)}] "


def _short(text: str, n: int = 170) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _describe_return(result: Any) -> str:
    if isinstance(result, at.Study):
        states = [t.state.name.lower() for t in result.trials()]
        counts = {s: states.count(s) for s in sorted(set(states))}
        tag = " (EVERY trial failed)" if states and set(states) == {"fail"} else ""
        return f"returned a Study: {counts}{tag}"
    return f"returned {_short(repr(result), 80)}"


def _evaluate_api(case: Case, tmp: Path) -> tuple[str, str]:
    """Run one API case in this (child) process, cwd = tmp -> (verdict, outcome)."""
    TRAINED.clear()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(CASE_TIMEOUT)
    try:
        result = case.fn(tmp)
        signal.alarm(0)
    except Timeout:
        return "BAD", f"timeout after {CASE_TIMEOUT} s (trained {len(TRAINED)} epoch(s))"
    except at.AutotransferError as exc:
        signal.alarm(0)
        msg = str(exc)
        head = f"{type(exc).__name__}: {msg}"
        if case.accepted:
            return "BAD", f"refused an input that must be accepted: {_short(head)}"
        if TRAINED:
            return "BAD", f"raised only after training started ({len(TRAINED)} epoch(s)): " \
                          f"{_short(head)}"
        verdict, why = _judge_message(msg, case.tokens)
        return verdict, why + _short(head)
    except BaseException as exc:  # noqa: BLE001 - any other type is the finding
        signal.alarm(0)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        loc = f" (at {Path(where.filename).name}:{where.lineno})"
        return "BAD", _short(f"{type(exc).__name__}: {exc}", 150) + loc
    if case.accepted:
        problem = case.check_ok(result, tmp) if case.check_ok else None
        if problem:
            return "BAD", f"accepted case: {problem}; {_describe_return(result)}"
        return "GOOD", f"accepted, as it must be: {_describe_return(result)}"
    return "BAD", f"bad input accepted: {_describe_return(result)}" + (
        f" (trained {len(TRAINED)} epoch(s))" if TRAINED else "")


def in_child(fn: Callable[[], Any], *, log: Path, limit: float = CASE_TIMEOUT + 15) -> Any:
    """``fn()`` in a forked child with its own process group; its JSON result.

    The parent never trains, so no thread pool is forked mid-use; a case that hangs or
    leaves worker processes behind is killed with its whole group.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", 0), write_through=True)
            sys.stderr = sys.stdout
            res = fn()
        except BaseException as exc:  # noqa: BLE001
            res = ["BAD", f"child failed: {type(exc).__name__}: {exc}"]
            code = 1
        try:
            os.write(w, json.dumps(res, default=str).encode())
        finally:
            os._exit(code)
    os.close(w)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    deadline = time.monotonic() + limit
    timed_out = False
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # leftover workers
        os.killpg(pid, signal.SIGKILL)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    if timed_out:
        return ["BAD", f"timeout after {limit:.0f} s (killed with its process group)"]
    if not data:
        return ["BAD", "the case's process died without a result"]
    return json.loads(data)


def _show_log(log: Path) -> None:
    text = log.read_text(errors="replace").strip() if log.is_file() else ""
    if text:
        print("    | " + text.replace("\n", "\n    | "))


def run_api(case: Case, verbose: bool) -> tuple[str, str]:
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as d, \
            tempfile.NamedTemporaryFile(prefix="bad_inputs_log_", suffix=".txt") as logf:
        tmp, log = Path(d), Path(logf.name)
        os.chdir(tmp)
        try:
            verdict, outcome = in_child(lambda: _evaluate_api(case, tmp), log=log)
            if verbose:
                _show_log(log)
            return verdict, outcome
        finally:
            os.chdir(here)
            if case.read_only and os.geteuid() == 0:
                subprocess.run(["chattr", "-R", "-i", str(tmp)], capture_output=True)
            for p in tmp.rglob("*"):  # chmod 0o500 folders would block the cleanup
                with contextlib.suppress(OSError):
                    if p.is_dir() and not p.is_symlink():
                        p.chmod(0o755)


def _recorded_trials(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(str(db))) as con:
            return int(con.execute("select count(*) from trials where state != 'WAITING'")
                       .fetchone()[0])
    except sqlite3.Error:
        return 0


def run_cli(case: Case, verbose: bool) -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as d:
        tmp = Path(d)
        for name, text in case.files.items():
            (tmp / name).write_text(text)
        try:
            argv = case.argv(tmp) if callable(case.argv) else list(case.argv)
        except Exception as exc:  # noqa: BLE001 - the fixture study could not be made
            return "BAD", _short(f"{type(exc).__name__}: {exc}", 160)
        before = {name: digest(tmp / name) for name in case.intact}
        env = {k: v for k, v in os.environ.items()
               if not (case.autoload and k == "AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD")}
        proc = subprocess.Popen([sys.executable, "-m", "autotransfer.cli", *argv], cwd=tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=env)
        try:
            stdout, stderr = proc.communicate(timeout=CASE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and any workers it started
            proc.communicate()
            return "BAD", f"timeout after {CASE_TIMEOUT} s (killed with its process group)"
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        err = stderr.strip()
        if verbose:
            shown = (err + "\n" + stdout.strip()).replace("\n", "\n    | ")
            print(f"    | rc={proc.returncode}\n    | {shown}")
        trained = _recorded_trials(tmp / case.storage) if case.storage else 0
        changed = [name for name, d in before.items() if digest(tmp / name) != d]
        if "Traceback" in stderr or "Traceback" in stdout:
            last = [ln for ln in err.splitlines() if ln.strip()][-1:] or ["?"]
            return "BAD", f"traceback (rc={proc.returncode}): {_short(last[0], 150)}"
        if proc.returncode == 0:
            return "BAD", "bad input accepted: exit 0" + (
                f", {trained} trial(s) recorded" if trained else "")
        if proc.returncode not in (EXIT_FAILED, EXIT_USAGE):
            return "BAD", f"exit code {proc.returncode}: {_short(err or stdout, 150)}"
        if trained:
            return "BAD", f"refused only after {trained} trial(s) ran: {_short(err, 150)}"
        if changed:
            return "BAD", f"refused, but changed or removed {changed}: {_short(err, 140)}"
        msg = err[err.find("error:"):] if "error:" in err else err  # all its lines
        verdict, why = _judge_message(msg, case.tokens)
        if not err.startswith("error:"):
            first = err.splitlines()[0] if err else "(empty)"
            verdict, why = "WEAK", (f"[stderr starts with {_short(first, 30)!r}, not "
                                    f"'error:'] " + why)
        if proc.returncode == EXIT_FAILED:  # "the work failed", for a mistake in the input
            verdict, why = "WEAK", f"[exit 1, not 2] {why}"
        return verdict, why + _short(msg, 160 if verdict == "GOOD" else 140)


# --------------------------------------------------------------------------- helpers
def small_space(**kw) -> at.SearchSpace:
    return at.SearchSpace(**{"epochs": 1, "image_size": 16, **kw})


def toy() -> at.data.Dataset:
    return toy_images(40, classes=2, size=16)


def images(n: int = 24, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 3, size, size), dtype=np.uint8)


def texts(n: int = 24) -> at.data.Dataset:
    words = ["alpha beta", "gamma delta", "epsilon zeta", "eta theta"]
    return at.data.from_arrays([words[i % 4] + f" {i}" for i in range(n)],
                               [i % 2 for i in range(n)])


def search(data=None, **kw):
    """A bounded search: tiny backbone, one trial, one epoch at 16 px, no progress bars."""
    base = dict(backbones=["tiny_cnn"], n_trials=1, space=small_space(), progress=False)
    base.update(kw)
    return at.search(toy() if data is None else data, **base)


def backend(**kw) -> dict[str, Any]:
    """devices=/trials_per_device= for a backend object where the API has them."""
    if hasattr(at, "OptunaBackend"):
        return {"backend": at.OptunaBackend(**kw)}
    return kw


def write_pngs(folder: Path, n: int, size: int = 16) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images(n, size, seed=len(str(folder)))):
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i}.png")


class Changed(Exception):
    """A file that had to stay byte-identical changed: judged BAD whatever else happened."""


def digest(path: Path) -> str | None:
    """SHA-256 of a file, or of a folder's files and names; None when it does not exist."""
    import hashlib

    path = Path(path)
    if not path.exists():
        return None
    h = hashlib.sha256()
    for p in sorted([path] if path.is_file() else path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path.parent)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def intact(*paths: Path):
    """The files (or folders) must be byte-identical after the block, however it ends."""
    before = {str(p): digest(p) for p in paths}
    try:
        yield
    finally:
        changed = [p for p, d in before.items() if digest(Path(p)) != d]
        if changed:
            raise Changed(f"changed or removed: {changed}")


FIXTURE: dict[str, Any] = {}


def make_fixture(verbose: bool = False) -> None:
    """One finished study (made in a child process) for the load/predict/leaderboard cases."""
    d = Path(tempfile.mkdtemp(prefix="bad_inputs_fixture_"))
    FIXTURE.update(dir=d, db=d / "fix.db", model=d / "r18.safetensors")

    def build():
        from autotransfer.predict.predictor import save_checkpoint

        os.chdir(d)
        study = search(storage=str(d / "fix.db"), name="fix", baselines=False,
                       warm_start=False)
        study.load_best()
        # A model file the CLI can load with only the installed entry-point plugins
        # (tiny_cnn comes from autotransfer.testing): resnet18, no pretrained weights.
        at.register_plugin("autotransfer_plugins.timm_backbones")
        train, valid = toy().split(0.25, seed=0)
        r = at.run_trial(at.Strategy("resnet18", pretrained=False, epochs=1, image_size=16),
                         train, valid)
        save_checkpoint(d / "r18.safetensors", r.state_dict, r.strategy, r.task, r.info,
                        r.preprocessing)
        return ["ok", ""]

    status, why = in_child(build, log=d / "log.txt")
    if status != "ok":
        FIXTURE["error"] = why
    if verbose:
        _show_log(d / "log.txt")


def fixture(key: str) -> Any:
    """``"db"``: the fixture's storage path; ``"study"``: its Study; ``"own_study"``: a
    copy of it in the working folder (its checkpoints stay shared, read only; what the case
    writes stays in the copy); ``"pred"``: its best model; ``"model"``: a resnet18 model
    file for the CLI (see the module docstring)."""
    if "error" in FIXTURE:
        raise RuntimeError(f"fixture study failed, case not run: {FIXTURE['error']}")
    if key in ("db", "model"):
        return FIXTURE[key]
    if key == "own_study":
        shutil.copy(FIXTURE["db"], Path.cwd() / "own.db")
        return at.Study.load(Path.cwd() / "own.db", name="fix")
    study = at.Study.load(FIXTURE["db"], name="fix")
    return study if key == "study" else study.load_best()


# --------------------------------------------------------------------------- API: data via search
@api("search-nan-labels", "nan")
def _(tmp):
    y = np.array([0.0, 1.0] * 12)
    y[5] = np.nan
    return search(at.data.from_arrays(images(), y))


@api("search-inf-labels", "inf")
def _(tmp):
    y = np.array([0.0, 1.0] * 12)
    y[3] = np.inf
    return search(at.data.from_arrays(images(), y))


@api("search-one-class-only", "'cat'", "cat")
def _(tmp):
    return search(at.data.from_arrays(images(), ["cat"] * 24))


@api("search-two-examples", "2", "two")
def _(tmp):
    return search(at.data.from_arrays(images(2), [0, 1]))


@api("search-regression-string-labels", "'a'", "'b'", "str")
def _(tmp):
    return search(at.data.from_arrays(images(), ["a", "b"] * 12), task="regression")


@api("search-regression-nan-target", "nan")
def _(tmp):
    y = np.linspace(0, 1, 24)
    y[4] = np.nan
    return search(at.data.from_arrays(images(), y), task="regression")


class _HubPlugin:
    """A plugin object whose backbones want weights from the hub (offline here)."""

    @at.hookimpl
    def register_backbones(self, register):
        register(at.TimmBackbone("hub_resnet18", timm_name="resnet18", weights="hub"))
        register(at.HFBackbone("hub_bert", hf_name="bert-base-uncased", weights="hub"))


@api("search-timm-hub-weights-offline", "hub_resnet18", "'hub'")
def _(tmp):
    at.register_plugin(_HubPlugin(), name="bad_inputs_hub")
    return search(backbones=["hub_resnet18"])


@api("search-hf-hub-weights-offline", "hub_bert", "'hub'", "bert-base-uncased")
def _(tmp):
    at.register_plugin(_HubPlugin(), name="bad_inputs_hub")
    return search(texts(), backbones=["hub_bert"], space=at.SearchSpace(epochs=1))


@api("from_arrays-float-images-nan-patch", "nan")
def _(tmp):
    x = np.random.default_rng(0).random((24, 3, 16, 16), dtype=np.float32)
    x[3, :, 4:8, 4:8] = np.nan
    return search(at.data.from_arrays(x, [0, 1] * 12))


@api("search-mixed-type-labels", "'cat'", "1.5")
def _(tmp):
    return search(at.data.from_arrays(images(), [0, "cat", 1.5, 1] * 6))


@api("search-labels-all-None", "None")
def _(tmp):
    return search(at.data.from_arrays(images(), [None] * 24))


@api("search-valid-unseen-class", "'zebra'", "zebra")
def _(tmp):
    valid = at.data.from_arrays(images(8, seed=1), ["cat", "dog", "zebra", "cat"] * 2)
    return search(at.data.from_arrays(images(), ["cat", "dog"] * 12), valid=valid)


@api("search-valid-other-modality", "text")
def _(tmp):
    return search(valid=texts(8))


@api("search-test-unseen-class", "'zebra'", "zebra")
def _(tmp):
    test = at.data.from_arrays(images(8, seed=1), ["cat", "dog", "zebra", "cat"] * 2)
    return search(at.data.from_arrays(images(), ["cat", "dog"] * 12), test=test)


@api("search-test-other-modality", "text")
def _(tmp):
    return search(test=texts(8))


@api("search-test-list", "list")
def _(tmp):
    return search(test=[images(1)[0], images(1)[0]])


@api("search-data-numpy-array", "ndarray")
def _(tmp):
    return search(images())


@api("search-data-None", "None", "NoneType")
def _(tmp):
    return at.search(None, backbones=["tiny_cnn"], n_trials=1, space=small_space(),
                     progress=False)


@api("search-frozen-groups-beyond-backbone", "99", "[0, 99]")
def _(tmp):
    return search(space=small_space(frozen_groups=(0, 99)))


# --------------------------------------------------------------------------- API: search arguments
def log_trial(study, trial) -> None:
    """A tracker callback, given alone instead of in a list."""


SEARCH_ROWS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("search-patience-0", dict(patience=0), ("patience=0", "0")),
    ("search-patience-nan", dict(patience=float("nan")), ("nan",)),
    ("search-timeout-nan", dict(timeout=float("nan")), ("nan",)),
    ("search-timeout-inf", dict(n_trials=None, timeout=float("inf")), ("inf",)),
    ("search-timeout-negative", dict(timeout=-1), ("-1", "-1.0")),
    ("search-timeout-str", dict(timeout="10"), ("'10'",)),
    ("search-no-budget", dict(n_trials=None, timeout=None), ("None", "neither")),
    ("search-seed-negative", dict(seed=-1), ("-1",)),
    ("search-seed-float", dict(seed=1.5), ("1.5",)),
    ("search-n_trials-0", dict(n_trials=0), ("n_trials=0", "0")),
    ("search-n_trials-2.5", dict(n_trials=2.5), ("2.5",)),
    ("search-n_trials-True", dict(n_trials=True), ("True",)),
    ("search-n_trials-str", dict(n_trials="3"), ("'3'",)),
    ("search-valid_fraction-1.5", dict(valid_fraction=1.5), ("1.5",)),
    ("search-valid_fraction-0", dict(valid_fraction=0), ("0", "0.0")),
    ("search-keep_checkpoints-negative", dict(keep_checkpoints=-1), ("-1",)),
    ("search-feature_cache-negative", dict(feature_cache=-5), ("-5",)),
    ("search-baselines-str", dict(baselines="yes"), ("'yes'",)),
    ("search-progress-int", dict(progress=2), ("2",)),
    ("search-backend-spark", dict(backend="spark"), ("'spark'",)),
    ("search-backend-class-not-instance", dict(backend=getattr(at, "OptunaBackend", None)),
     ("OptunaBackend",)),
    ("search-pruner-asha", dict(pruner="asha"), ("'asha'",)),
    ("search-pruner-int", dict(pruner=5), ("5",)),
    ("search-sampler-grid", dict(sampler="grid"), ("'grid'",)),
    ("search-sampler-gpp", dict(sampler="gpp"), ("'gpp'",)),
    ("search-final-stack", dict(final="stack"), ("'stack'", "ensemble")),
    ("search-final-bool", dict(final=True), ("True",)),
    ("search-time_limit", dict(time_limit=60), ("timeout=",)),  # must point to timeout=
    ("search-callbacks-not-callable", dict(callbacks=[5]), ("5",)),
    ("search-callbacks-one-callable-not-in-a-list", dict(callbacks=log_trial),
     ("log_trial",)),
    ("search-callbacks-str", dict(callbacks="mlflow"), ("'mlflow'",)),
    ("search-task-segmentation", dict(task="segmentation"), ("'segmentation'",)),
    ("search-task-int", dict(task=5), ("5",)),
    ("search-backbones-resnet9000", dict(backbones="resnet9000"), ("'resnet9000'",)),
    ("search-backbones-empty-list", dict(backbones=[]), ("[]",)),
    ("search-backbones-int", dict(backbones=5), ("5",)),
    ("search-backbones-glob-matches-none", dict(backbones=["zz*"]), ("'zz*'",)),
    ("search-space-str", dict(space="big"), ("'big'",)),
    ("search-space-dict", dict(space={"epochs": 1}), ("{'epochs': 1}", "dict")),
    ("search-name-empty", dict(name=""), ("''",)),
    ("search-name-int", dict(name=5), ("5",)),
    ("search-storage-memory", dict(storage="sqlite:///:memory:"), ("':memory:'", ":memory:")),
    ("search-storage-int", dict(storage=5), ("5",)),
    ("search-storage-unknown-suffix", dict(storage="study.txt"), ("study.txt",)),
    ("search-storage-parent-is-file", None, ("somefile.txt",)),
    ("search-unknown-keyword", dict(n_trails=3), ("n_trails",)),
    ("search-devices-99", dict(**{"__backend__": dict(devices=99)}), ("99",)),
    ("search-devices-gpu", dict(**{"__backend__": dict(devices="gpu")}), ("'gpu'",)),
    ("search-devices-empty-list", dict(**{"__backend__": dict(devices=[])}), ("[]",)),
    ("search-devices-cuda7", dict(**{"__backend__": dict(devices=["cuda:7"])}), ("'cuda:7'",)),
    ("search-devices-0", dict(**{"__backend__": dict(devices=0)}), ("0",)),
    ("search-trials_per_device-0",
     dict(**{"__backend__": dict(devices="cpu", trials_per_device=0)}), ("0",)),
]


def _search_row(kw: dict[str, Any], tmp: Path):
    kw = dict(kw)
    kw.update(backend(**kw.pop("__backend__")) if "__backend__" in kw else {})
    return search(**kw)


for _cid, _kw, _tokens in SEARCH_ROWS:
    if _kw is not None:
        CASES.append(Case(_cid, "api", functools.partial(_search_row, _kw), _tokens))


def _storage_parent_is_file(tmp: Path):
    (tmp / "somefile.txt").write_text("not a folder")
    return search(storage="somefile.txt/x.db")


CASES.append(Case("search-storage-parent-is-file", "api", _storage_parent_is_file,
                  ("somefile.txt",)))


def read_only_folder(tmp: Path) -> Path:
    """``tmp/ro``, which nobody can write to (for a case marked ``read_only=True``)."""
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root ignores modes; an immutable folder refuses root too
        subprocess.run(["chattr", "+i", str(ro)], check=True, capture_output=True)
        with contextlib.suppress(OSError):
            (ro / "probe").touch()
            raise RuntimeError("cannot make a read-only folder here (chattr +i had no effect)")
    return ro


@api("search-storage-read-only-folder", "ro", "s.db", read_only=True)
def _(tmp):
    return search(storage=read_only_folder(tmp) / "s.db")


@api("search-ray-max_retries-negative", "-1")
def _(tmp):
    return search(backend=at.RayBackend(max_retries=-1))


@api("search-ray-address-int", "6379")
def _(tmp):
    return search(backend=at.RayBackend(address=6379))


def _contained(result: Any, tmp: Path) -> str | None:
    outside = sorted(p.name for p in tmp.iterdir() if p.name != "a")
    outside += sorted(f"a/{p.name}" for p in (tmp / "a").iterdir() if p.name != "b")
    if outside:
        return f"files escaped the working folder: {outside}"
    if not isinstance(result, at.Study):
        return f"returned {type(result).__name__}, not a Study"
    return None


@api("search-name-dotdot (accepted if contained)", "../../x", accepted=True,
     check_ok=_contained)
def _(tmp):
    work = tmp / "a" / "b"
    work.mkdir(parents=True)
    os.chdir(work)
    return search(name="../../x")


def _ran(result: Any, tmp: Path) -> str | None:
    if not isinstance(result, at.Study):
        return f"returned {type(result).__name__}, not a Study"
    if not any(t.state.name == "COMPLETE" for t in result.trials()):
        return "no trial completed"
    return None


@api("search-n_trials-numpy-int64 (accepted)", accepted=True, check_ok=_ran)
def _(tmp):
    return search(n_trials=np.int64(3))


# ------------------------------------------------------------- API: SearchSpace, Strategy
@api("SearchSpace-image_size-1e6", "1000000")
def _(tmp):
    return search(space=small_space(image_size=10**6))


@api("SearchSpace-lr-fast", "'fast'")
def _(tmp):
    return at.SearchSpace(lr="fast")


@api("SearchSpace-lr-reversed", "(0.1, 0.001)", "[0.1, 0.001]")
def _(tmp):
    return at.SearchSpace(lr=(0.1, 0.001))


@api("SearchSpace-lr-log-zero", "0.0", "0")
def _(tmp):
    return at.SearchSpace(lr=(0.0, 0.1))


@api("SearchSpace-epochs-0", "0")
def _(tmp):
    return at.SearchSpace(epochs=0)


@api("SearchSpace-epochs-float", "2.5")
def _(tmp):
    return at.SearchSpace(epochs=2.5)


@api("SearchSpace-augment-bogus", "'sharpen'")
def _(tmp):
    return at.SearchSpace(augment=["none", "sharpen"])


@api("SearchSpace-empty-choice-list", "[]")
def _(tmp):
    return at.SearchSpace(dropout=[])


@api("SearchSpace-three-tuple", "(1, 2, 3)")
def _(tmp):
    return at.SearchSpace(epochs=(1, 2, 3))


@api("SearchSpace-unknown-field", "bogus")
def _(tmp):
    return at.SearchSpace(bogus=1)


@api("SearchSpace-dropout-nan", "nan")
def _(tmp):
    return at.SearchSpace(dropout=float("nan"))


@api("Strategy-lr-fast", "'fast'")
def _(tmp):
    return at.Strategy("tiny_cnn", lr="fast")


@api("Strategy-lr-nan", "nan")
def _(tmp):
    return at.Strategy("tiny_cnn", lr=float("nan"))


@api("Strategy-frozen_groups-negative", "-1")
def _(tmp):
    return at.Strategy("tiny_cnn", frozen_groups=-1)


@api("Strategy-optimizer-lion", "'lion'")
def _(tmp):
    return at.Strategy("tiny_cnn", optimizer="lion")


@api("Strategy-weight_decay-inf", "inf")
def _(tmp):
    return at.Strategy("tiny_cnn", weight_decay=float("inf"))


# --------------------------------------------------------------------------- API: run_trial
def _trial_data():
    train, valid = toy().split(0.25, seed=0)
    return train, valid


@api("run_trial-unknown-backbone", "'nope'")
def _(tmp):
    train, valid = _trial_data()
    return at.run_trial(at.Strategy("nope", epochs=1, image_size=16), train, valid)


@api("run_trial-train-not-dataset", "ndarray")
def _(tmp):
    _, valid = _trial_data()
    return at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16), images(), valid)


@api("run_trial-text-to-image-backbone", "text")
def _(tmp):
    return at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16), texts(), texts(8))


@api("run_trial-strategy-dict", "dict", "{'backbone'")
def _(tmp):
    train, valid = _trial_data()
    return at.run_trial({"backbone": "tiny_cnn", "epochs": 1}, train, valid)


@api("run_trial-patience-0", "0")
def _(tmp):
    train, valid = _trial_data()
    return at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16), train, valid,
                        patience=0)


@api("run_trial-device-cuda7", "'cuda:7'", "cuda:7")
def _(tmp):
    train, valid = _trial_data()
    return at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16), train, valid,
                        device="cuda:7")


@api("run_trial-task-segmentation", "'segmentation'")
def _(tmp):
    train, valid = _trial_data()
    return at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16), train, valid,
                        task="segmentation")


@api("run_trial-frozen_groups-99", "99")
def _(tmp):
    train, valid = _trial_data()
    return at.run_trial(at.Strategy("tiny_cnn", frozen_groups=99, epochs=1, image_size=16),
                        train, valid)


# ----------------------------------------------------------------- API: catalogue, objects
@api("catalogue-timm-unknown-model", "'timm/resnet_18'", "timm/resnet_18")
def _(tmp):
    return search(backbones=["timm/resnet_18"])


@api("catalogue-timm-unknown-tag", "'timm/resnet18.nosuch'", "timm/resnet18.nosuch")
def _(tmp):
    return search(backbones=["timm/resnet18.nosuch"])


@api("catalogue-timm-name-without-prefix", "'resnet18'")
def _(tmp):
    return search(backbones=["resnet18"])


@api("catalogue-timm-glob-matches-none", "'timm/nosuch*'", "timm/nosuch*")
def _(tmp):
    return search(backbones=["timm/nosuch*"])


@api("catalogue-timm-name-on-text", "'timm/resnet18'", "text")
def _(tmp):
    return search(texts(), backbones=["timm/resnet18"], space=at.SearchSpace(epochs=1))


@api("catalogue-hf-offline-not-cached", "'hf/google-bert/bert-base-uncased'",
     "google-bert/bert-base-uncased")
def _(tmp):
    return search(texts(), backbones=["hf/google-bert/bert-base-uncased"],
                  space=at.SearchSpace(epochs=1))


@api("catalogue-hf-not-a-text-encoder", "'hf/timm/resnet18.a1_in1k'", "timm/resnet18.a1_in1k")
def _(tmp):
    from huggingface_hub import constants

    # a Hugging Face cache holding only the repository's config.json, as a download leaves
    constants.HF_HUB_CACHE = str(tmp / "hf")
    snap = tmp / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    (snap / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    return search(texts(), backbones=["hf/timm/resnet18.a1_in1k"],
                  space=at.SearchSpace(epochs=1))


@api("catalogue-hf-invalid-repo-id", "'not a repo'", "hf/not a repo")
def _(tmp):
    return search(texts(), backbones=["hf/not a repo"], space=at.SearchSpace(epochs=1))


@api("catalogue-hf-name-on-images", "'hf/google-bert/bert-base-uncased'", "image")
def _(tmp):
    return search(backbones=["hf/google-bert/bert-base-uncased"])


@api("catalogue-hf-glob-matches-none", "'hf/*'", "hf/*")
def _(tmp):
    return search(texts(), backbones=["hf/*"], space=at.SearchSpace(epochs=1))


@api("backbones-object-torch-module", "Linear")
def _(tmp):
    import torch

    return search(backbones=["tiny_cnn", torch.nn.Linear(2, 2)])


@api("backbones-object-class-not-instance", "TimmBackbone")
def _(tmp):
    return search(backbones=[at.TimmBackbone])


@api("backbones-object-int-in-list", "7", "backbones[1]")
def _(tmp):
    return search(backbones=["tiny_cnn", 7])


@api("backbones-object-timm_name-unknown", "'resnet_18'")
def _(tmp):
    return search(backbones=[at.TimmBackbone("mine", timm_name="resnet_18")])


@api("add_backbone-int", "5", "int")
def _(tmp):
    from autotransfer import plugins

    return plugins.current().add_backbone(5)


@api("backbones-object-two-named-mine", "'mine'")
def _(tmp):
    return search(backbones=[at.TimmBackbone("mine", timm_name="test_resnet", image_size=16),
                             at.TimmBackbone("mine", timm_name="test_efficientnet")])


@api("backbones-object-named-like-registered", "'tiny_cnn'")
def _(tmp):
    return search(backbones=[at.TimmBackbone("tiny_cnn", timm_name="test_resnet")])


@api("backbones-object-named-like-catalogue", "'timm/resnet18'")
def _(tmp):
    return search(backbones=[at.TimmBackbone("timm/resnet18", timm_name="test_resnet",
                                             image_size=16)])


# ------------------------------------------------------------------ API: rank_backbones
class _NaNBackbone(at.TimmBackbone):
    """A body whose features are NaN (broken weights, an overflow in half precision)."""

    def build(self, *, pretrained=True, drop_path=0.0):
        body = super().build(pretrained=False, drop_path=drop_path)
        body.register_forward_hook(lambda module, inputs, out: out * float("nan"))
        return body


def rank(data=None, **kw):
    """A ranking of tiny_cnn on 16 px toy images, then changes."""
    base = dict(backbones=["tiny_cnn"], image_size=16)
    base.update(kw)
    return at.rank_backbones(toy() if data is None else data, **base)


@api("rank_backbones-fewer-examples-than-classes", "4", "8")
def _(tmp):
    return rank(toy_images(8, classes=8, size=16), max_examples=4)


@api("rank_backbones-nan-features", "'nan_cnn'", "nan_cnn")
def _(tmp):
    return rank(backbones=[_NaNBackbone("nan_cnn", timm_name="test_efficientnet")])


@api("rank_backbones-task-segmentation", "'segmentation'")
def _(tmp):
    return rank(task="segmentation")


@api("rank_backbones-backbones-empty-list", "[]")
def _(tmp):
    return rank(backbones=[])


@api("rank_backbones-errors-ignore", "'ignore'")
def _(tmp):
    return rank(errors="ignore")


@api("rank_backbones-data-ndarray", "ndarray")
def _(tmp):
    return rank(images())


@api("rank_backbones-image-backbone-on-text", "'tiny_cnn'", "text")
def _(tmp):
    return rank(texts())


@api("rank_backbones-image_size-0", "0")
def _(tmp):
    return rank(image_size=0)


@api("rank_backbones-cache-path-str", "'features'", "str")
def _(tmp):
    return rank(cache="features")


@api("rank_backbones-device-cuda7-with-skip", "'cuda:7'", "cuda:7")
def _(tmp):
    return rank(device="cuda:7", errors="skip")


@api("rank_backbones-hf-offline-not-cached", "'hf/google-bert/bert-base-uncased'",
     "google-bert/bert-base-uncased")
def _(tmp):
    return rank(texts(), backbones=["tiny_bert", "hf/google-bert/bert-base-uncased"])


# ------------------------------------------------------------------ API: search warm_start
@api("search-warm_start-priors", "'priors'")
def _(tmp):
    return search(warm_start="priors")


@api("search-warm_start-3", "3")
def _(tmp):
    return search(warm_start=3)


@api("search-warm_start-txt-file", "notes.txt")
def _(tmp):
    (tmp / "notes.txt").write_text("earlier studies, in words")
    return search(warm_start="notes.txt")


# ----------------------------------------------- API: fine-tuning adapters (Strategy.adapter)
def few_texts() -> at.data.Dataset:
    return at.data.from_texts(["good film", "bad film", "great plot", "dull plot"] * 2,
                              [1, 0, 1, 0] * 2)


def refused_before_storage(tmp: Path, fn: Callable[[], Any]) -> Any:
    """``fn()``; a refusal that left a file in the (empty) working folder turns into a
    RuntimeError (BAD): the search touched storage before it checked its space."""
    try:
        return fn()
    except at.AutotransferError as exc:
        left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
        if left:
            raise RuntimeError(f"refused only after writing {left}: {exc}") from exc
        raise


@api("Strategy-adapter-prefix", "'prefix'")
def _(tmp):
    return at.Strategy("tiny_bert", adapter="prefix")


@api("Strategy-adapter-None", "None")
def _(tmp):
    return at.Strategy("tiny_bert", adapter=None)


@api("Strategy-lora_rank-0", "0")
def _(tmp):
    return at.Strategy("tiny_bert", adapter="lora", lora_rank=0)


@api("Strategy-lora_rank-1.5", "1.5")
def _(tmp):
    return at.Strategy("tiny_bert", adapter="lora", lora_rank=1.5)


@api("run_trial-adapter-lora-on-cnn", "'tiny_cnn'", "tiny_cnn")
def _(tmp):
    train, valid = _trial_data()
    return at.run_trial(at.Strategy("tiny_cnn", adapter="lora", epochs=1, image_size=16),
                        train, valid)


@api("search-adapter-bitfit-on-cnn", "'bitfit'", "bitfit")
def _(tmp):
    return refused_before_storage(tmp, lambda: search(space=small_space(adapter="bitfit")))


@api("search-adapter-lora-bitfit-on-cnn", "['lora', 'bitfit']", "('lora', 'bitfit')")
def _(tmp):
    return refused_before_storage(
        tmp, lambda: search(space=small_space(adapter=["lora", "bitfit"])))


@api("SearchSpace-adapter-qlora", "'qlora'")
def _(tmp):
    return at.SearchSpace(adapter="qlora")


@api("SearchSpace-lora_rank-0-to-8", "(0, 8)", "[0, 8]", "0")
def _(tmp):
    return at.SearchSpace(lora_rank=(0, 8))


@api("search-adapter-lora-peft-missing", "autotransfer[adapters]")
def _(tmp):
    import autotransfer.techniques.adapters as adapters

    available = adapters.peft_available
    adapters.peft_available = lambda: False
    try:
        return refused_before_storage(
            tmp, lambda: search(few_texts(), backbones=["tiny_bert"],
                                space=at.SearchSpace(epochs=1, adapter="lora")))
    finally:
        adapters.peft_available = available


# ------------------------------------------- API: domain adaptation (unlabeled=, adabn, dann)
def _unlabeled_case(cid: str, value: Callable[[], Any], *tokens: str) -> None:
    """A search given ``unlabeled=value()`` is refused before its storage exists."""
    api(cid, *tokens)(lambda tmp: refused_before_storage(
        tmp, lambda: search(unlabeled=value())))


def _uint8(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.uint8)


_unlabeled_case("search-unlabeled-text-for-images", lambda: ["a b", "c d"], "text", "image")
_unlabeled_case("search-unlabeled-two-channels", lambda: _uint8(4, 2, 16, 16), "(4, 2, 16, 16)",
                "1, 3 or 4 channels")
_unlabeled_case("search-unlabeled-nan-images", lambda: torch.full((4, 3, 16, 16), float("nan")),
                "NaN", "finite")
_unlabeled_case("search-unlabeled-tiny-images", lambda: _uint8(4, 3, 4, 4), "4x4", "8x8")
_unlabeled_case("search-unlabeled-one-input", lambda: _uint8(1, 3, 16, 16), "1", "at least 2")
_unlabeled_case("search-unlabeled-missing-folder", lambda: "target_photos/", "'target_photos/'",
                "a folder of image files")


@api("Strategy-dann-negative", "-0.1", ">= 0")
def _(tmp):
    return at.Strategy("tiny_cnn", dann=-0.1)


@api("Strategy-adabn-string", "'yes'", "True or False")
def _(tmp):
    return at.Strategy("tiny_cnn", adabn="yes")


@api("run_trial-adabn-without-unlabeled", "adabn=True", "unlabeled=")
def _(tmp):
    return at.run_trial(at.Strategy("tiny_cnn", adabn=True, epochs=1, image_size=16), toy(),
                        toy())


@api("run_trial-adabn-on-bert", "tiny_bert", "BatchNorm", "dann")
def _(tmp):
    return at.run_trial(at.Strategy("tiny_bert", adabn=True, epochs=1), texts(), texts(),
                        unlabeled=texts())


# --------------------------------------------------------------------------- API: adapters
@api("from_folder-missing", "no_such_folder")
def _(tmp):
    return at.data.from_folder(tmp / "no_such_folder")


@api("from_folder-empty", "empty")
def _(tmp):
    (tmp / "empty").mkdir()
    return at.data.from_folder(tmp / "empty")


@api("from_folder-one-class (then search)", "'cat'", "cat")
def _(tmp):
    write_pngs(tmp / "data" / "cat", 12)
    return search(at.data.from_folder(tmp / "data"))


@api("from_folder-on_error-bogus", "'ignore'")
def _(tmp):
    write_pngs(tmp / "data" / "cat", 2)
    return at.data.from_folder(tmp / "data", on_error="ignore")


@api("from_folder-non-image-file", "notes.doc")
def _(tmp):
    write_pngs(tmp / "data" / "cat", 3)
    write_pngs(tmp / "data" / "dog", 3)
    (tmp / "data" / "dog" / "notes.doc").write_text("hello")
    return at.data.from_folder(tmp / "data")


@api("from_folder-corrupt-png", "bad.png")
def _(tmp):
    write_pngs(tmp / "data" / "cat", 3)
    write_pngs(tmp / "data" / "dog", 3)
    (tmp / "data" / "dog" / "bad.png").write_bytes(b"\x89PNG garbage")
    return at.data.from_folder(tmp / "data")


@api("from_csv-missing-file", "missing.csv")
def _(tmp):
    return at.data.from_csv(tmp / "missing.csv", image="path", label="y")


@api("from_pandas-image-and-text", "both")
def _(tmp):
    import pandas as pd

    df = pd.DataFrame({"path": ["a.png", "b.png"], "text": ["x", "y"], "y": [0, 1]})
    return at.data.from_pandas(df, image="path", text="text", label="y")


@api("from_pandas-missing-label-column", "'breed'")
def _(tmp):
    import pandas as pd

    df = pd.DataFrame({"text": ["x", "y", "z", "w"], "y": [0, 1, 0, 1]})
    return at.data.from_pandas(df, text="text", label="breed")


@api("from_pandas-missing-image-files", "nope0.png")
def _(tmp):
    import pandas as pd

    df = pd.DataFrame({"path": [f"nope{i}.png" for i in range(4)], "y": [0, 1, 0, 1]})
    return at.data.from_pandas(df, image="path", label="y")


@api("from_pandas-not-a-dataframe", "list")
def _(tmp):
    return at.data.from_pandas([{"text": "x", "y": 0}], text="text", label="y")


@api("from_arrays-5-channels", "5", "(24, 5, 16, 16)")
def _(tmp):
    return at.data.from_arrays(np.zeros((24, 5, 16, 16), np.uint8), [0, 1] * 12)


@api("from_arrays-labels-length-mismatch", "24", "23")
def _(tmp):
    return at.data.from_arrays(images(), [0, 1] * 11 + [0])


@api("from_arrays-2d-array", "(24, 16)")
def _(tmp):
    return at.data.from_arrays(np.zeros((24, 16), np.uint8), [0, 1] * 12)


@api("from_arrays-complex-dtype", "complex64")
def _(tmp):
    return at.data.from_arrays(np.zeros((24, 3, 16, 16), np.complex64), [0, 1] * 12)


@api("from_arrays-empty", "[]", "empty")
def _(tmp):
    return at.data.from_arrays([], [])


@api("from_arrays-tiny-images (then search)", "1", "(1, 1)", "1x1")
def _(tmp):
    return search(at.data.from_arrays(np.zeros((24, 3, 1, 1), np.uint8), [0, 1] * 12),
                  space=at.SearchSpace(epochs=1))


@api("from_hf-missing-column", "'image'")
def _(tmp):
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]})
    return at.data.from_hf(ds, input="image", label="label")


@api("from_hf-not-a-dataset", "dict")
def _(tmp):
    return at.data.from_hf({"text": ["a"], "label": [0]}, input="text", label="label")


@api("from_torch-not-a-dataset", "int")
def _(tmp):
    return at.data.from_torch(5)


@api("from_torch-items-not-pairs", "int", "triple", "3")
def _(tmp):
    return at.data.from_torch([(1, 2, 3)] * 4)


# --------------------------------------------------------------------------- API: study / predictor
@api("Study.load-missing-file", "missing.db")
def _(tmp):
    return at.Study.load(tmp / "missing.db")


@api("Study.load-wrong-name", "'nope'")
def _(tmp):
    return at.Study.load(fixture("db"), name="nope")


@api("Study.load-not-a-database", "notes.db")
def _(tmp):
    (tmp / "notes.db").write_text("just some text, not sqlite")
    return at.Study.load(tmp / "notes.db")


@api("study.load_best-no-completed-trial", "'empty'", "empty")
def _(tmp):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{tmp / 'e.db'}", study_name="empty")
    return at.Study.load(tmp / "e.db").load_best()


@api("study.load_best-device-tpu", "'tpu'", "tpu")
def _(tmp):
    return fixture("study").load_best(device="tpu")


@api("study.ensemble-method-stacked", "'stacked'", "greedy")
def _(tmp):
    return fixture("own_study").ensemble(method="stacked")


@api("study.ensemble-greedy-without-valid", "valid=", "uniform")
def _(tmp):
    return fixture("own_study").ensemble()


@api("study.ensemble-k-1", "k=1", "[2, 32]")
def _(tmp):
    return fixture("own_study").ensemble(1, method="uniform")


@api("study.soup-method-average", "'average'", "greedy")
def _(tmp):
    return fixture("own_study").soup(method="average")


@api("study.soup-greedy-without-valid", "valid=", "uniform")
def _(tmp):
    return fixture("own_study").soup()


@api("at.load-non-model-file", "notes.pt")
def _(tmp):
    (tmp / "notes.pt").write_text("hello")
    return at.load(tmp / "notes.pt")


@api("at.load-foreign-torch-file", "other.pt")
def _(tmp):
    import torch

    torch.save({"weights": torch.zeros(3)}, tmp / "other.pt")
    return at.load(tmp / "other.pt")


@api("at.load-truncated-model-file", "m.safetensors")
def _(tmp):
    path = fixture("pred").save(tmp / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return at.load(path)


@api("at.load-plain-safetensors-file", "plain.safetensors")
def _(tmp):
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3, 4)}, str(tmp / "plain.safetensors"))
    return at.load(tmp / "plain.safetensors")


@api("at.load-old-pickle-model-file", "old.pt")
def _(tmp):
    import torch

    torch.save({"format": "autotransfer-model/1", "state_dict": {"w": torch.zeros(2)},
                "strategy": {"backbone": "tiny_cnn"}, "task": "classification",
                "info": {"classes": [0, 1]}}, tmp / "old.pt")
    return at.load(tmp / "old.pt")


@api("study.evaluate-unknown-labels", "7")
def _(tmp):
    return fixture("study").evaluate(at.data.from_arrays(images(8), [0, 1, 7, 1] * 2))


@api("study.refit-no-completed-trial", "'empty'", "empty")
def _(tmp):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{tmp / 'e.db'}", study_name="empty")
    return at.Study.load(tmp / "e.db").refit(toy())


@api("study.refit-trial-99", "99")
def _(tmp):
    return fixture("own_study").refit(toy(), trial=99)


@api("study.refit-epochs-many", "'many'")
def _(tmp):
    return fixture("own_study").refit(toy(), epochs="many")


@api("study.refit-epochs-0", "0")
def _(tmp):
    return fixture("own_study").refit(toy(), epochs=0)


@api("study.refit-text-on-image-study", "text")
def _(tmp):
    return fixture("own_study").refit(texts())


@api("study.report-missing-folder", "nodir")
def _(tmp):
    return fixture("study").report(tmp / "nodir" / "r.html")


@api("study.report-read-only-folder", "ro", "r.html", read_only=True)
def _(tmp):
    return fixture("study").report(read_only_folder(tmp) / "r.html")


@api("export-format-coreml", "'coreml'")
def _(tmp):
    return fixture("pred").export(tmp / "m.mlmodel", format="coreml")


@api("export-format-not-applicable", "'transformers'", "transformers")
def _(tmp):
    return fixture("pred").export(tmp / "m-transformers", format="transformers")


@api("export-missing-folder", "nodir")
def _(tmp):
    return fixture("pred").export(tmp / "nodir" / "m.onnx", format="onnx")


@api("predict-wrong-modality-text-dataset", "text")
def _(tmp):
    return fixture("pred").predict(texts(4))


@api("predict-wrong-modality-string", "'a sentence, not a path'")
def _(tmp):
    return fixture("pred").predict("a sentence, not a path")


@api("predict-batch_size-0", "0")
def _(tmp):
    return fixture("pred").predict(images(2), batch_size=0)


@api("predict-5-channel-array", "5", "(2, 5, 16, 16)")
def _(tmp):
    return fixture("pred").predict(np.zeros((2, 5, 16, 16), np.uint8))


@api("predict-dataframe-missing-column", "'photo'")
def _(tmp):
    import pandas as pd

    return fixture("pred").predict(pd.DataFrame({"a": ["x"], "b": ["y"]}), column="photo")


@api("predict-as_pandas-yes", "'yes'")
def _(tmp):
    return fixture("pred").predict(images(2), as_pandas="yes")


@api("predict_proba-as_pandas-yes", "'yes'")
def _(tmp):
    return fixture("pred").predict_proba(images(2), as_pandas="yes")


# --------------------------------------------------------------------------- TOML through the CLI
def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def study_toml(top: dict | None = None, data: dict | None = None, space: dict | None = None,
               *, drop: tuple[str, ...] = (), extra: str = "", own_data: bool = False) -> str:
    """A tiny valid study (tiny_cnn, one trial, one epoch, digits at 16 px), then changes.

    ``own_data``: ``data`` is the whole [data] table instead of changes to the demo one.
    """
    t = {"plugins": list(PLUGINS), "name": "t", "backbones": ["tiny_cnn"], "n_trials": 1,
         "seed": 0, **(top or {})}
    demo = {"demo": "digits", "image_size": 16, "per_class": 4, "valid_per_class": 4}
    d = dict(data or {}) if own_data else {**demo, **(data or {})}
    s = {"epochs": 1, "image_size": 16, **(space or {})}
    lines = [f"{k} = {toml_value(v)}" for k, v in t.items() if k not in drop]
    if "data" not in drop:
        lines += ["", "[data]"] + [f"{k} = {toml_value(v)}" for k, v in d.items()]
    lines += ["", "[space]"] + [f"{k} = {toml_value(v)}" for k, v in s.items()]
    return "\n".join(lines) + "\n" + extra


def toml_case(cid: str, text: str, *tokens: str, args: tuple[str, ...] = ()) -> None:
    cli(cid, ["run", "study.toml", "--no-progress", *args], *tokens,
        files={"study.toml": text}, storage="t.db")


toml_case("toml-data-per_class-negative", study_toml(data={"per_class": -1}), "-1")
toml_case("toml-backbones-int", study_toml({"backbones": 5}), "5")
toml_case("toml-unknown-key", study_toml({"n_trails": 3}), "'n_trails'", "n_trails")
toml_case("toml-invalid-syntax", study_toml(extra="this is = = not toml\n"), "line 1",
          "line", "study.toml")
toml_case("toml-missing-data-table", study_toml(drop=("data",)), "[data]", "data")
toml_case("toml-unknown-data-source", study_toml(data={"parquet": "x.parquet"}, own_data=True),
          "parquet")
toml_case("toml-n_trials-many", study_toml({"n_trials": "many"}), "'many'")
toml_case("toml-devices-gpu", study_toml({"devices": "gpu"}), "'gpu'")
toml_case("toml-space-epochs-0", study_toml(space={"epochs": 0}), "0")
toml_case("toml-space-lr-reversed", study_toml(space={"lr": [1, 0]}), "[1, 0]", "(1, 0)")
toml_case("toml-pruner-int", study_toml({"pruner": 5}), "5")
toml_case("toml-timeout-negative", study_toml({"timeout": -1}), "-1", "-1.0")
toml_case("toml-space-unknown-field", study_toml(space={"bogus": 1}), "bogus")
toml_case("toml-space-table-not-choices", study_toml(space={}) + "\n[space.lr]\nlow = 1\n",
          "low")
toml_case("toml-data-folder-missing", study_toml(data={"folder": "nowhere"}, own_data=True),
          "nowhere")
toml_case("toml-data-unlabeled-on-demo", study_toml(data={"unlabeled": "target/"}),
          "'unlabeled'", "demo")
toml_case("toml-backend-spark", study_toml({"backend": "spark"}), "'spark'")
toml_case("toml-address-with-optuna", study_toml({"address": "head:6379"}), "address")
toml_case("toml-storage-memory", study_toml({"storage": "sqlite:///:memory:"}), ":memory:")
toml_case("toml-name-int", study_toml({"name": 5}), "5")
toml_case("toml-plugins-missing-module", study_toml({"plugins": ["no_such_plugin_mod"]}),
          "no_such_plugin_mod")
toml_case("toml-seed-negative", study_toml({"seed": -1}), "-1")
toml_case("toml-data-demo-unknown", study_toml(data={"demo": "mnist"}), "'mnist'")
toml_case("toml-backbones-timm-unknown", study_toml({"backbones": ["timm/resnet_18"]}),
          "'timm/resnet_18'", "timm/resnet_18")
toml_case("toml-warm_start-priors", study_toml({"warm_start": "priors"}), "'priors'")
toml_case("toml-space-adapter-qlora", study_toml(space={"adapter": "qlora"}), "'qlora'")

# --------------------------------------------------------------------------- the CLI itself
cli("cli-leaderboard-missing-file", ["leaderboard", "nope.db"], "nope.db")
cli("cli-leaderboard-top-negative", lambda tmp: ["leaderboard", str(fixture("db")),
                                                 "--top", "-1"], "-1")
cli("cli-leaderboard-wrong-name", lambda tmp: ["leaderboard", str(fixture("db")),
                                               "--name", "nope"], "'nope'")
cli("cli-leaderboard-format-xml", lambda tmp: ["leaderboard", str(fixture("db")),
                                               "--format", "xml"], "'xml'")
cli("cli-leaderboard-not-a-db", ["leaderboard", "notes.txt"], "notes.txt",
    files={"notes.txt": "hello"})
cli("cli-run-missing-file", ["run", "nope.toml"], "nope.toml")
toml_case("cli-run-top-negative", study_toml(), "-1", args=("--top", "-1"))
toml_case("cli-run-n-trials-abc", study_toml(), "'abc'", args=("--n-trials", "abc"))
toml_case("cli-run-n-trials-0", study_toml(), "0", args=("--n-trials", "0"))
toml_case("cli-run-timeout-nan", study_toml(), "nan", args=("--timeout", "nan"))
cli("cli-report-missing-file", ["report", "missing.db"], "missing.db")
cli("cli-report-output-missing-folder", lambda tmp: ["report", str(fixture("db")), "-o",
                                                     "/missing/dir/r.html"],
    "/missing/dir", "/missing/dir/r.html")
cli("cli-predict-not-a-model", ["predict", "notes.txt", "x.png"], "notes.txt",
    files={"notes.txt": "hello"})
cli("cli-predict-missing-image", lambda tmp: ["predict", str(fixture("model")), "missing.png"],
    "missing.png", autoload=True)
cli("cli-export-format-coreml", lambda tmp: ["export", str(fixture("model")), "--format",
                                             "coreml"], "'coreml'", autoload=True)
cli("cli-unknown-subcommand", ["fly"], "'fly'")
cli("cli-backbones-modality-audio", ["backbones", "--modality", "audio"], "'audio'")
cli("cli-backbones-timm-glob-matches-none", ["backbones", "timm/nosuch*"], "'timm/nosuch*'",
    "timm/nosuch*")
cli("cli-backbones-timm-glob-matches-none-all", ["backbones", "timm/nosuch*", "--all"],
    "'timm/nosuch*'", "timm/nosuch*")
cli("cli-backbones-timm-name-typo", ["backbones", "timm/resnet_18", "--all"], "'timm/resnet_18'",
    "timm/resnet_18")


# --------------------------------------------------------------------------- more cases
# Cases kept in sibling modules, one per theme; each defines ``add_cases(b)`` and builds its
# cases with this module's ``b.api``, ``b.cli``, ``b.search``, ``b.fixture``, ...
CASE_MODULES = ("_bad_cases_study", "_bad_cases_config", "_bad_cases_data", "_bad_cases_model",
                "_bad_cases_cli")


def _add_case_modules() -> None:
    import importlib

    sys.path.insert(0, str(Path(__file__).parent))
    for name in CASE_MODULES:
        if (Path(__file__).parent / f"{name}.py").is_file():
            importlib.import_module(name).add_cases(sys.modules[__name__])


_add_case_modules()


# --------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-k", action="append", default=[],
                   help="only cases whose id contains this (repeat: any of them)")
    p.add_argument("--kind", choices=["api", "cli"],
                   help="only the cases of this kind (cli: those run through the CLI)")
    p.add_argument("-v", "--verbose", action="store_true", help="show what each case printed")
    args = p.parse_args()
    cases = [c for c in CASES if (not args.k or any(k in c.id for k in args.k))
             and (args.kind is None or c.kind == args.kind)]
    ids = [c.id for c in CASES]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"duplicate case ids: {dupes}"
    started = time.perf_counter()
    make_fixture(args.verbose)  # one tiny finished study for the load/predict/CLI cases
    counts = {"GOOD": 0, "WEAK": 0, "BAD": 0}
    for c in cases:
        verdict, outcome = (run_api if c.kind == "api" else run_cli)(c, args.verbose)
        counts[verdict] += 1
        print(f"{verdict:<4}  {c.id}  {outcome}", flush=True)
    shutil.rmtree(FIXTURE.get("dir", ""), ignore_errors=True)
    print(f"\n{len(cases)} cases in {time.perf_counter() - started:.0f} s")
    print(f"GOOD {counts['GOOD']}  WEAK {counts['WEAK']}  BAD {counts['BAD']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
