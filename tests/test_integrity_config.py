"""Study files, bounds and warm-start sources: a bad one is refused before anything is
written, with a message naming the value; a name never moves a study out of its folder."""

import hashlib
import inspect
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import first_party_host

import autotransfer as at
from autotransfer import plugins
from autotransfer import storage as st
from autotransfer.cli import main
from autotransfer.config import NOT_TOP_LEVEL, SEARCH_KEYS, load_study_file
from autotransfer.strategy.strategy import MAX_BATCH_SIZE, MAX_EPOCHS, check_field
from autotransfer.testing import toy_images

STUDY = """\
plugins = ["autotransfer.testing"]
name = "t"
backbones = ["tiny_cnn"]
n_trials = 1

[data]
demo = "digits"
image_size = 16
per_class = 4
valid_per_class = 4

[space]
epochs = 1
image_size = 16
"""
SPACE = at.SearchSpace(epochs=1, image_size=16)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def refused(capsys, argv: list[str], *tokens: str, code: int = 2) -> str:
    """The CLI refuses with ``error:``, the exit code and every token in the message."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err, err
    for token in tokens:
        assert token in err, (token, err)
    return err


# ------------------------------------------------------------------ names never escape
@pytest.mark.parametrize("name", ["../../escaped", "/abs/path", "a/b", ".."])
def test_a_study_files_name_never_moves_its_storage_out_of_the_files_folder(tmp_path, name):
    folder = tmp_path / "here"
    folder.mkdir()
    (folder / "s.toml").write_text(STUDY.replace('name = "t"', f"name = {json.dumps(name)}"))
    kwargs, _, _ = load_study_file(folder / "s.toml")
    storage = Path(kwargs["storage"])
    assert kwargs["name"] == name  # the study keeps its name; only the file name is made safe
    assert storage.parent == folder and storage.suffix == ".db"


def test_a_run_with_an_escaping_name_writes_only_inside_the_study_files_folder(tmp_path,
                                                                               capsys):
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "s.toml").write_text(STUDY.replace('name = "t"', 'name = "../../escaped"'))
    assert main(["run", str(folder / "s.toml"), "--no-progress"]) == 0
    assert "study '../../escaped'" in capsys.readouterr().out
    outside = tree(tmp_path) - {"a", "a/b"} - {f"a/b/{p}" for p in tree(folder)}
    assert outside == set()
    (db,) = folder.glob("*.db")
    assert at.Study.load(db, name="../../escaped").leaderboard()["state"].iloc[0] == "complete"


# ------------------------------------------------------------------ bounds
def test_space_and_strategy_refuse_integers_beyond_their_bounds_naming_value_and_bound():
    with pytest.raises(at.ConfigError, match=r"epochs=1000000000.*>= 1 \(at most 1000\)"):
        at.SearchSpace(epochs=10**9)
    with pytest.raises(at.ConfigError, match=r">= 1 \(at most 65536\), but got batch_size=1000000000"):
        at.SearchSpace(batch_size=(16, 10**9))
    for field, value in (("epochs", 10**9), ("batch_size", 10**9), ("max_length", 10**7),
                         ("frozen_groups", 10**9), ("lora_rank", 10**4)):
        with pytest.raises(at.StrategyError, match=f"{field}={value}"):
            at.Strategy("tiny_cnn", **{field: value})
    s = at.Strategy("tiny_cnn", epochs=np.int64(MAX_EPOCHS), batch_size=MAX_BATCH_SIZE)
    assert (s.epochs, s.batch_size) == (MAX_EPOCHS, MAX_BATCH_SIZE)
    with pytest.raises(at.StrategyError, match="pretrained must be True or False"):
        at.Strategy("tiny_cnn", pretrained="no")


def test_check_field_checks_one_strategy_field_as_the_strategy_would():
    assert check_field("epochs", np.int64(7)) == 7 and type(check_field("epochs", 7)) is int
    with pytest.raises(at.StrategyError, match=r"epochs must be an integer >= 1 \(at most 1000\), "
                                               r"but got epochs=1000000000"):
        check_field("epochs", 10**9)
    with pytest.raises(at.StrategyError, match="'fast'"):
        check_field("lr", "fast")


def test_space_refuses_a_choice_list_too_long_to_store_and_a_range_of_strings():
    with pytest.raises(at.ConfigError, match="5000 choices; give 1 to 1000"):
        at.SearchSpace(dropout=[0.1] * 5000)
    with pytest.raises(at.ConfigError, match=r"\('a', 1\).*tuple of numbers"):
        at.SearchSpace(lr=("a", 1))
    with pytest.raises(at.ConfigError, match="frozen_groups=None"):
        at.SearchSpace(frozen_groups=[None, 2])


# ------------------------------------------------------------------ study files
def test_search_keys_follow_search_so_a_study_file_can_set_rank_and_feature_cache(tmp_path):
    params = inspect.signature(at.search).parameters
    assert set(SEARCH_KEYS) == {p for p, v in params.items()
                                if v.kind is v.KEYWORD_ONLY and p not in NOT_TOP_LEVEL}
    (tmp_path / "s.toml").write_text(STUDY.replace("n_trials = 1",
                                                   "n_trials = 1\nrank = false\n"
                                                   "feature_cache = 1000000"))
    kwargs, _, _ = load_study_file(tmp_path / "s.toml")
    assert kwargs["rank"] is False and kwargs["feature_cache"] == 1_000_000


def test_a_binary_or_oversized_or_deeply_nested_study_file_is_refused(tmp_path, capsys):
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"name = \"x\"\n\xff\xfe\x00garbage")
    refused(capsys, ["run", str(binary)], "bin.toml", "0xff", "not UTF-8")
    big = tmp_path / "big.toml"
    big.write_text(STUDY + "# " + "x" * (1 << 20) + "\n")
    refused(capsys, ["run", str(big)], "big.toml", "at most 1048576 bytes")
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    refused(capsys, ["run", str(deep)], "deep.toml", "too deeply")


def test_a_nul_in_a_study_files_name_storage_or_paths_is_refused(tmp_path, capsys):
    for key, line in (("name", 'name = "a\\u0000b"'), ("storage", 'storage = "a\\u0000b.db"'),
                      ("warm_start", 'warm_start = "x\\u0000y"')):
        (tmp_path / "s.toml").write_text(STUDY.replace('name = "t"', line))
        refused(capsys, ["run", str(tmp_path / "s.toml")], f"{key}=", "\\x00")
    assert tree(tmp_path) == {"s.toml"}


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_study_file_or_csv_that_is_a_device_or_fifo_is_refused_without_reading(tmp_path):
    """Run in a child process: reading /dev/zero or opening a FIFO would never end."""
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.csv")
    csv = STUDY.replace('demo = "digits"\nimage_size = 16\nper_class = 4\nvalid_per_class = 4',
                        'csv = "{}"\nimage = "path"\nlabel = "y"')
    (tmp_path / "z.toml").write_text(csv.format("zero.csv"))
    (tmp_path / "f.toml").write_text(csv.format("fifo.csv"))
    (tmp_path / "v.toml").write_text(csv.format("zero.toml").replace(
        'label = "y"', 'label = "y"\nvalid_csv = "fifo.csv"'))
    studies = {"zero.toml": "is not a regular file",
               "z.toml": "zero.csv' is not a regular file",
               "f.toml": "fifo.csv' is not a regular file",
               "v.toml": "zero.toml' is not a regular file"}
    script = ("import contextlib, io, json, sys\n"
              "from autotransfer.cli import main\n"
              "out = {}\n"
              "for study in sys.argv[1:]:\n"
              "    err = io.StringIO()\n"
              "    with contextlib.redirect_stderr(err):\n"
              "        out[study] = [main(['run', study]), err.getvalue()]\n"
              "print(json.dumps(out))\n")
    env = {**os.environ, "AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-c", script, *studies], cwd=tmp_path, env=env,
                          capture_output=True, text=True,
                          timeout=300)  # a safety net: a correct run takes seconds
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    for study, token in studies.items():
        code, err = got[study]
        assert code == 2 and err.startswith("error:") and token in err, (study, err)


def test_a_data_key_of_the_wrong_type_is_refused_naming_it(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(STUDY.replace('demo = "digits"', "demo = 5"))
    refused(capsys, ["run", str(tmp_path / "s.toml")], "demo=5", "must be a string")
    (tmp_path / "s.toml").write_text(STUDY.replace("[data]", "data = 5\n[other]"))
    refused(capsys, ["run", str(tmp_path / "s.toml")], "other")


def test_a_study_files_warm_start_folder_is_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "earlier").mkdir()
    (tmp_path / "s.toml").write_text(STUDY.replace("n_trials = 1",
                                                   'n_trials = 1\nwarm_start = "earlier"'))
    monkeypatch.chdir(tmp_path.parent)
    kwargs, _, _ = load_study_file(tmp_path / "s.toml")
    assert kwargs["warm_start"] == str(tmp_path / "earlier")


# ------------------------------------------------------------------ crafted prior studies
@pytest.fixture(scope="module")
def prior_db(tmp_path_factory) -> Path:
    """A finished tiny study with a recorded profile (a warm-start source)."""
    folder = tmp_path_factory.mktemp("prior")
    with plugins.use(first_party_host()):
        at.search(toy_images(40, classes=2, size=16), backbones=["tiny_cnn"], n_trials=1,
                  storage=folder / "a.db", name="a", space=SPACE, progress=False,
                  baselines=False)
    return folder / "a.db"


def _negative_n(p):
    p["n"] = -5
    return p


def _lr_fast(p):
    for best in p["best"].values():
        best["strategy"]["lr"] = "fast"
    return p


def _unknown_field(p):
    for best in p["best"].values():
        best["strategy"]["turbo"] = True
    return p


def craft(source: Path, target: Path, change) -> None:
    """A copy of the prior study whose recorded profile ``change`` rewrote."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    with sqlite3.connect(target) as con:
        (value,) = con.execute("SELECT value_json FROM study_system_attributes WHERE key=?",
                               (st.PROFILE,)).fetchone()
        new = change(json.loads(value))
        con.execute("UPDATE study_system_attributes SET value_json=? WHERE key=?",
                    (new if isinstance(new, str) else json.dumps(new), st.PROFILE))


@pytest.mark.parametrize("change, token", [
    (_negative_n, "n=-5"), (lambda p: "{not json", "JSON cannot be read"),
    (_lr_fast, "lr='fast'"), (_unknown_field, "['turbo']")])
def test_a_crafted_prior_study_is_refused_before_the_new_study_exists(tmp_path, prior_db,
                                                                      change, token):
    craft(prior_db, tmp_path / "earlier" / "x.db", change)
    before = sha(tmp_path / "earlier" / "x.db")
    with pytest.raises(at.ConfigError) as info:
        at.search(toy_images(40, classes=2, size=16), backbones=["tiny_cnn"], n_trials=1,
                  storage=tmp_path / "new.db", name="new", space=SPACE, progress=False,
                  warm_start=tmp_path / "earlier", root=tmp_path)
    msg = str(info.value)
    assert token in msg and "x.db" in msg and "warm_start=True" in msg
    assert tree(tmp_path) == {"earlier", "earlier/x.db"}  # no new study, no lock, no folder
    assert sha(tmp_path / "earlier" / "x.db") == before


def test_a_crafted_study_in_the_own_storage_is_skipped_by_a_prior_warm_start(tmp_path,
                                                                           prior_db, capsys):
    db = tmp_path / "s.db"
    craft(prior_db, db, _lr_fast)
    study = at.search(toy_images(40, classes=2, size=16), backbones=["tiny_cnn"], n_trials=1,
                      storage=db, name="new", space=SPACE, progress=False, baselines=False,
                      warm_start="prior")
    assert "skipped study 'a'" in capsys.readouterr().err
    assert study.leaderboard()["state"].iloc[0] == "complete"
