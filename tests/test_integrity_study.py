"""Nothing a user does destroys or silently corrupts a study: its storage, its identity,
its recorded scores. Each refusal leaves the files that existed byte-identical."""

import hashlib
import shutil

import optuna
import pytest

import autotransfer as at
from autotransfer import plugins
from autotransfer import storage as st
from autotransfer.cli import main
from autotransfer.testing import toy_images

SPACE = at.SearchSpace(epochs=1, image_size=16)


def _search(data, path, **kw):
    args = dict(backbones=["tiny_cnn"], n_trials=2, storage=path, name="toy", space=SPACE,
                progress=False, baselines=False, warm_start=False, final="best")
    args.update(kw)
    return at.search(data, **args)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished two-trial study on three classes."""
    from conftest import first_party_host

    path = tmp_path_factory.mktemp("searched") / "s.db"
    with plugins.use(first_party_host()):
        _search(toy_images(48, classes=3, size=16), path)
    return path


@pytest.fixture
def own(searched, tmp_path):
    """The searched study in this test's own storage (checkpoints shared, read only)."""
    shutil.copy(searched, tmp_path / "s.db")
    return tmp_path / "s.db"


def test_a_report_is_never_written_over_a_study_or_a_users_file(own, tmp_path, capsys):
    study = at.Study.load(own)
    before = _sha(own)
    with pytest.raises(at.StorageError, match="the study's own storage"):
        study.report(own)
    assert main(["report", str(own), "-o", str(own)]) == 2
    assert "error: Refusing to write the report" in capsys.readouterr().err
    other = tmp_path / "other.db"
    shutil.copy(own, other)
    with pytest.raises(at.StorageError, match="it is a SQLite database"):
        study.report(other)
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my own page</html>")
    with pytest.raises(at.StorageError, match="autotransfer did not write it"):
        study.report(notes)
    assert _sha(own) == before == _sha(other)
    assert notes.read_text() == "<html>my own page</html>"
    page = study.report(tmp_path / "r.html")  # an earlier report is replaced
    (tmp_path / f".r.html.{2**22 + 1}.0123abcd.tmp").write_text("left by a killed writer")
    assert study.report(page) == page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.html", "other.db", "r.html",
                                                          "s.db"]


def test_a_plain_optuna_study_of_the_same_name_is_never_adopted(tmp_path):
    path = tmp_path / "s.db"
    plain = optuna.create_study(storage=f"sqlite:///{path}", study_name="toy",
                                direction="minimize")
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = _sha(path)
    with pytest.raises(at.StorageError, match=r"'toy' .* was not made by autotransfer .* "
                                              r"2 trial\(s\), direction='minimize'.*new name"):
        _search(toy_images(24, classes=2, size=16), path)
    assert _sha(path) == before


def test_a_search_and_a_distillation_never_share_a_study(own, tmp_path):
    study = at.Study.load(own)
    student = at.Strategy("tiny_cnn", epochs=1, image_size=16)
    _search(toy_images(48, classes=3, size=16), own, name="other", n_trials=1)
    with pytest.raises(at.StorageError, match="'other' .* is a search study, not a distill"):
        study.distill(student, toy_images(48, classes=3, size=16), n_trials=1, name="other",
                      progress=False)
    result = study.distill(student, toy_images(48, classes=3, size=16), n_trials=1,
                           name="small", progress=False)
    assert result.study.optuna.study_name == "small"
    with pytest.raises(at.StorageError, match="'small' .* is a distill study of study 'toy'"):
        _search(toy_images(48, classes=3, size=16), own, name="small")
    assert len(at.Study.load(own, "small").trials()) == 1


@pytest.mark.parametrize("change, match", [
    (dict(data=toy_images(48, classes=4, size=16)), r"classes \[0, 1, 2\] \(3\), not \[0, 1, 2, 3\] \(4\)"),
    (dict(space=at.SearchSpace(epochs=1, image_size=24)), "space image_size=16, not 24"),
    (dict(data=toy_images(48, classes=3, size=16, seed=5)), "other training data"),
    (dict(seed=1), "another validation set"),
    (dict(backbones=["tiny_resnet"]), "backbones=\\['tiny_cnn'\\], not \\['tiny_resnet'\\]"),
])
def test_a_resume_with_other_data_or_settings_is_refused(own, change, match):
    before = _sha(own)
    kw = {"data": toy_images(48, classes=3, size=16), **change}
    with pytest.raises(at.ConfigError, match=match + ".*pass name= a new name"):
        _search(kw.pop("data"), own, n_trials=4, **kw)
    assert _sha(own) == before


def test_the_same_call_resumes_and_each_call_samples_apart(own):
    study = _search(toy_images(48, classes=3, size=16), own, n_trials=4,
                    sampler="random")
    assert len(study.trials()) == 4
    attrs = study.system_attrs()
    assert attrs[st.LAUNCHES] == 2  # the fixture's call, then this one
    first, second = ([t.params for t in study.trials()][i:i + 2] for i in (0, 2))
    assert first != second  # a resume does not replay the sampler's first draws


def test_a_refit_with_classes_the_study_does_not_have_is_refused(own):
    study = at.Study.load(own)
    before = _sha(own)
    with pytest.raises(at.DataError, match=r"new \[3\], missing \[\].*classes \[0, 1, 2\]"):
        study.refit(toy_images(48, classes=4, size=16))
    with pytest.raises(at.ConfigError, match="epochs"):
        study.refit(toy_images(48, classes=3, size=16), epochs=10**9)
    with pytest.raises(at.ConfigError, match="unlabeled= was given, but trial"):
        study.refit(toy_images(48, classes=3, size=16),
                    unlabeled=toy_images(8, classes=2, size=16).inputs)
    with pytest.raises(at.ConfigError, match="record must be True or False.*'no'"):
        study.evaluate(toy_images(12, classes=3, size=16), record="no")
    assert _sha(own) == before
    assert len(study.evaluate(toy_images(12, classes=3, size=16))) == 2
