"""warm_start="prior": a new study begins from the best strategies of the closest earlier ones."""

import hashlib
import math
import sqlite3

import pytest

import autotransfer as at
from autotransfer import storage as st
from autotransfer.study.prior import distance
from autotransfer.testing import toy_images

SPACE = at.SearchSpace(epochs=2, image_size=16)


def _search(data, storage, name, **kw):
    args = dict(backbones=["tiny_cnn"], n_trials=5, storage=storage, name=name, space=SPACE,
                progress=False, pruner="none")
    return at.search(data, **{**args, **kw})


def _best_searched(study):
    lb = study.leaderboard()
    done = lb[(lb["state"] == "complete") & (lb["baseline"] != "scratch")]
    return done.iloc[0]


def test_a_finished_search_records_its_data_and_best_strategy_per_backbone(tmp_path):
    study = _search(toy_images(120, classes=3, size=16), tmp_path / "s.db", "first")
    profile = study.system_attrs()[st.PROFILE]
    assert {k: profile[k] for k in ("modality", "task", "n", "classes", "image_size")} == {
        "modality": "image", "task": "classification", "n": 96, "classes": 3,
        "image_size": 16}
    best = profile["best"]["tiny_cnn"]
    top = _best_searched(study)
    assert best["value"] == top["accuracy"] and best["trial"] == top["trial"]
    assert best["strategy"]["frozen_groups"] == top["frozen_groups"]
    assert best["strategy"]["lr"] == top["lr"]


def test_a_prior_warm_start_begins_with_the_nearest_studys_best(tmp_path):
    db = tmp_path / "s.db"
    near = _search(toy_images(120, classes=3, size=16), db, "near", baselines=False)
    far = _search(toy_images(240, classes=4, size=32, seed=1), db, "far", seed=1,
                  baselines=False)
    new = _search(toy_images(100, classes=3, size=16, seed=2), db, "new", warm_start="prior",
                  n_trials=3, baselines=False)
    lb = new.leaderboard().set_index("trial")
    for trial, source in ((0, near), (1, far)):  # nearest first
        best = _best_searched(source)
        assert lb.loc[trial, "prior"] == f"{source.name} #{best['trial']}"
        for field in ("frozen_groups", "lr", "layer_decay", "augment", "optimizer"):
            assert lb.loc[trial, field] == best[field], field
    started = new.system_attrs()[st.PRIOR]
    assert [p["study"] for p in started] == ["near", "far"]
    assert started[0]["distance"] < started[1]["distance"]


def test_a_prior_folder_is_read_without_being_written(tmp_path):
    folder = tmp_path / "earlier"
    folder.mkdir()
    source = _search(toy_images(120, classes=3, size=16), folder / "a.db", "digits-a",
                     baselines=False)
    with sqlite3.connect(folder / "notes.db") as con:  # another program's database
        con.execute("CREATE TABLE notes (text TEXT)")
    (folder / "readme.log").write_text("not a journal\n")
    (folder / "x.txt").write_text("ignored")
    before = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*")
              if p.is_file()}
    new = _search(toy_images(90, classes=3, size=16, seed=3), tmp_path / "new.db", "new",
                  warm_start=folder, n_trials=2, baselines=False)
    after = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*")
             if p.is_file()}
    assert before == after
    assert new.system_attrs()[st.PRIOR][0]["study"] == "digits-a"
    assert new.leaderboard().set_index("trial").loc[0, "prior"] == (
        f"digits-a #{_best_searched(source)['trial']}")


def test_without_a_matching_prior_the_portfolio_starts_the_study(tmp_path, capsys):
    lb = _search(toy_images(120, classes=3, size=16), tmp_path / "s.db", "alone",
                 warm_start="prior", n_trials=12).leaderboard().set_index("trial")
    assert "no prior study" in capsys.readouterr().err
    assert lb.loc[[1, 2, 3], "frozen_groups"].tolist() == [5, 3, 2]  # the portfolio
    assert (lb["prior"] == "").all()


def test_profiles_compare_like_for_like():
    image = {"modality": "image", "task": "classification", "n": 100, "classes": 10,
             "image_size": 32}
    assert distance(image, image) == 0
    assert distance(image, {**image, "n": 1000}) == pytest.approx(math.log(10))
    assert distance(image, {**image, "modality": "text"}) == math.inf
    assert distance(image, {**image, "task": "regression"}) == math.inf


@pytest.mark.parametrize("value, message", [
    ("priors", r"warm_start='priors' does not exist \(close match: 'prior'\); accepted: True"),
    (3, "warm_start must be True or 'portfolio'.*but got warm_start=3"),
    ("x.txt", "warm_start='x.txt' is not a folder or a .db/.log file"),
])
def test_a_bad_warm_start_is_refused_before_any_storage(tmp_path, monkeypatch, value, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(at.ConfigError, match=message):
        _search(toy_images(30), tmp_path / "s.db", "bad", warm_start=value)
    assert not (tmp_path / "s.db").exists()
