"""write_report(): an offline HTML page of a study, checked in a real headless browser.

The browser checks read the DOM Chromium built after running the page's scripts: every
Plotly figure must have drawn an SVG with at least one trace holding marks, and the page
must log nothing to the console (an uncaught exception is logged there). Two pages that
are broken on purpose prove that these checks can fail.
"""

from __future__ import annotations

import html
import json
import os
import re
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

import autotransfer as at
from autotransfer import plugins
from autotransfer import storage as st
from autotransfer.report.page import write_report
from autotransfer.report.plots import Facts, learning_curves
from autotransfer.testing import toy_images

FIGURES = {"fig-best-clock", "fig-best-trial", "fig-freezing", "fig-curves", "fig-importance"}

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


def test_the_page_is_offline_with_plotly_inlined_once(report):
    page = report.read_text(encoding="utf-8")
    library = plotly.offline.get_plotlyjs()
    assert page.count(library) == 1
    ours = page.replace(library, "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours)
    assert ours.count("Plotly.newPlot(") == len(FIGURES)


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
    assert "plotly-graph-div" not in page
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
    assert "Parameter importances are not available" in page
    assert "No finished trial records how many layer groups it froze." in page
    assert problems(path, tmp_path) == []


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
