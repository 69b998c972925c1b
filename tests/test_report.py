"""write_report(): an offline HTML page of a study, checked in a real headless browser.

The browser checks read the DOM Chromium built after running the page's scripts: every
Plotly figure must have drawn an SVG with at least one trace holding marks, and the page
must log nothing to the console (an uncaught exception is logged there). Two pages that
are broken on purpose prove that these checks can fail.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import os
import re
import shlex
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import pytest
import torch

import autotransfer as at
from autotransfer import plugins
from autotransfer import storage as st
from autotransfer.report import plots as figures
from autotransfer.report.page import write_report
from autotransfer.report.plots import Facts, learning_curves
from autotransfer.study import summary
from autotransfer.testing import toy_images

# The toy study searches 3 trials beside its 6 baselines: too few for importances.
FIGURES = {"fig-best-clock", "fig-best-trial", "fig-freezing", "fig-curves"}

# ---------------------------------------------------------------- the browser harness


def _chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        pytest.skip("Debian's chromium is not installed: apt-get install -y chromium")
    return found


def _chromium_run(page: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    """Open ``page`` headless and offline; let its scripts run for 10 s of virtual time."""
    profile = work / f"profile-{len(list(work.glob('profile-*')))}"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000",
           "--window-size=1400,900", "--enable-logging=stderr", "--v=0", *args,
           page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def console_messages(stderr: str) -> list[str]:
    """What the page logged: Chromium writes every console message and every uncaught
    exception to stderr as ``...:CONSOLE:<line>] "<text>"``. A report logs nothing."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


class PlotCensus(HTMLParser):
    """For each Plotly figure div in a DOM: its SVG canvases, trace groups and marks."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr", "param"}

    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, Counter] = {}
        self._stack: list[str | None] = []  # the figure each open element is inside

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        inside = self._stack[-1] if self._stack else None
        if "plotly-graph-div" in classes:
            inside = a.get("id")
            self.plots[inside] = Counter()
        if inside is not None:
            count = self.plots[inside]
            count["svg"] += "main-svg" in classes
            count["traces"] += bool({"trace", "hm"} & classes)
            # scatter points and lines, bars, a heatmap's image
            count["marks"] += bool({"point", "js-line"} & classes) or tag == "image"
        if tag not in self.VOID:
            self._stack.append(inside)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self._stack:
            self._stack.pop()


def render(page: Path, work: Path) -> tuple[dict[str, Counter], list[str], str]:
    """The page's figures as drawn, its console messages, and the DOM."""
    done = _chromium_run(page, work, "--dump-dom")
    census = PlotCensus()
    census.feed(done.stdout)
    return census.plots, console_messages(done.stderr), done.stdout


def problems(page: Path, work: Path) -> list[str]:
    """Everything wrong with a page in the browser: console output, undrawn figures."""
    plots, console, _ = render(page, work)
    found = [f"console: {line}" for line in console]
    for plot, count in plots.items():
        if not (count["svg"] and count["traces"] and count["marks"]):
            found.append(f"figure {plot} drew nothing: {dict(count)}")
    return found


def screenshot(page: Path, work: Path, png: Path) -> Path:
    _chromium_run(page, work, f"--screenshot={png}")
    return png


# ---------------------------------------------------------------- studies to report


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A real search, a few seconds: two tiny backbones, their baselines, 3 searched."""
    host = plugins.PluginHost(autoload=False)
    for name in ("autotransfer_plugins.heads", "autotransfer_plugins.techniques",
                 "autotransfer.testing"):
        host.register(name)
    folder = tmp_path_factory.mktemp("study")
    with plugins.use(host):
        return at.search(toy_images(90, classes=3, size=16), backbones=["tiny_*"],
                         n_trials=9, storage=folder / "s.db", name="toy", progress=False,
                         space=at.SearchSpace(epochs=3, image_size=16))


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    return write_report(study, tmp_path_factory.mktemp("report") / "report.html")


class WithTestScores:
    """A study whose leaderboard also has test scores for the top 3 and a refit row,
    as a search that scores a test set will store them."""

    def __init__(self, study):
        self._study = study

    def __getattr__(self, name):
        return getattr(self._study, name)

    def leaderboard(self):
        lb = self._study.leaderboard()
        lb["test_accuracy"] = np.nan
        lb.loc[:2, "test_accuracy"] = [0.55, 0.05, 0.5]
        refit = pd.DataFrame([{"rank": len(lb) + 1, "trial": 10, "state": "refit",
                               "baseline": "", "backbone": lb.loc[0, "backbone"],
                               "test_accuracy": 0.6}])
        return pd.concat([lb, refit], ignore_index=True)


def _raw_study(path: Path, trials: list[dict]) -> at.Study:
    """A stored study built with Optuna directly, for states a tiny search cannot reach."""
    raw = optuna.create_study(storage=f"sqlite:///{path}", study_name="raw",
                              direction="maximize")
    for kw in trials:
        raw.add_trial(optuna.trial.create_trial(**kw))
    return at.Study.load(path)


# ---------------------------------------------------------------- the report


def test_the_report_renders_every_figure_without_errors(report, tmp_path):
    plots, console, dom = render(report, tmp_path)
    assert console == []
    assert set(plots) == FIGURES
    for plot, count in plots.items():
        assert count["svg"] >= 1 and count["traces"] >= 1 and count["marks"] >= 1, plot
    assert 'id="leaderboard"' in dom

    png = screenshot(report, tmp_path, tmp_path / "report.png")
    assert png.stat().st_size > 20_000
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1400, 900)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20)) > 50  # not a blank page


def test_the_page_is_offline_with_plotly_inlined_once_compressed(report):
    """plotly.js is in the page once, gzipped: unpacked it is exactly plotly's own file.
    The page was 4.9 MB with plotly.js inlined as text (4.8 MB of it); now it is 2.0 MB."""
    page = report.read_text(encoding="utf-8")
    packed = re.findall(r'<script type="application/octet-stream" id="plotly-js-gz">'
                        r"([A-Za-z0-9+/=]+)</script>", page)
    assert len(packed) == 1
    library = plotly.offline.get_plotlyjs()
    assert gzip.decompress(base64.b64decode(packed[0])).decode("utf-8") == library
    assert library[:2000] not in page  # not inlined as text as well
    ours = page.replace(packed[0], "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours)
    assert len(re.findall(r'<script type="application/json" class="plotly-figure"', ours)) \
        == len(FIGURES)
    assert ours.count('"template"') == 0  # the shared template is stored once, by itself
    assert len(page.encode()) < len(library) / 2  # the old page was larger than plotly.js
    assert len(ours.encode()) < 120_000  # the figures and the tables


def test_the_leaderboard_table_lists_every_trial_best_first(study, report):
    page = report.read_text(encoding="utf-8")
    lb = study.leaderboard()
    table = page[page.index('id="leaderboard"'):page.index("</table>")]
    rows = re.findall(r"<tr class=\"([^\"]*)\">(.*?)</tr>", table)
    assert len(rows) == len(lb)
    trials = [int(re.findall(r'data-v="([^"]*)"', cells)[1]) for _, cells in rows]
    assert trials == lb["trial"].tolist()
    assert "best" in rows[0][0]
    negative = [("negative" in cls) for cls, _ in rows]
    assert negative == lb["negative_transfer"].tolist()


def test_learning_curves_show_top_trials_and_baselines_flagging_negative_transfer(study):
    lb = study.leaderboard()
    facts = Facts(lb=lb, trials={t.number: t for t in study.trials()}, metric="accuracy",
                  maximize=True)
    fig = learning_curves(facts)
    shown = {tr.meta["trial"]: tr for tr in fig.data}
    baselines = set(lb.loc[lb["baseline"] != "", "trial"])
    searched = lb[(lb["baseline"] == "") & (lb["state"] == "complete")]["trial"].head(5)
    assert set(shown) == baselines | set(searched)
    flagged = set(lb.loc[lb["negative_transfer"], "trial"])
    assert flagged, "the toy study is expected to have negative transfer to flag"
    for number, trace in shown.items():
        assert (trace.line.dash == "dash") == (number in flagged), number
        assert ("negative transfer" in trace.name) == (number in flagged), number
        history = study.optuna.trials[number].system_attrs[st.HISTORY]
        assert list(trace.y) == [h["accuracy"] for h in history]


def test_test_scores_get_columns_and_a_figure_and_the_table_sorts(study, tmp_path):
    path = write_report(WithTestScores(study), tmp_path / "with_test.html")
    page = path.read_text(encoding="utf-8")
    assert '<th class="test" title="click to sort">test_accuracy</th>' in page
    assert "refit" in page

    # Click headers in the browser and read back the order of the rows.
    probe = """<script>window.addEventListener("load", () => {
      const heads = () => Array.from(document.querySelectorAll("#leaderboard th"));
      const col = n => { const i = heads().findIndex(h => h.textContent === n);
        return Array.from(document.querySelectorAll("#leaderboard tbody tr"))
          .map(r => r.cells[i].dataset.v); };
      const click = n => heads().find(h => h.textContent === n).click();
      const out = {};
      click("trial"); out.trial = col("trial");
      click("test_accuracy"); out.up = col("test_accuracy");
      click("test_accuracy"); out.down = col("test_accuracy");
      document.body.setAttribute("data-probe", JSON.stringify(out));
    });</script></body>"""
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe), encoding="utf-8")
    plots, console, dom = render(probed, tmp_path)
    assert console == []
    assert set(plots) == FIGURES | {"fig-test"}
    assert all(c["svg"] and c["traces"] and c["marks"] for c in plots.values()), plots
    out = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom).group(1)))
    assert [int(v) for v in out["trial"]] == sorted(range(9)) + [10]  # numbers, not text
    assert out["up"][:4] == ["0.05", "0.5", "0.55", "0.6"] and set(out["up"][4:]) == {""}
    assert out["down"][:4] == ["0.6", "0.55", "0.5", "0.05"]  # blanks stay last


def test_a_study_with_no_completed_trial_still_gets_a_page(tmp_path):
    failed = optuna.trial.TrialState.FAIL
    study = _raw_study(tmp_path / "failed.db", [
        dict(state=failed, user_attrs={"fail_reason": "nan loss"}), dict(state=failed)])
    path = write_report(study, tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    assert "has completed with a validation score yet" in page
    assert "nan loss" in page and page.count('<tr class="state-failed">') == 2
    assert "plotly-graph-div" not in page and "plotly-js-gz" not in page  # no figure: no plotly
    assert len(page.encode()) < 30_000
    plots, console, _ = render(path, tmp_path)
    assert console == [] and plots == {}

    empty = _raw_study(tmp_path / "empty.db", [])
    assert "The study has no trials yet." in write_report(
        empty, tmp_path / "empty.html").read_text(encoding="utf-8")


def test_a_one_trial_study_explains_the_figures_it_cannot_draw(tmp_path):
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    study = _raw_study(tmp_path / "one.db", [dict(
        value=0.4, params={"lr": 1e-3}, distributions=dist, intermediate_values={1: 0.2, 2: 0.4})])
    path = write_report(study, tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    assert ("Parameter importances are not shown: they need at least 10 searched trials "
            "that completed, and this study has 1 (of 1 completed;") in page
    assert "No finished trial records how many layer groups it froze." in page
    assert problems(path, tmp_path) == []


def test_ties_with_the_best_go_to_the_lower_validation_loss_and_are_flagged(tmp_path):
    """Where trials record a validation loss (``val_loss``: a head may; the runner does
    not yet, so this study is written with Optuna directly) it decides ties before the
    seconds do; a score that differs by float noise only is a tie."""
    study = _raw_study(tmp_path / "ties.db", [
        dict(value=0.76, user_attrs={"duration_s": 1.0, "val_loss": 0.6}),
        dict(value=0.76, user_attrs={"duration_s": 9.0, "val_loss": 0.4}),
        dict(value=0.76 + 1e-12, user_attrs={"duration_s": 0.5}),
        dict(value=0.72, user_attrs={"duration_s": 0.1, "val_loss": 0.1})])
    study.set_system_attr(st.META, {"metric": "accuracy", "n_valid": 25})
    lb = study.leaderboard()
    assert lb["trial"].tolist() == [1, 0, 2, 3]
    assert lb["tied"].tolist() == [True, True, True, False]
    assert study.best_trial.number == 1
    assert lb.attrs["n_valid"] == 25 and lb.attrs["resolution"] == pytest.approx(0.04)
    page = write_report(study, tmp_path / "ties.html").read_text(encoding="utf-8")
    assert ("Validation: 25 examples, so one example = 0.04 accuracy. Trials 1, 0, 2 tie "
            "with the best (accuracy 0.76); ties on the validation score go to the lower "
            "validation loss") in page
    table = page[page.index('id="leaderboard"'):page.index("</table>")]
    rows = re.findall(r'<tr class="([^"]*)">', table)
    assert ["tied" in c.split() for c in rows] == [True, True, True, False]


# ---------------------------------------------------------------- what the page leads on to


def _pre(page: str, pre_id: str) -> str:
    """The text of ``<pre id=...>`` as a reader copies it."""
    return html.unescape(re.search(rf'<pre class="copy" id="{pre_id}">(.*?)</pre>', page,
                                   re.S).group(1))


def _save_png(image: torch.Tensor, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


def test_use_this_model_leads_with_the_commands_the_cli_prints_and_they_run(
        study, report, tmp_path, capsys, monkeypatch):
    from autotransfer.cli import main

    page = report.read_text(encoding="utf-8")
    assert page.index('<section id="use">') < page.index('<section id="leaderboard">')
    model = study.model_path()
    assert f"is the file <code>{html.escape(str(model))}</code>" in page
    storage = str(study.spec.path)  # under the temporary folder, not the working one
    cli = _pre(page, "use-cli").splitlines()
    loads = f"{storage} --plugin autotransfer.testing"  # tiny_cnn's: no entry point has it
    assert cli == [f"autotransfer best {storage}", f"autotransfer predict {loads} IMAGES...",
                   f"autotransfer evaluate {loads} LABELLED_FOLDER",
                   f"autotransfer export {loads} --format onnx"]
    said = summary.use_lines(study)  # what `autotransfer run` ends with: the same lines
    assert said[0] == f"best model: {model}" and [x.strip() for x in said[1:-1]] == cli
    assert "Paths are relative to" not in page  # every path is absolute here

    # The commands run as written: `best` prints the file, `predict` predicts with it.
    assert main(shlex.split(cli[0])[1:]) == 0
    assert capsys.readouterr().out.strip() == str(model)
    image = _save_png(toy_images(1, classes=3, size=16, seed=4).inputs[0], tmp_path / "x.png")
    assert main(shlex.split(cli[1].replace("IMAGES...", str(image)))[1:]) == 0
    assert str(image) in capsys.readouterr().out
    # So does the Python block, with a real image for 'photo.jpg'.
    python = _pre(page, "use-python")
    assert "at.register_plugin('autotransfer.testing')" in python
    assert f"model = at.Study.load({storage!r}, name='toy').load_best()" in python
    assert f"at.Study.load({storage!r}, name='toy').load_best()" in said[-1]
    monkeypatch.chdir(tmp_path)  # model.onnx is written here
    scope: dict = {}
    exec(python.replace("photo.jpg", str(image)), scope)
    assert scope["model"].strategy == at.load(model).strategy
    assert (tmp_path / "model.onnx").is_file()

    # Written from the study's folder, the paths are relative to it and the page says so.
    monkeypatch.chdir(study.spec.path.parent)
    here = write_report(study, tmp_path / "here.html").read_text(encoding="utf-8")
    assert _pre(here, "use-cli").splitlines()[0] == "autotransfer best s.db"
    assert (f"Paths are relative to <code>{html.escape(str(study.spec.path.parent))}</code>"
            in here)


def test_the_ranking_section_lists_the_backbones_best_first(study, report):
    page = report.read_text(encoding="utf-8")
    ranked = study.ranking()
    assert len(ranked) == 2  # two tiny backbones, ranked before the search
    table = page[page.index('id="ranking"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<tr class="[^"]*">(.*?)</tr>', table)
    shown = [re.findall(r'data-v="([^"]*)"', r)[1] for r in rows]  # rank, then backbone
    assert shown == ranked["backbone"].tolist()
    assert "held-out accuracy of a cross-validated linear probe" in page
    assert page.index('id="leaderboard"') < page.index('id="ranking"') < page.index(
        'id="progress"')


EVIL = 'x</script><script>console.log("injected")</script>&\'"'


def test_what_users_and_plugins_supplied_is_escaped_everywhere(study, tmp_path):
    """A study name, a backbone name, a ranking's reason and a model's folder holding
    HTML, quotes and ``</script>`` are shown as text: nothing runs, every figure draws,
    and the commands shown still name them exactly."""
    folder = tmp_path / 'm<b>&"\''
    folder.mkdir()
    model = folder / "best.safetensors"
    shutil.copy(study.model_path(), model)
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    path = tmp_path / "evil.db"
    raw = optuna.create_study(storage=f"sqlite:///{path}", study_name=EVIL,
                              direction="maximize")
    optuna.create_study(storage=f"sqlite:///{path}", study_name="other")  # --name needed
    for i, value in enumerate([0.5, 0.7, 0.6]):
        raw.add_trial(optuna.trial.create_trial(
            value=value, params={"lr": 10 ** -(i + 2)}, distributions=dist,
            intermediate_values={1: value / 2, 2: value},
            user_attrs={"backbone": EVIL, "baseline": "", "duration_s": 1.0 + i},
            system_attrs={st.CHECKPOINT: str(model)}))
    evil = at.Study.load(path, EVIL)
    evil.set_system_attr(st.META, {"metric": "accuracy"})
    common = {"score_se": 0.01, "logme": 1.0, "seconds": 1.0, "feature_dim": 8, "n": 10}
    evil.set_system_attr(st.RANKING, {
        "flat": {**common, "score": 0.9, "degenerate": True, "reason": EVIL, "rank": 2},
        EVIL: {**common, "score": 0.6, "degenerate": False, "reason": "", "rank": 1}})
    page_path = write_report(evil, tmp_path / "evil.html")
    page = page_path.read_text(encoding="utf-8")
    assert '<script>console.log("injected")' not in page
    assert page.count(html.escape(EVIL)) >= 4  # title, best line, leaderboard, ranking
    cli = _pre(page, "use-cli").splitlines()
    assert shlex.split(cli[0]) == ["autotransfer", "best", str(path), "--name", EVIL]
    assert f"at.Study.load({str(path)!r}, name={EVIL!r}).load_best()" in _pre(page,
                                                                             "use-python")
    assert html.escape(str(model)) in page
    ranking = page[page.index('id="ranking"'):]
    rows = re.findall(r'<tr class="([^"]*)"><td data-v="(\d)"', ranking[:ranking.index(
        "</table>")])
    assert rows == [("", "1"), ("degenerate", "2")]  # the degenerate backbone last, greyed
    plots, console, _ = render(page_path, tmp_path)
    assert console == []
    assert {"fig-best-clock", "fig-best-trial", "fig-curves"} <= set(plots)
    assert all(c["svg"] and c["traces"] and c["marks"] for c in plots.values()), plots


def _searched_study(path: Path, searched: int) -> at.Study:
    """A stored study: three baselines and ``searched`` searched trials, two parameters."""
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
            "dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    rng = np.random.default_rng(0)
    trials = [dict(value=0.2, params={"lr": 1e-3, "dropout": 0.0}, distributions=dist,
                   user_attrs={"baseline": kind, "backbone": "b"})
              for kind in ("scratch", "linear_probe", "default_finetune")]
    for _ in range(searched):
        lr, dropout = 10 ** rng.uniform(-4, -1), rng.uniform(0, 0.5)
        trials.append(dict(value=float(0.9 - abs(np.log10(lr) + 2.5) / 5 + dropout / 50),
                           params={"lr": lr, "dropout": dropout}, distributions=dist,
                           user_attrs={"baseline": "", "backbone": "b"},
                           intermediate_values={1: 0.1}))
    study = _raw_study(path, trials)
    study.set_system_attr(st.META, {"metric": "accuracy"})
    return study


def test_importances_need_ten_searched_trials_and_leave_the_baselines_out(tmp_path):
    assert figures.MIN_SEARCHED == 10
    few = _searched_study(tmp_path / "few.db", 9)
    facts = Facts(lb=few.leaderboard(), trials={t.number: t for t in few.trials()},
                  metric="accuracy", maximize=True)
    said = figures.importances(few.optuna, facts)
    assert isinstance(said, str) and "need at least 10 searched trials that completed, and " \
        "this study has 9 (of 12 completed; baselines are fixed reference strategies" in said

    enough = _searched_study(tmp_path / "enough.db", 10)
    assert [t.number for t in figures.searched_trials(enough.optuna)] == list(range(3, 13))
    path = write_report(enough, tmp_path / "enough.html")
    page = path.read_text(encoding="utf-8")
    fig = _figures(page)["fig-importance"]
    assert fig["layout"]["title"]["text"] == ("Parameter importances for validation accuracy "
                                              "(fANOVA over the 10 searched trials, baselines "
                                              "left out)")
    assert fig["layout"]["xaxis"]["title"]["text"] == ("importance: share of the variance of "
                                                       "validation accuracy")
    assert sorted(fig["data"][0]["y"]) == ["dropout", "lr"]
    assert problems(path, tmp_path) == []


def _figures(page: str) -> dict[str, dict]:
    """Every figure's JSON on the page, by its div's id."""
    return {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r'<script type="application/json" class="plotly-figure" data-div="([^"]+)"[^>]*>'
        r"(.*?)</script>", page, re.S)}


class WithTwoTestMetrics(WithTestScores):
    """Test scores for two metrics, as a classification study stores them."""

    def leaderboard(self):
        lb = super().leaderboard()
        lb["test_accuracy_se"] = lb["test_accuracy"].notna() * 0.02  # primary metric only
        lb["test_macro_f1"] = lb["test_accuracy"] / 2
        return lb


def test_every_score_axis_and_bar_names_its_split_and_metric(study, tmp_path):
    assert "macro_f1" in study.leaderboard()  # the validation macro-F1 beside accuracy
    page = write_report(WithTwoTestMetrics(study), tmp_path / "two.html").read_text(
        encoding="utf-8")
    figs = _figures(page)

    def title(axis: dict) -> str:
        return axis["title"]["text"]

    test = figs["fig-test"]
    by_panel = {}
    for trace in test["data"]:
        by_panel.setdefault(trace.get("yaxis", "y"), []).append(trace["name"])
    assert by_panel == {"y": ["validation accuracy", "test accuracy (± bootstrap SE)"],
                        "y2": ["validation macro_f1", "test macro_f1"]}
    assert all(t.get("showlegend") is not False for t in test["data"])  # all in the legend
    assert [("error_y" in t) for t in test["data"]] == [False, True, False, False]
    assert [a["text"] for a in test["layout"]["annotations"]] == [
        "accuracy: validation and test", "macro_f1: validation and test"]
    assert title(test["layout"]["yaxis"]) == "accuracy"
    assert title(test["layout"]["yaxis2"]) == "macro_f1"
    for name in ("fig-best-clock", "fig-best-trial", "fig-curves"):
        assert title(figs[name]["layout"]["yaxis"]) == "validation accuracy", name
    freezing = figs["fig-freezing"]
    assert title(freezing["layout"]["yaxis2"]) == "validation accuracy"
    assert freezing["data"][0]["colorbar"]["title"]["text"] == "validation<br>accuracy"
    assert [a["text"] for a in freezing["layout"]["annotations"]] == [
        "best validation accuracy per cell", "validation accuracy of every finished trial"]
    assert [t["name"] for t in figs["fig-best-trial"]["data"]] == [
        "validation accuracy", "best validation accuracy so far"]


# ---------------------------------------------------------------- the checks can fail


def test_the_browser_check_catches_a_javascript_error(tmp_path):
    page = tmp_path / "boom.html"
    page.write_text('<html><body><p>ok</p><script>throw new Error("boom");</script>'
                    "</body></html>")
    found = problems(page, tmp_path)
    assert any("Uncaught Error: boom" in p for p in found), found


def test_the_browser_check_catches_an_empty_figure(tmp_path):
    empty = go.Figure().to_html(include_plotlyjs=True, full_html=True, div_id="fig-empty")
    page = tmp_path / "empty.html"
    page.write_text(empty, encoding="utf-8")
    found = problems(page, tmp_path)
    assert len(found) == 1 and found[0].startswith("figure fig-empty drew nothing"), found
    assert "'traces': 0" in found[0] and "'marks': 0" in found[0]


# ---------------------------------------------------------------- bad paths


class Untouchable:
    """A study that fails the test if the report reads anything from it."""

    def __getattr__(self, name):
        raise AssertionError(f"the report read study.{name} before checking its path")


def test_a_missing_folder_is_refused_before_any_work(tmp_path):
    target = tmp_path / "missing" / "report.html"
    with pytest.raises(at.StorageError, match=r"folder '.*missing' does not exist; create"):
        write_report(Untouchable(), target)
    assert not target.parent.exists()


def test_a_path_under_a_file_or_a_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(at.StorageError, match=r"notes.txt' is a file, not a folder"):
        write_report(Untouchable(), tmp_path / "notes.txt" / "report.html")
    with pytest.raises(at.StorageError, match=r"it is a folder; pass a file path such as"):
        write_report(Untouchable(), tmp_path)
    with pytest.raises(at.StorageError, match=r"must be a file path .* but got None"):
        write_report(Untouchable(), None)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders, so there is nothing to refuse")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(at.StorageError, match=r"folder '.*ro' is not writable"):
            write_report(Untouchable(), folder / "report.html")
    finally:
        folder.chmod(0o755)


def test_a_failed_write_keeps_the_previous_report_and_no_temporary_file(study, tmp_path,
                                                                        monkeypatch):
    target = write_report(study, tmp_path / "report.html")
    previous = target.read_bytes()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("autotransfer.files.os.replace", full_disk)
    with pytest.raises(at.StorageError, match=r"report.html'.*No space left on device"):
        write_report(study, target)
    assert target.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
