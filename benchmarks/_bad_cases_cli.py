"""Bad inputs to the CLI's study forms (issue 24): ``best STORAGE``, and ``predict`` and
``export`` given a study's storage instead of a model file, with ``--name`` and ``--trial``;
``leaderboard --columns``. Each mistake exits 2 naming the value and what is accepted, and
leaves the storage it was given byte-identical (a command that reads a study writes none)."""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
from pathlib import Path

STUDY_FORMS = {  # command -> what follows the storage: all of it right but the storage
    "best": [],
    "predict": ["in", "--plugin", "autotransfer.testing"],  # "in": a folder of two images
    "export": ["--format", "onnx", "-o", "m.onnx", "--plugin", "autotransfer.testing"],
}


def add_cases(b) -> None:
    for command in STUDY_FORMS:
        _storage_cases(b, command)
    _best_only_cases(b)
    _predict_cases(b)
    _leaderboard_cases(b)
    _accepted_cases(b)


# --------------------------------------------------------------------------- storages
def own(b, tmp: Path, name: str = "own.db") -> Path:
    """A copy of the fixture study's storage (study "fix", one completed trial, 0)."""
    shutil.copy(b.fixture("db"), tmp / name)
    return tmp / name


def two_studies(b, tmp: Path) -> Path:
    """A storage holding the fixture's search twice, as "fix" and "fix2"."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = own(b, tmp)
    optuna.copy_study(from_study_name="fix", from_storage=f"sqlite:///{db}",
                      to_storage=f"sqlite:///{db}", to_study_name="fix2")
    return db


def no_model_file(b, tmp: Path) -> Path:
    """The fixture's study whose trial kept no model file (as when keep_checkpoints
    deleted it)."""
    db = own(b, tmp, "nock.db")
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("DELETE FROM trial_system_attributes WHERE key = ?",
                    ("autotransfer:checkpoint",))
    return db


def argv(b, command: str, make, *extra: str):
    """``argv(tmp)`` for ``command`` on the storage ``make(tmp)`` gives (a name, or a
    Path it made), with ``extra`` options."""
    def build(tmp: Path) -> list[str]:
        storage = make(tmp)
        if command == "predict":
            b.write_pngs(tmp / "in", 2)
        return [command, str(storage), *STUDY_FORMS[command], *extra]
    return build


# --------------------------------------------------------------------------- the cases
def _storage_cases(b, command: str) -> None:
    """The same mistakes for best, predict and export on a study's storage."""
    cid = f"cli-{command}-study" if command != "best" else "cli-best"
    auto = command != "best"  # the study's model needs the installed heads plugin
    cases = [
        ("missing-storage", lambda tmp: "nope.db", (), ("nope.db",), {}, ()),
        ("storage-text-file", lambda tmp: "notes.db", (), ("notes.db",),
         {"notes.db": "just some text, not a study\n"}, ("notes.db",)),
        ("storage-empty-file", lambda tmp: "empty.db", (), ("empty.db",),
         {"empty.db": ""}, ("empty.db",)),
        ("name-unknown", lambda tmp: own(b, tmp), ("--name", "nope"), ("'nope'",), {},
         ("own.db",)),
        ("trial-not-an-integer", lambda tmp: own(b, tmp), ("--trial", "abc"), ("'abc'",),
         {}, ("own.db",)),
        ("trial-negative", lambda tmp: own(b, tmp), ("--trial", "-1"), ("-1",), {},
         ("own.db",)),
        ("trial-99-does-not-exist", lambda tmp: own(b, tmp), ("--trial", "99"), ("99",), {},
         ("own.db",)),
        ("trial-kept-no-model-file", lambda tmp: no_model_file(b, tmp), ("--trial", "0"),
         ("0",), {}, ("nock.db",)),
        ("no-trial-kept-a-model-file", lambda tmp: no_model_file(b, tmp), (),
         ("'fix'",), {}, ("nock.db",)),
        ("several-studies-no-name", lambda tmp: two_studies(b, tmp), (),
         ("2 studies", "'fix2'"), {}, ("own.db",)),
    ]
    for what, make, extra, tokens, files, intact in cases:
        b.cli(f"{cid}-{what}", argv(b, command, make, *extra), *tokens, files=files,
              intact=intact, autoload=auto)


def _best_only_cases(b) -> None:
    b.cli("cli-best-storage-text-journal", ["best", "notes.log"], "notes.log",
          files={"notes.log": "just some text, not a journal\n"}, intact=("notes.log",))
    b.cli("cli-best-storage-not-a-study-suffix", ["best", "notes.txt"], "notes.txt",
          files={"notes.txt": "hello"})


def _predict_cases(b) -> None:
    def study_then(*inputs: str):
        def build(tmp: Path) -> list[str]:
            return ["predict", str(own(b, tmp)), *inputs, "--plugin", "autotransfer.testing"]
        return build

    b.cli("cli-predict-study-missing-input-file", study_then("missing.png"), "missing.png",
          autoload=True, intact=("own.db",))
    b.cli("cli-predict-study-empty-input-folder",
          lambda tmp: ((tmp / "photos").mkdir(), study_then("photos")(tmp))[-1], "photos",
          autoload=True, intact=("own.db",))
    b.cli("cli-predict-model-file-with-trial",
          lambda tmp: ["predict", str(b.fixture("model")), "x.png", "--trial", "0"],
          "r18.safetensors", autoload=True)
    b.cli("cli-export-model-file-with-name",
          lambda tmp: ["export", str(b.fixture("model")), "--format", "onnx", "--name", "fix"],
          "r18.safetensors", autoload=True)


def _leaderboard_cases(b) -> None:
    def board(*options: str):
        return lambda tmp: ["leaderboard", str(own(b, tmp)), *options]

    for what, options, tokens in (
            ("unknown", ("--columns", "trial,acurracy"), ("'acurracy'",)),
            ("unknown-in-csv", ("--columns", "trial,acurracy", "--format", "csv"),
             ("'acurracy'",)),
            ("empty", ("--columns", ""), ("''",)),
            ("only-commas", ("--columns", ", ,"), ("', ,'",)),
            ("with-all-columns", ("--columns", "trial", "--all-columns"),
             ("--all-columns",))):
        b.cli(f"cli-leaderboard-columns-{what}", board(*options), *tokens, intact=("own.db",))


def _main(*argv: str) -> tuple[int, str]:
    """``autotransfer ARGV`` in this process: (exit code, what it printed)."""
    from autotransfer.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def _accepted_cases(b) -> None:
    def printed(expected):
        def check(result, tmp):
            code, text = result
            return None if code == 0 and expected(text.strip(), tmp) \
                else f"exit {code}, printed {text[:200]!r}"
        return check

    @b.api("cli-best-prints-the-best-model (accepted)", accepted=True,
           check_ok=printed(lambda text, tmp: Path(text).is_file()
                            and Path(text).suffix == ".safetensors"))
    def _(tmp):
        return _main("best", str(own(b, tmp)), "--trial", "0")

    @b.api("cli-leaderboard-columns-csv (accepted)", accepted=True,
           check_ok=printed(lambda text, tmp: text.splitlines()[0] == "trial,accuracy"))
    def _(tmp):
        return _main("leaderboard", str(own(b, tmp)), "--columns", " trial, accuracy",
                     "--format", "csv")
