"""Bad inputs against a study's identity and files (issue 21): each refusal leaves the
study's storage byte-identical (``b.intact``), and what must work still works."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import autotransfer as at
from autotransfer.testing import toy_images


def add_cases(b) -> None:
    _storage_cases(b)
    _identity_cases(b)
    _result_cases(b)


def _own(b, tmp: Path) -> Path:
    """A copy of the fixture study's storage in the case's folder."""
    b.fixture("own_study")
    return tmp / "own.db"


def _resume(b, tmp: Path, data=None, **kw):
    """The fixture's search again, on its copy, as the fixture made it unless ``kw`` says."""
    db = _own(b, tmp)
    args = dict(storage=str(db), name="fix", baselines=False, warm_start=False, n_trials=3)
    with b.intact(db):
        return b.search(data, **{**args, **kw})


def _storage_cases(b) -> None:
    @b.api("study-report-over-its-own-db", "own.db")
    def _(tmp):
        db = _own(b, tmp)
        with b.intact(db):
            return at.Study.load(db).report(db)

    @b.api("study-report-over-another-sqlite-file", "other.db")
    def _(tmp):
        shutil.copy(b.fixture("db"), tmp / "other.db")
        with b.intact(tmp / "other.db"):
            return b.fixture("study").report(tmp / "other.db")

    @b.api("study-report-over-a-users-file", "notes.html")
    def _(tmp):
        (tmp / "notes.html").write_text("<html>mine</html>")
        with b.intact(tmp / "notes.html"):
            return b.fixture("study").report(tmp / "notes.html")

    def _swept(result, tmp):
        left = [p.name for p in tmp.iterdir() if p.name.endswith(".tmp")]
        return f"temporary files left: {left}" if left else None

    @b.api("study-report-sweeps-a-killed-writers-tmp (accepted)", accepted=True,
           check_ok=_swept)
    def _(tmp):
        page = b.fixture("study").report(tmp / "r.html")
        (tmp / f".r.html.{2**22 + 3}.0123abcd.tmp").write_text("half a page")
        return b.fixture("study").report(page)

    b.cli("cli-report-output-is-the-study-db",
          lambda tmp: ["report", str(_copy(b, tmp)), "-o", str(tmp / "own.db")], "own.db")

    @b.api("study-report-of-a-study-named-a/b (accepted)", accepted=True,
           check_ok=lambda r, tmp: None if r == 0 and list(tmp.glob("s-a_b-*.html"))
           else f"exit {r}, files {[p.name for p in tmp.iterdir()]}")
    def _(tmp):
        from autotransfer.cli import main

        shutil.copy(b.fixture("db"), tmp / "s.db")
        _rename(tmp / "s.db", "fix", "a/b")
        return main(["report", str(tmp / "s.db")])

    @b.api("study-postgres-unreachable-writes-nothing", "127.0.0.1", "postgresql")
    def _(tmp):
        with b.intact(tmp / "studies"):
            return b.search(storage="postgresql://u:p@127.0.0.1:1/db")

    @b.api("study-storage-file-read-only", "s.db", read_only=True)
    def _(tmp):
        shutil.copy(b.fixture("db"), tmp / "s.db")
        (tmp / "s.db").chmod(0o444)
        subprocess.run(["chattr", "+i", str(tmp / "s.db")], capture_output=True)
        try:
            with b.intact(tmp / "s.db"):
                return b.search(storage=str(tmp / "s.db"), name="fix", baselines=False,
                                warm_start=False, n_trials=3)
        finally:
            subprocess.run(["chattr", "-i", str(tmp / "s.db")], capture_output=True)


def _copy(b, tmp: Path) -> Path:
    shutil.copy(b.fixture("db"), tmp / "own.db")
    return tmp / "own.db"


def _rename(db: Path, old: str, new: str) -> None:
    import sqlite3

    with sqlite3.connect(str(db)) as con:
        con.execute("update studies set study_name = ? where study_name = ?", (new, old))


def _identity_cases(b) -> None:
    @b.api("study-search-into-a-plain-optuna-study", "'plain'", "minimize")
    def _(tmp):
        import optuna

        plain = optuna.create_study(storage=f"sqlite:///{tmp / 'p.db'}", study_name="plain",
                                    direction="minimize")
        plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        with b.intact(tmp / "p.db"):
            return b.search(storage=str(tmp / "p.db"), name="plain")

    @b.api("study-distill-into-a-search-study", "'fix'", "search study")
    def _(tmp):
        study = at.Study.load(_own(b, tmp), "fix")
        with b.intact(tmp / "own.db"):
            return study.distill(at.Strategy("tiny_cnn", epochs=1, image_size=16), b.toy(),
                                 n_trials=1, name="fix", progress=False)

    @b.api("study-search-into-a-distillation-sub-study", "'small'", "distill study")
    def _(tmp):
        study = at.Study.load(_own(b, tmp), "fix")
        study.distill(at.Strategy("tiny_cnn", epochs=1, image_size=16), b.toy(), n_trials=1,
                      name="small", progress=False)
        b.TRAINED.clear()  # the sub-study's own trial: what follows must not train
        with b.intact(tmp / "own.db"):
            return b.search(storage=str(tmp / "own.db"), name="small")

    @b.api("study-resume-with-other-classes", "[0, 1, 2]", "(3)")
    def _(tmp):
        return _resume(b, tmp, toy_images(40, classes=3, size=16))

    @b.api("study-resume-with-another-image-size", "image_size=24", "24")
    def _(tmp):
        return _resume(b, tmp, space=b.small_space(image_size=24))

    @b.api("study-resume-with-other-images", "other training data")
    def _(tmp):
        return _resume(b, tmp, toy_images(40, classes=2, size=16, seed=9))

    @b.api("study-resume-with-another-seed", "validation set", "seed")
    def _(tmp):
        return _resume(b, tmp, seed=3)

    @b.api("study-resume-with-other-backbones", "tiny_resnet")
    def _(tmp):
        return _resume(b, tmp, backbones=["tiny_resnet"])

    @b.api("study-resume-with-text-for-images", "text")
    def _(tmp):
        return _resume(b, tmp, b.texts(40))

    @b.api("study-resume-as-it-was-made (accepted)", accepted=True,
           check_ok=lambda r, tmp: None if len(r.trials()) == 3 else "not resumed to 3")
    def _(tmp):
        return b.search(storage=str(_own(b, tmp)), name="fix", baselines=False,
                        warm_start=False, n_trials=3)


def _result_cases(b) -> None:
    @b.api("study-refit-with-classes-the-study-lacks", "new [2]")
    def _(tmp):
        study = at.Study.load(_own(b, tmp), "fix")
        with b.intact(tmp / "own.db"):
            return study.refit(toy_images(40, classes=3, size=16))

    @b.api("study-refit-epochs-1e9", "1000000000")
    def _(tmp):
        with b.intact(_own(b, tmp)):
            return at.Study.load(tmp / "own.db", "fix").refit(b.toy(), epochs=10**9)

    @b.api("study-refit-unlabeled-without-adaptation", "unlabeled", "adabn")
    def _(tmp):
        with b.intact(_own(b, tmp)):
            return at.Study.load(tmp / "own.db", "fix").refit(
                b.toy(), unlabeled=b.images(8))

    @b.api("study-evaluate-record-no", "'no'")
    def _(tmp):
        with b.intact(_own(b, tmp)):
            return at.Study.load(tmp / "own.db", "fix").evaluate(b.toy(), record="no")
