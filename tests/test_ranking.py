"""Transferability before search: LogME, rank_backbones, and how a search uses the ranking."""

import numpy as np
import pytest
import torch

import autotransfer as at
from autotransfer import storage as st
from autotransfer.selection.logme import logme
from autotransfer.selection.ranking import rank_backbones
from autotransfer.testing import toy_images
from autotransfer.training.cache import FeatureCache


def _data(n=200, d=64, c=5, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d))
    y = rng.integers(0, c, n)
    f[:, 0] += y * 2  # one informative direction
    return f, y


def test_logme_matches_the_reference_implementation():
    """Values from thuml/LogME's LogME().fit (fixed-point version) on the same arrays."""
    f, y = _data()
    assert logme(f, y) == pytest.approx(-0.5007698919418594, rel=1e-9)
    yr = np.random.default_rng(1).normal(size=(200, 2)) + f[:, :2]
    assert logme(f, yr, regression=True) == pytest.approx(-1.585338626212089, rel=1e-9)
    f, y = _data(n=50, d=300, c=3)  # more features than examples
    assert logme(f, y) == pytest.approx(16.208652372842053, rel=1e-9)


def test_features_that_carry_the_labels_score_higher():
    f, y = _data()
    noise = np.random.default_rng(5).normal(size=f.shape)
    assert logme(f, y) > logme(noise, y) + 0.05
    assert logme(np.c_[f, y * 3.0], y) > logme(f, y)


def test_logme_bad_inputs():
    f, y = _data(n=20, d=4, c=2)
    f[3, 1] = np.nan
    with pytest.raises(at.DataError, match="features of 1 of 20 examples hold NaN or inf"):
        logme(f, y)
    with pytest.raises(at.DataError, match="20 feature rows but 19 targets"):
        logme(_data(n=20)[0], y[:19])
    with pytest.raises(at.DataError, match="class ids 0..C-1"):
        logme(_data(n=20)[0], y - 1)
    with pytest.raises(at.DataError, match="not all zero, but the 4 features of all 20 "):
        logme(np.zeros((20, 4)), y)  # else a score of -inf: "worst", not "broken"


def test_rank_backbones_scores_each_backbone_and_reuses_the_cache(tmp_path):
    data = toy_images(60, classes=3, size=16)
    cache = FeatureCache(tmp_path / "cache")
    df = rank_backbones(data, backbones=["tiny_*"], cache=cache, image_size=16)
    assert list(df.columns) == ["backbone", "score", "score_se", "degenerate", "logme",
                                "seconds", "feature_dim", "n", "reason"]
    assert sorted(df["backbone"]) == ["tiny_cnn", "tiny_resnet"]
    assert df["score"].is_monotonic_decreasing and (df["n"] == 60).all()
    assert (df["feature_dim"] > 0).all() and np.isfinite(df["score"]).all()
    again = rank_backbones(data, backbones=["tiny_*"], cache=FeatureCache(tmp_path / "cache"),
                           image_size=16)  # a new process: the features come from disk
    assert again["score"].tolist() == pytest.approx(df["score"].tolist())
    assert len(list((tmp_path / "cache").glob("*.features"))) == 2


def test_a_backbone_that_fails_to_build_is_skipped_or_raised():
    from autotransfer import plugins

    from helpers import Exploding

    plugins.current().register(Exploding())
    data = toy_images(30, classes=3, size=16)
    with pytest.raises(RuntimeError, match="boom in a plugin"):
        rank_backbones(data, backbones=["boom", "tiny_cnn"])
    df = rank_backbones(data, backbones=["boom", "tiny_cnn"], errors="skip")
    assert df["backbone"].tolist() == ["tiny_cnn", "boom"]
    assert df["reason"].tolist() == ["", "RuntimeError: boom in a plugin"]
    assert np.isnan(df["score"].iloc[1])


def test_ranking_needs_an_example_per_class():
    data = at.data.from_arrays(toy_images(8, classes=8).inputs, np.arange(8))
    with pytest.raises(at.DataError, match="at least one example per class: 4 examples for 8"):
        rank_backbones(data, backbones=["tiny_cnn"], max_examples=4)


class _NaNBackbone(at.TimmBackbone):
    def build(self, *, pretrained=True, drop_path=0.0):
        body = super().build(pretrained=False, drop_path=drop_path)
        body.register_forward_hook(lambda module, inputs, out: out * float("nan"))
        return body


def test_nan_features_name_the_backbone_and_the_way_on():
    nan = _NaNBackbone("nan_cnn", timm_name="test_efficientnet")
    data = toy_images(20, classes=2, size=16)
    with pytest.raises(at.DataError, match=r"Backbone 'nan_cnn': LogME needs finite features, "
                                           r"but the features of 20 of 20 .*errors='skip' ranks"):
        rank_backbones(data, backbones=[nan], image_size=16)
    df = rank_backbones(data, backbones=["tiny_cnn", nan], image_size=16, errors="skip")
    assert df["backbone"].tolist() == ["tiny_cnn", "nan_cnn"]
    assert df["reason"][1].startswith("DataError: Backbone 'nan_cnn': LogME needs finite")
    assert "errors='skip'" not in df["reason"][1]  # it was given


@pytest.mark.parametrize("kw,error,match", [
    (dict(image_size=0), at.ConfigError, r"image_size must be an integer in \[8, 4096\], but "
                                         r"got image_size=0"),
    (dict(cache="features"), at.ConfigError, r"cache must be an autotransfer.training.cache.FeatureCache "
                                             r"or None, but got cache='features' \(str\)"),
    (dict(device="cuda:7", errors="skip"), at.DeviceError, "device='cuda:7' does not exist"),
    (dict(seed=-1), at.ConfigError, r"seed must be an integer in \[0, 4294967295\], but got seed=-1"),
    (dict(errors="ignore"), at.ConfigError, "errors must be 'raise' or 'skip'"),
    (dict(backbones=["tiny_bert"]), at.ModalityError, "Backbone 'tiny_bert' takes text inputs, "
                                                      "but the data holds image; image "
                                                      "backbones: .*tiny_cnn"),
    (dict(backbones=["tiny_cnn", "resnet18"]), at.WeightsUnavailableError,
     "Backbone 'resnet18' has no pretrained weights here .*errors='skip'"),
])
def test_bad_arguments_are_refused_before_any_backbone_runs(kw, error, match, monkeypatch):
    from autotransfer.selection import ranking

    ran = []
    monkeypatch.setattr(ranking, "backbone_features", lambda name, *a, **k: ran.append(name))
    with pytest.raises(error, match=match):
        rank_backbones(toy_images(20, classes=2, size=16), **{"backbones": ["tiny_cnn"], **kw})
    assert ran == []  # even with errors="skip", no backbone ran on a bad argument


def test_a_search_over_several_backbones_ranks_them_first(tmp_path):
    data = toy_images(90, classes=3, size=16)
    study = at.search(data, backbones=["tiny_cnn", "tiny_resnet"], n_trials=3,
                      storage=tmp_path / "s.db", name="toy", progress=False,
                      space=at.SearchSpace(epochs=2, image_size=16), baselines=False)
    ranking = study.system_attrs()[st.RANKING]
    assert sorted(ranking) == ["tiny_cnn", "tiny_resnet"]
    assert sorted(r["rank"] for r in ranking.values()) == [1, 2]
    lb = study.leaderboard()
    assert lb["transferability"].tolist() == [ranking[b]["score"] for b in lb["backbone"]]
    assert study.ranking()["backbone"].tolist() == sorted(ranking, key=lambda b: ranking[b]["rank"])
    plain = at.search(data, backbones=["tiny_cnn", "tiny_resnet"], n_trials=1,
                      storage=tmp_path / "p.db", name="toy", progress=False, rank=False,
                      space=at.SearchSpace(epochs=1, image_size=16), baselines=False)
    assert "transferability" not in plain.leaderboard() and plain.ranking().empty


def _trials(*runs):
    """Finished trials: (backbone, value or None for running) in order."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    out = []
    for i, (name, value) in enumerate(runs):
        t = create_trial(params={"backbone": name},
                         distributions={"backbone": CategoricalDistribution(["a", "b", "c"])},
                         value=value, state=TrialState.COMPLETE if value is not None
                         else TrialState.RUNNING)
        t.number = i
        out.append(t)
    return out


def test_the_race_fills_rungs_in_rank_order_then_keeps_the_better_half():
    from autotransfer.backends._race import race_choice

    order = ["a", "b", "c"]  # LogME's order, best first
    assert race_choice([], order, maximize=True) == "a"
    assert race_choice(_trials(("a", 0.5)), order, maximize=True) == "b"
    assert race_choice(_trials(("a", 0.5), ("b", None)), order, maximize=True) == "c"  # running counts
    # every backbone has its first trial: the better half by *results* goes on, so b,
    # ranked below a but better, leads: the ranking orders the race, results decide it
    done = _trials(("a", 0.5), ("b", 0.9), ("c", 0.1))
    assert race_choice(done, order, maximize=True) == "b"
    more = _trials(("a", 0.5), ("b", 0.9), ("c", 0.1), ("b", 0.8), ("a", 0.4))
    assert race_choice(more, order, maximize=True) == "b"  # rung 2: only b is left
    assert race_choice(done, order, maximize=False) == "c"  # minimizing: c's 0.1 is best


def test_a_rung_compares_first_trials_only_and_baselines_do_not_count():
    from autotransfer.backends._race import race_choice

    # a had two (warm-start) trials, b one: the rung compares a's first with b's first
    trials = _trials(("a", 0.5), ("a", 0.9), ("b", 0.7))
    assert race_choice(trials, ["a", "b"], maximize=True) == "b"
    probe = _trials(("a", 0.5), ("b", 0.1))
    probe[1].user_attrs["baseline"] = "linear_probe"  # a reference, not an entry: were it
    assert race_choice(probe, ["a", "b"], maximize=True) == "b"  # one, b would be dropped


def test_a_search_races_the_best_ranked_backbone_first(tmp_path):
    data = toy_images(90, classes=3, size=16)
    study = at.search(data, backbones=["tiny_cnn", "tiny_resnet"], n_trials=4,
                      storage=tmp_path / "s.db", name="toy", progress=False, warm_start=False,
                      space=at.SearchSpace(epochs=1, image_size=16), baselines=False)
    first = study.ranking()["backbone"][0]
    backbones = [t.params["backbone"] for t in study.trials()]
    assert backbones[0] == first and set(backbones[:2]) == {"tiny_cnn", "tiny_resnet"}


class _Constant(at.TimmBackbone):
    """Collapsed features: every input gives the same vector."""

    def build(self, *, pretrained=True, drop_path=0.0):
        body = super().build(pretrained=False, drop_path=drop_path)
        body.register_forward_hook(lambda module, inputs, out: out * 0.0 + 1.0)
        return body


def test_degenerate_features_rank_below_any_that_are_not():
    """At 32 px the pretrained Lite2's features are at chance on these digits (its probe
    gets about 1 in 10) and a collapsed backbone's are constant: both rank below Lite0,
    whatever their other scores."""
    train, _ = at.data.demo("digits", image_size=32, per_class=20, valid_per_class=1)
    flat = _Constant("flat_cnn", timm_name="test_efficientnet")
    df = rank_backbones(train, backbones=[flat, "efficientnet_lite2", "efficientnet_lite0"],
                        image_size=32)
    rows = df.set_index("backbone")
    assert df["backbone"][0] == "efficientnet_lite0" and not rows["degenerate"].iloc[0]
    assert rows.loc["efficientnet_lite2", "degenerate"] and rows.loc["flat_cnn", "degenerate"]
    assert rows.loc["efficientnet_lite2", "score"] < 0.2  # chance is 0.1
    assert rows.loc["efficientnet_lite0", "score"] > 0.3
    assert rows.loc["flat_cnn", "score"] == 0.1  # the probe can only guess
    # LogME cannot tell constant features from Lite0's here: within 0.5 of its score
    assert abs(rows.loc["flat_cnn", "logme"] - rows.loc["efficientnet_lite0", "logme"]) < 0.5
    assert 0 < rows.loc["efficientnet_lite0", "score_se"] < 0.05  # 200 held-out predictions


def test_on_photos_random_weights_rank_below_every_pretrained_backbone(first_party_plugins):
    """Crops of ten photographs at 64 px: ImageNet features tell them apart and a randomly
    initialised Lite0's much less (0.61 against 0.94-0.95 with 20 crops per class, in
    docs/benchmarks.md). On digits the same random features are as good as ImageNet's
    (0.80 against 0.77-0.82 at 64 px): there, no score on frozen features can tell them
    apart, and this test would not hold."""
    first_party_plugins.register("autotransfer_zoo")  # mobilenet_v2: a second family
    train, _ = at.data.demo("photos", image_size=64, per_class=10, valid_per_class=1)
    random_lite0 = at.TimmBackbone("random_lite0", timm_name="efficientnet_lite0",
                                   weights=None)
    torch.manual_seed(0)  # its random weights
    df = rank_backbones(train, backbones=["efficientnet_lite0", "mobilenet_v2", random_lite0],
                        image_size=64)
    rows = df.set_index("backbone")
    assert df["backbone"].iloc[-1] == "random_lite0", df
    gap = min(rows.loc[["efficientnet_lite0", "mobilenet_v2"], "score"]) - rows.loc[
        "random_lite0", "score"]
    assert gap > 3 * rows["score_se"].max(), df  # far outside the probe's noise


def test_the_probe_scores_held_out_predictions_and_flags_chance_and_constant_features():
    from autotransfer.selection.probe import probe

    f, y = _data(n=200, c=5)
    good = probe(f, y)
    assert good.score > good.chance + 0.1 and not good.degenerate and good.chance == pytest.approx(
        np.bincount(y).max() / 200)
    assert good.se == pytest.approx((good.score * (1 - good.score) / 200) ** 0.5)
    noise = probe(np.random.default_rng(3).normal(size=f.shape), y)
    assert noise.degenerate and noise.score < good.score
    flat = probe(np.ones((200, 8)), y)
    assert flat.degenerate and flat.score == pytest.approx(good.chance)
    fit = probe(f[:, :3], f[:, 0] * 2 + 0.1, regression=True)
    assert fit.score > 0.9 and not fit.degenerate
    with pytest.raises(at.DataError, match="cannot be cross-validated on 2 examples"):
        probe(np.eye(2), np.array([0, 1]))
