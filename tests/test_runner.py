"""The trial runner on real (tiny and pretrained) models."""

import numpy as np
import optuna
import pytest

import autotransfer as at
from autotransfer.testing import toy_images


@pytest.fixture
def toy():
    return toy_images(96, classes=3, size=16).split(0.25, seed=0)


def test_learns_and_reports_every_epoch(toy):
    reports = []
    r = at.run_trial(at.Strategy("tiny_cnn", lr=1e-2, epochs=4, image_size=16), *toy,
                     report=lambda v, e: reports.append((e, v)), patience=None)
    assert [e for e, _ in reports] == [1, 2, 3, 4]
    assert r.value == max(v for _, v in reports) > 0.8  # chance is 1/3
    assert r.metrics["accuracy"] == r.value and set(r.metrics) >= {"macro_f1", "train_loss"}
    assert r.epochs_run == 4 and r.trainable_params == r.total_params


def test_pruning_from_the_report_callback_stops_the_trial(toy):
    def report(value, epoch):
        if epoch == 2:
            raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        at.run_trial(at.Strategy("tiny_cnn", epochs=5, image_size=16), *toy, report=report)


def test_non_finite_loss_fails_the_trial_with_its_reason(toy):
    s = at.Strategy("tiny_cnn", lr=1e8, optimizer="sgd", grad_clip=0, weight_decay=0,
                    epochs=5, image_size=16)
    with pytest.raises(at.TrialFailed, match="loss became nan at epoch"):
        at.run_trial(s, *toy)


def test_early_stopping_on_a_plateau(toy):
    s = at.Strategy("tiny_cnn", lr=1e-9, epochs=30, image_size=16, frozen_groups=6)
    r = at.run_trial(s, *toy, patience=2)
    assert r.epochs_run < 30 and r.epochs_run == r.best_epoch + 2


def test_freezing_every_group_trains_only_the_head(toy):
    r = at.run_trial(at.Strategy("tiny_cnn", frozen_groups=6, epochs=2, image_size=16), *toy)
    features = at.create_backbone("tiny_cnn").num_features
    assert r.trainable_params == features * 3 + 3  # the head's Linear(features, 3 classes)
    assert r.total_params > 10 * r.trainable_params
    assert r.cached


def test_cached_prefix_gives_the_same_results_as_running_it(toy):
    s = at.Strategy("tiny_cnn", frozen_groups=3, epochs=3, image_size=16, lr=5e-3)
    a = at.run_trial(s, *toy, cache=True, patience=None)
    b = at.run_trial(s, *toy, cache=False, patience=None)
    assert a.cached and not b.cached
    for ha, hb in zip(a.history, b.history):
        assert ha["accuracy"] == hb["accuracy"]
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)


def test_mixup_runs_uncached_and_is_refused_for_text(toy):
    r = at.run_trial(at.Strategy("tiny_cnn", frozen_groups=3, mixup=0.4, epochs=2,
                                 image_size=16), *toy)
    assert not r.cached
    text = at.data.from_texts(["good", "bad"] * 6, ["p", "n"] * 6).split(0.5)
    with pytest.raises(at.StrategyError, match="mixup applies to images"):
        at.run_trial(at.Strategy("tiny_bert", mixup=0.2), *text)


def test_text_backbone_given_images_and_the_reverse(toy):
    with pytest.raises(at.ModalityError, match="'tiny_bert' takes text inputs, but the train data holds image; image backbones: .*tiny_cnn"):
        at.run_trial(at.Strategy("tiny_bert"), *toy)
    text = at.data.from_texts(["good", "bad"] * 6, ["p", "n"] * 6).split(0.5)
    with pytest.raises(at.ModalityError, match="takes image inputs, but the train data holds text; text backbones: .*minilm_l6"):
        at.run_trial(at.Strategy("tiny_cnn"), *text)


def test_text_classification_with_a_tiny_bert():
    words = [("great", "pos"), ("lovely", "pos"), ("awful", "neg"), ("boring", "neg")]
    texts = [f"the film was {w} number {i}" for i in range(16) for w, _ in words]
    labels = [lab for _ in range(16) for _, lab in words]
    train, valid = at.data.from_texts(texts, labels).split(0.25)
    r = at.run_trial(at.Strategy("tiny_bert", lr=3e-3, epochs=8, batch_size=8), train, valid)
    assert r.value >= 0.75


def test_regression_and_multilabel_tasks(toy):
    train, valid = toy
    bright = lambda ds: ds.inputs.float().mean((1, 2, 3)).numpy()  # noqa: E731
    reg = at.run_trial(
        at.Strategy("tiny_cnn", lr=1e-2, epochs=6, image_size=16),
        at.data.Dataset(train.inputs, bright(train), "image"),
        at.data.Dataset(valid.inputs, bright(valid), "image"), task="regression")
    assert reg.metric == "r2" and np.isfinite(reg.value)
    multi = lambda ds: [[int(c)] + ([9] if int(c) == 2 else []) for c in ds.labels]  # noqa: E731
    ml = at.run_trial(
        at.Strategy("tiny_cnn", lr=1e-2, epochs=4, image_size=16),
        at.data.Dataset(train.inputs, multi(train), "image"),
        at.data.Dataset(valid.inputs, multi(valid), "image"), task="multilabel")
    assert ml.metric == "map" and ml.value > 0.6


def test_unknown_task_lists_the_registered_ones(toy):
    with pytest.raises(at.UnknownNameError, match="Unknown task .segmentation.; close matches: regression; accepted: classification, multilabel, regression"):
        at.run_trial(at.Strategy("tiny_cnn"), *toy, task="segmentation")


def test_pretrained_efficientnet_transfers_to_digits():
    """Real transfer: ImageNet weights, half frozen, beat the same net from scratch."""
    train, valid = at.data.demo("digits", image_size=32, per_class=20, valid_per_class=30)
    base = at.Strategy("efficientnet_lite0", epochs=6, image_size=32)
    half = at.run_trial(base.replace(frozen_groups=4, lr=3e-3, layer_decay=0.8), train, valid)
    scratch = at.run_trial(base.replace(pretrained=False, lr=1e-3), train, valid)
    assert half.value > scratch.value + 0.2, (half.value, scratch.value)


@pytest.mark.parametrize("mix", [dict(mixup=0.4), dict(cutmix=1.0), dict(mixup=0.2, cutmix=1.0)])
def test_mixup_and_cutmix_train_with_soft_targets(toy, mix):
    s = at.Strategy("tiny_cnn", lr=1e-2, epochs=3, image_size=16, frozen_groups=2,
                    label_smoothing=0.1, batch_size=15, **mix)
    r = at.run_trial(s, *toy, patience=None)
    assert not r.cached and r.cache_source in ("no (mixup)", "no (cutmix)")
    assert all(np.isfinite(h["train_loss"]) for h in r.history) and r.value > 1 / 3


@pytest.mark.parametrize("augment", ["flip", "trivial", "randaugment"])
def test_every_augmentation_trains_a_full_fine_tune(toy, augment):
    r = at.run_trial(at.Strategy("tiny_cnn", lr=1e-2, epochs=2, image_size=16, augment=augment),
                     *toy, patience=None)
    assert r.cache_source == "no (nothing frozen)" and r.epochs_run == 2
    assert np.isfinite(r.history[-1]["train_loss"])


def test_augmentation_and_mixing_need_what_they_apply_to(toy):
    words = at.data.from_texts(["good film", "bad film"] * 4, ["pos", "neg"] * 4)
    with pytest.raises(at.StrategyError, match="augment applies to images; backbone 'tiny_bert' takes text. Use augment='none'"):
        at.run_trial(at.Strategy("tiny_bert", augment="flip"), words, words)
    reg = [at.data.Dataset(ds.inputs, ds.labels.astype(float), "image") for ds in toy]
    with pytest.raises(at.StrategyError, match="mixup and cutmix mix class targets; task 'regression'"):
        at.run_trial(at.Strategy("tiny_cnn", cutmix=1.0, image_size=16), *reg, task="regression")


def test_run_trial_takes_its_setup_as_one_object_or_by_keyword(toy):
    setup = at.TrialSetup(patience=None, seed=3, keep="last")
    a = at.run_trial(at.Strategy("tiny_cnn", epochs=2, image_size=16), *toy, setup)
    b = at.run_trial(at.Strategy("tiny_cnn", epochs=2, image_size=16), *toy, patience=None,
                     seed=3, keep="last")
    assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history])
    with pytest.raises(at.UnknownNameError, match="Unknown run_trial\\(\\) option 'patiense'; close matches: patience"):
        at.run_trial(at.Strategy("tiny_cnn"), *toy, patiense=3)
