"""Bad inputs against study files, bounds and warm-start sources (issue 21): a study file
that is binary, a device, a FIFO, too big or nested too deep; a NUL in a name or path; an
integer field beyond its bound; a warm-start folder holding a crafted study. Each is refused
naming the value and what is accepted, before any storage exists; a study file's name never
moves its storage out of the file's folder, and the keys search() takes can be set."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import autotransfer as at

PROFILE = "autotransfer:profile"


def add_cases(b) -> None:
    _bound_cases(b)
    _study_file_cases(b)
    _accepted_study_file_cases(b)
    _warm_start_cases(b)


# ------------------------------------------------------------------ bounds
def _bound_cases(b) -> None:
    rows = [("epochs", 10**9), ("batch_size", 10**9), ("max_length", 10**7),
            ("frozen_groups", 10**9), ("lora_rank", 10**4)]
    for field, value in rows:
        b.api(f"cfg-Strategy-{field}-{value:.0e}", f"{field}={value}")(
            lambda tmp, f=field, v=value: at.Strategy("tiny_cnn", **{f: v}))

    @b.api("cfg-SearchSpace-epochs-and-batch_size-1e9", "1000000000")
    def _(tmp):
        return at.SearchSpace(epochs=10**9, batch_size=10**9)

    @b.api("cfg-SearchSpace-batch_size-range-to-1e9", "1000000000")
    def _(tmp):
        return at.SearchSpace(batch_size=(16, 10**9))

    @b.api("cfg-search-space-epochs-1e9", "1000000000")
    def _(tmp):
        return b.search(space=b.small_space(epochs=10**9))

    @b.api("cfg-check_field-epochs-1e9 (for refit)", "epochs=1000000000")
    def _(tmp):
        from autotransfer.strategy.strategy import check_field

        return check_field("epochs", 10**9)

    @b.api("cfg-Strategy-pretrained-str", "'no'")
    def _(tmp):
        return at.Strategy("tiny_cnn", pretrained="no")

    @b.api("cfg-SearchSpace-5000-choices", "5000")
    def _(tmp):
        return at.SearchSpace(dropout=[0.1] * 5000)

    @b.api("cfg-SearchSpace-range-of-strings", "('a', 1)")
    def _(tmp):
        return at.SearchSpace(lr=("a", 1))

    @b.api("cfg-SearchSpace-frozen_groups-None-among-choices", "None")
    def _(tmp):
        return at.SearchSpace(frozen_groups=[None, 2])

    @b.api("cfg-Strategy-at-the-bounds (accepted)", accepted=True,
           check_ok=lambda r, tmp: None if (r.epochs, r.batch_size) == (1000, 65536)
           else repr(r))
    def _(tmp):
        import numpy as np

        return at.Strategy("tiny_cnn", epochs=np.int64(1000), batch_size=65536)


# ------------------------------------------------------------------ study files
def _csv_study(b, csv: str, extra: str = "") -> str:
    return b.study_toml(data={"csv": csv, "image": "path", "label": "y"}, own_data=True) + extra


def _study_file_cases(b) -> None:
    toml, study = b.toml_case, b.study_toml

    def run(make):
        """argv for a case whose files cannot be written as text (bytes, links, FIFOs)."""
        def argv(tmp: Path) -> list[str]:
            make(tmp)
            return ["run", "study.toml", "--no-progress"]
        return argv

    b.cli("cfg-toml-binary", run(lambda t: (t / "study.toml").write_bytes(
        b"name = \xff\xfe\x00" + os.urandom(64))), "study.toml", "0xff")
    b.cli("cfg-toml-is-a-symlink-to-dev-zero",
          run(lambda t: (t / "study.toml").symlink_to("/dev/zero")), "study.toml")
    b.cli("cfg-toml-is-a-fifo", run(lambda t: os.mkfifo(t / "study.toml")), "study.toml")
    b.cli("cfg-toml-csv-symlink-to-dev-zero", run(lambda t: (
        (t / "zero.csv").symlink_to("/dev/zero"),
        (t / "study.toml").write_text(_csv_study(b, "zero.csv")))), "zero.csv")
    b.cli("cfg-toml-csv-is-a-fifo", run(lambda t: (
        os.mkfifo(t / "fifo.csv"), (t / "study.toml").write_text(_csv_study(b, "fifo.csv")))),
        "fifo.csv")
    b.cli("cfg-toml-valid_csv-is-a-fifo", run(lambda t: (
        os.mkfifo(t / "fifo.csv"), (t / "d.csv").write_text("path,y\na.png,0\n"),
        (t / "study.toml").write_text(b.study_toml(data={
            "csv": "d.csv", "image": "path", "label": "y", "valid_csv": "fifo.csv"},
            own_data=True)))), "fifo.csv")
    toml("cfg-toml-folder-is-a-file", study(data={"folder": "study.toml"}, own_data=True),
         "study.toml")
    toml("cfg-toml-deeply-nested", study(extra="a = " + "[" * 100_000 + "]" * 100_000 + "\n"),
         "study.toml")
    toml("cfg-toml-over-1-MiB", study(extra="# " + "x" * (1 << 20) + "\n"), "1048576")
    toml("cfg-toml-name-with-NUL", study({"name": "a\0b"}), "'a\\x00b'")
    toml("cfg-toml-name-with-newline", study({"name": "a\nb"}), "'a\\nb'")
    toml("cfg-toml-storage-with-NUL", study({"storage": "a\0b.db"}), "'a\\x00b.db'")
    toml("cfg-toml-warm_start-with-NUL", study({"warm_start": "x\0y"}), "'x\\x00y'")
    toml("cfg-toml-name-empty", study({"name": " "}), "' '")
    toml("cfg-toml-space-epochs-1e9", study(space={"epochs": 10**9}), "1000000000")
    toml("cfg-toml-space-batch_size-range-to-1e9", study(space={"batch_size": [16, 10**9]}),
         "1000000000")
    toml("cfg-toml-space-5000-choices",
         study(space={}) + "dropout = {choices = [" + ", ".join(["0.1"] * 5000) + "]}\n",
         "5000")
    toml("cfg-toml-space-choices-not-a-list", study(space={}) + "lr = {choices = 5}\n",
         "{'choices': 5}")
    toml("cfg-toml-demo-int", study(data={"demo": 5}), "demo=5")
    toml("cfg-toml-label-int", study(data={"csv": "d.csv", "image": "path", "label": 5},
                                     own_data=True), "label=5")
    toml("cfg-toml-on_error-list", study(data={"folder": ".", "on_error": [1]}, own_data=True),
         "on_error=[1]")
    toml("cfg-toml-data-is-a-number", "data = 5\n" + study(drop=("data",)), "data=5")
    toml("cfg-toml-rank-str", study({"rank": "yes"}), "'yes'")
    toml("cfg-toml-feature_cache-negative", study({"feature_cache": -3}), "-3")
    toml("cfg-toml-postgres-unreachable",
         study({"storage": "postgresql://u:p@127.0.0.1:1/db"}), "127.0.0.1", "postgresql")


def _accepted_study_file_cases(b) -> None:
    def ran(rc: Any, tmp: Path) -> str | None:
        return None if rc == 0 else f"exit {rc}"

    def contained(rc: Any, tmp: Path) -> str | None:
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
        outside = [f for f in files if f not in ("a", "a/b") and not f.startswith("a/b/")]
        return f"exit {rc}" if rc != 0 else (f"files outside the study file's folder: "
                                             f"{outside}" if outside else None)

    for name in ("../../escaped", "/abs/escaped"):
        @b.api(f"cfg-toml-name-{name} (accepted if contained)", accepted=True,
               check_ok=contained)
        def _(tmp, name=name):
            from autotransfer.cli import main

            folder = tmp / "a" / "b"
            folder.mkdir(parents=True)
            (folder / "study.toml").write_text(b.study_toml({"name": name}))
            os.chdir(folder)
            return main(["run", str(folder / "study.toml"), "--no-progress"])

    @b.api("cfg-toml-rank-and-feature_cache (accepted)", accepted=True, check_ok=ran)
    def _(tmp):
        from autotransfer.cli import main

        (tmp / "study.toml").write_text(b.study_toml({"rank": False,
                                                      "feature_cache": False}))
        return main(["run", "study.toml", "--no-progress"])

    @b.api("cfg-toml-name-a/b-then-report (accepted)", accepted=True,
           check_ok=lambda rc, tmp: ran(rc, tmp) or (
               None if len(list(tmp.glob("*.html"))) == 1 else "no report beside the db"))
    def _(tmp):
        from autotransfer.cli import main

        (tmp / "study.toml").write_text(b.study_toml({"name": "a/b"}))
        if main(["run", "study.toml", "--no-progress"]) != 0:
            return "run failed"
        (db,) = tmp.glob("*.db")
        return main(["report", str(db)])


# ------------------------------------------------------------------ warm-start sources
def crafted(b, target: Path, change) -> Path:
    """A copy of the fixture study whose recorded profile ``change`` rewrote."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(b.fixture("db"), target)
    with sqlite3.connect(target) as con:
        (value,) = con.execute("SELECT value_json FROM study_system_attributes WHERE key=?",
                               (PROFILE,)).fetchone()
        new = change(json.loads(value))
        con.execute("UPDATE study_system_attributes SET value_json=? WHERE key=?",
                    (new if isinstance(new, str) else json.dumps(new), PROFILE))
    return target


def _set(key: str, value: Any):
    def change(p: dict) -> dict:
        p[key] = value
        return p
    return change


def _strategy(key: str, value: Any):
    def change(p: dict) -> dict:
        for best in p["best"].values():
            best["strategy"][key] = value
        return p
    return change


def _best(key: str, value: Any):
    def change(p: dict) -> dict:
        for best in p["best"].values():
            best[key] = value
        return p
    return change


def _warm_start_cases(b) -> None:
    rows = [("n-negative", _set("n", -5), "n=-5"),
            ("bad-json", lambda p: "{not json", "x.db"),
            ("lr-fast", _strategy("lr", "fast"), "'fast'"),
            ("strategy-unknown-field", _strategy("turbo", True), "turbo"),
            ("strategy-epochs-1e9", _strategy("epochs", 10**9), "1000000000"),
            ("direction-sideways", _set("direction", "sideways"), "'sideways'"),
            ("best-not-a-table", _set("best", [1, 2]), "[1, 2]"),
            ("value-nan", _best("value", float("nan")), "nan"),
            ("classes-string", _set("classes", "ten"), "'ten'")]
    for cid, change, token in rows:
        @b.api(f"cfg-warm_start-folder-crafted-{cid}", token, "x.db")
        def _(tmp, change=change):
            db = crafted(b, tmp / "earlier" / "x.db", change)
            with b.intact(db):
                return _before_storage(tmp, lambda: b.search(warm_start=tmp / "earlier",
                                                             storage=tmp / "new.db"))

    @b.api("cfg-warm_start-file-crafted-lr-fast", "'fast'", "x.db")
    def _(tmp):
        db = crafted(b, tmp / "earlier" / "x.db", _strategy("lr", "fast"))
        with b.intact(db):
            return _before_storage(tmp, lambda: b.search(warm_start=db,
                                                         storage=tmp / "new.db"))

    b.cli("cfg-toml-warm_start-crafted-folder", lambda tmp: (
        crafted(b, tmp / "earlier" / "x.db", _strategy("lr", "fast")),
        (tmp / "study.toml").write_text(b.study_toml({"warm_start": "earlier"})),
        ["run", "study.toml", "--no-progress"])[-1], "'fast'", storage="t.db")

    def used_prior(r: Any, tmp: Path) -> str | None:
        started = r.system_attrs().get("autotransfer:prior") if isinstance(r, at.Study) \
            else None
        return None if started and started[0]["study"] == "fix" else f"priors: {started}"

    @b.api("cfg-warm_start-folder-with-foreign-files (accepted)", accepted=True,
           check_ok=used_prior)
    def _(tmp):
        folder = tmp / "earlier"
        folder.mkdir()
        shutil.copy(b.fixture("db"), folder / "a.db")
        (folder / "zero.db").symlink_to("/dev/zero")
        os.mkfifo(folder / "fifo.log")
        (folder / "notes.db").write_text("not a database")
        (folder / "readme.log").write_text("not a journal\n")
        with b.intact(folder / "a.db"):
            return b.search(warm_start=folder, storage=tmp / "new.db", baselines=False)

    @b.api("cfg-warm_start-prior-crafted-in-own-storage (accepted: skipped, warned)",
           accepted=True, check_ok=lambda r, tmp: None if isinstance(r, at.Study)
           else repr(r))
    def _(tmp):
        db = crafted(b, tmp / "s.db", _strategy("lr", "fast"))
        return b.search(warm_start="prior", storage=db, name="new", baselines=False)


def _before_storage(tmp: Path, fn) -> Any:
    """``fn()``; a refusal that left anything beside the crafted source is BAD."""
    try:
        return fn()
    except at.AutotransferError as exc:
        left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                      if not str(p.relative_to(tmp)).startswith("earlier"))
        if left:
            raise RuntimeError(f"refused only after writing {left}: {exc}") from exc
        raise
