"""Domain adaptation: AdaBN re-estimates BatchNorm statistics and nothing else; DANN's
gradient-reversal layer flips gradients; searches with unlabeled target inputs choose them."""

import pytest
import torch

import autotransfer as at
from autotransfer import inputs, plugins
from autotransfer.data import pipeline
from autotransfer.errors import DataError, ModalityError, StrategyError
from autotransfer.techniques import Trial, domain
from autotransfer.testing import toy_images
from autotransfer.training.model import build_model
from autotransfer.training.runner import prepare


def _target(n=48, seed=2):
    """The toy images with inverted contrast: a shifted target domain."""
    return 255 - toy_images(n, classes=3, size=32, seed=seed).inputs


def _model(backbone="tiny_cnn"):
    model = build_model(at.Strategy(backbone), "classification", {"classes": [0, 1, 2]})
    model.freeze(1)
    return model


def test_gradient_reversal_flips_and_scales_gradients():
    x = torch.randn(4, 3, requires_grad=True)
    (domain.grad_reverse(x, 0.25) * torch.arange(3.0)).sum().backward()
    assert torch.equal(x.grad, -0.25 * torch.arange(3.0).expand(4, 3))
    assert torch.equal(domain.grad_reverse(x, 0.25), x)  # the forward pass is the identity


def test_dann_loss_trains_the_classifier_and_reverses_the_features_gradient():
    dann = domain.Dann(1.0, 8, [], total_steps=10, lr=1e-3, device=torch.device("cpu"))
    dann.step = 5  # half-way: the reversal strength is below 1
    dann.classifier.eval()  # no dropout: both passes see the same network
    scale = dann.scale()
    feats = torch.randn(6, 8, requires_grad=True)
    dann.loss(feats[:3], feats[3:]).backward()
    reversed_grad = feats.grad.clone()
    # The same classifier without the reversal layer: the gradient it would give.
    feats.grad = None
    labels = torch.tensor([0.0, 0, 0, 1, 1, 1])
    plain = dann.classifier.net(feats).squeeze(-1)
    torch.nn.functional.binary_cross_entropy_with_logits(plain, labels).backward()
    assert 0 < scale < 1
    assert torch.allclose(reversed_grad, -scale * feats.grad, atol=1e-6)


def test_adabn_changes_running_statistics_and_nothing_else():
    model = _model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    target = _target().float() / 255
    seen = domain.adabn(model, [(target,)], model)
    after = model.state_dict()
    stats = [k for k in after if k.endswith(("running_mean", "running_var"))]
    assert seen == len(target) and stats
    assert all(not torch.equal(before[k], after[k]) for k in stats)
    params = dict(model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in params)
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_adabn_statistics_are_the_targets():
    """One batch of target inputs: the first BatchNorm's running mean is their mean."""
    model = _model()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    target = _target().float() / 255
    domain.adabn(model, [(target,)], model)
    assert torch.allclose(bn.running_mean, seen[0].mean(dim=(0, 2, 3)), atol=1e-5)


def _bn_outputs(model, x):
    """Per-channel mean and std of every BatchNorm layer's output (its affine, before the
    activation timm fuses into it) on inputs ``x``, the model in eval mode."""
    layers = domain._bn_layers(model)
    out = {}

    def hook(m, args):
        y = torch.nn.functional.batch_norm(args[0], m.running_mean, m.running_var, m.weight,
                                           m.bias, False, 0.0, m.eps)
        out[m] = (y.mean((0, 2, 3)), y.std((0, 2, 3)))

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return [out[m] for m in layers]


def _gaps(got, want):
    """Each layer's error in its output moments, relative to the source's spread."""
    return [float(((gm - wm).abs().mean() + (gs - ws).abs().mean()) / ws.mean())
            for (gm, gs), (wm, ws) in zip(got, want)]


def test_adabn_maps_the_target_onto_the_source_through_frozen_batchnorm_statistics():
    """Frozen BatchNorm layers keep statistics of other data (ImageNet's; here noise's),
    so the training data is not N(0, 1) after them. On a dimmed target (an affine change
    of the training images) AdaBN relative to the source's moments gives every layer's
    output the mean and spread it has on the source; mapping onto N(0, 1) does not."""
    source = toy_images(48, classes=3, size=32).inputs.float() / 255
    target = 0.25 * source + 0.1
    torch.manual_seed(0)  # the random init (any seed does: 10 tried)
    model = _model()
    noise = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    domain.adabn(model, [(noise,)], model)  # the "pretrained" statistics, then frozen
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    want = _bn_outputs(model, source)
    assert min(_gaps(_bn_outputs(model, target), want)) > 0.25  # the shift, unadapted

    # Every layer taken as frozen: all map onto the source's moments.
    domain.adabn(model, [(target,)], model, domain.moments(model, [(source,)], model))
    gaps = _gaps(_bn_outputs(model, target), want)
    # Exact after the stem (a per-channel affine change); deeper, zero padding is not
    # dimmed with the image, so the borders differ a little.
    assert gaps[0] < 1e-3 and max(gaps) < 0.1, gaps
    model.load_state_dict(frozen)
    domain.adabn(model, [(target,)], model)  # classic AdaBN: onto N(0, 1)
    assert min(_gaps(_bn_outputs(model, target), want)) > 0.4


def test_adabn_relative_to_statistics_trained_on_the_source_is_classic_adabn():
    """Where every layer's statistics are the training data's, mapping the target onto
    the source's moments is AdaBN as published: the target's mean and variance (to
    within BatchNorm's eps, 1e-5 against variances of 0.01 and more)."""
    source = toy_images(48, classes=3, size=32).inputs.float() / 255
    target = _target(48, seed=4).float() / 255  # inverted contrast
    torch.manual_seed(0)
    model = _model()
    for layer in domain._bn_layers(model):  # each layer's statistics: its source inputs'
        mean, var = domain.moments(model, [(source,)], model)[layer]
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    domain.adabn(model, [(target,)], model, domain.moments(model, [(source,)], model))
    relative = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(trained)
    domain.adabn(model, [(target,)], model)
    stats = [k for k in trained if k.endswith(("running_mean", "running_var"))]
    assert all(not torch.allclose(trained[k], relative[k], rtol=0.1) for k in stats)
    for k in stats:
        assert torch.allclose(relative[k], model.state_dict()[k], rtol=5e-3, atol=5e-4), k


def test_the_adabn_technique_maps_frozen_layers_onto_the_training_inputs():
    """The plugin reads the source's moments from the trial's training inputs
    (``Trial.data``) for the frozen layers (in eval mode as the model trains); the
    layers in training mode, and every layer of a trial without them, get classic AdaBN."""
    strategy = at.Strategy("tiny_cnn", frozen_groups=1, adabn=True)
    data = prepare(strategy, toy_images(48, classes=3, size=32), toy_images(6, classes=3,
                   size=32), "classification")
    model = _model()
    pre = data.preprocessing

    def forward(x):
        return model(pre.normalize(x))

    unlabeled = at.data.Dataset(_target(), [0] * 48)
    technique = plugins.technique_registry()["adabn"]
    stats = [k for k in model.state_dict() if k.endswith(("running_mean", "running_var"))]
    inside = []
    for with_data in (data, None):
        trial = Trial(strategy, model, unlabeled=unlabeled, preprocessing=pre,
                      forward=forward, data=with_data)
        with technique.start(trial).validation(model, strategy):
            inside.append({k: model.state_dict()[k].clone() for k in stats})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = [m for m in domain._bn_layers(model) if not m.training]
    assert 0 < len(frozen) < len(domain._bn_layers(model))  # the first group's
    target = domain.target_batches(trial, 256)
    domain.adabn(model, target, forward, domain.moments(
        model, pipeline.loader(data, "train", 256), forward, layers=frozen))
    assert all(torch.allclose(inside[0][k], model.state_dict()[k], atol=1e-5) for k in stats)
    model.load_state_dict(before)
    domain.adabn(model, target, forward)
    assert all(torch.equal(inside[1][k], model.state_dict()[k]) for k in stats)
    assert any(not torch.allclose(inside[0][k], inside[1][k], rtol=0.1) for k in stats)


def test_target_statistics_are_put_back_after_validation():
    model = _model()
    source = {k: v.clone() for k, v in model.state_dict().items()}
    with domain.target_statistics(model, [(_target().float() / 255,)], model):
        inside = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(not torch.equal(source[k], inside[k]) for k in source)
    assert all(torch.equal(source[k], v) for k, v in model.state_dict().items())


def test_an_adabn_trial_trains_the_same_weights_and_keeps_the_target_statistics():
    train, valid = toy_images(64, classes=3, size=32), toy_images(24, classes=3, size=32, seed=1)
    unlabeled = at.data.Dataset(_target(), [0] * 48)
    base = at.Strategy("tiny_cnn", epochs=2, frozen_groups=1)
    plain = at.run_trial(base, train, valid, keep="last", seed=3)
    adapted = at.run_trial(base.replace(adabn=True), train, valid, keep="last", seed=3,
                           unlabeled=unlabeled)
    stats = [k for k in plain.state_dict if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(plain.state_dict[k], adapted.state_dict[k])
                         for k in stats)
    weights = [k for k in plain.state_dict if k not in stats
               and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(plain.state_dict[k], adapted.state_dict[k]) for k in weights)
    assert adapted.cache_source == "no (domain adaptation)" or adapted.cached is False


def test_a_dann_trial_moves_the_body_and_runs_on_text():
    texts = [f"{w} item {i}" for i, w in enumerate(["good", "bad", "fine"] * 8)]
    data = at.data.Dataset(texts, [t.split()[0] for t in texts])
    target = at.data.Dataset([t.upper() for t in texts], [0] * len(texts))
    base = at.Strategy("tiny_bert", epochs=1, frozen_groups=1, batch_size=8)
    plain = at.run_trial(base, data, data, keep="last")
    adapted = at.run_trial(base.replace(dann=0.5), data, data, keep="last", unlabeled=target)
    assert adapted.cache_source == "no (domain adaptation)"
    body = [k for k in plain.state_dict if k.startswith("body.") and "encoder" in k]
    # The adversarial loss reaches the trainable body, through the reversal layer.
    assert any(not torch.equal(plain.state_dict[k], adapted.state_dict[k]) for k in body)
    assert set(adapted.state_dict) == set(plain.state_dict)  # the domain classifier is not kept


def test_adaptation_needs_unlabeled_inputs_and_adabn_needs_batchnorm():
    train = toy_images(32, classes=3, size=32)
    with pytest.raises(StrategyError, match="unlabeled"):
        at.run_trial(at.Strategy("tiny_cnn", epochs=1, dann=0.1), train, train)
    texts = ["a b", "c d", "e f", "g h"]
    data = at.data.Dataset(texts, [0, 1, 0, 1])
    with pytest.raises(StrategyError, match="no BatchNorm.*dann"):
        at.run_trial(at.Strategy("tiny_bert", epochs=1, adabn=True), data, data,
                     unlabeled=data)


def _search(tmp_path, **kw):
    return at.search(toy_images(60, classes=3, size=32), backbones="tiny_cnn", n_trials=6,
                     valid=toy_images(24, classes=3, size=32, seed=1), storage=tmp_path / "s.db",
                     space=at.SearchSpace(epochs=1), progress=False, rank=False,
                     warm_start=False, **{"final": "best", **kw})


def test_a_search_with_unlabeled_inputs_searches_adabn_and_dann(tmp_path):
    study = _search(tmp_path, unlabeled=_target(), baselines=False)
    params = [t.params for t in study.trials()]
    assert all("adabn" in p and "dann" in p for p in params)
    board = study.leaderboard()
    assert {"adabn", "dann"} <= set(board.columns)
    assert (board["state"] == "complete").all()
    assert study.meta["n_unlabeled"] == 48


def test_without_unlabeled_inputs_the_space_leaves_adaptation_out(tmp_path):
    study = _search(tmp_path)
    assert not any("adabn" in t.params or "dann" in t.params for t in study.trials())
    assert not study.leaderboard()["adabn"].any()


@pytest.mark.parametrize("unlabeled, error, words", [
    (["some text", "more text"], ModalityError, "unlabeled holds text"),
    (torch.zeros(4, 2, 32, 32, dtype=torch.uint8), DataError, r"1, 3 or 4 channels.*\(4, 2"),
    (torch.full((4, 3, 32, 32), float("nan")), DataError, "NaN"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), DataError, "at least 2"),
    (torch.zeros(4, 3, 4, 4, dtype=torch.uint8), DataError, "at least 8x8"),
    ("no_such_folder/", ModalityError, "'no_such_folder/'.*a folder of image files"),
    ({"images": 1}, DataError, "unlabeled must be"),
])
def test_bad_unlabeled_inputs_are_refused_before_storage(tmp_path, unlabeled, error, words):
    with pytest.raises(error, match=words):
        _search(tmp_path, unlabeled=unlabeled)
    assert not (tmp_path / "s.db").exists()


def _save_pngs(images, folder, labels=None):
    """PNG files of uint8 (N, 3, H, W) ``images`` in ``folder`` (in class subfolders)."""
    from PIL import Image

    for i, img in enumerate(images):
        where = folder / (f"c{labels[i]}" if labels is not None else "")
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(where / f"{i:03d}.png")
    return folder


def test_unlabeled_image_files_adapt_like_the_same_images_in_memory(tmp_path):
    """A folder (or list) of target photos is read as predict reads inputs: AdaBN on the
    PNGs gives the statistics it gives on the same pixels as a uint8 batch; a float or
    grayscale batch is converted as training data is."""
    target = _target()
    folder = _save_pngs(target, tmp_path / "target")
    from_folder = inputs.unlabeled(str(folder), "image")
    from_paths = inputs.unlabeled(sorted(str(p) for p in folder.iterdir()), "image")
    assert len(from_folder) == len(from_paths) == len(target)
    assert torch.equal(inputs.unlabeled(target.float() / 255, "image").inputs, target)
    train, valid = toy_images(64, classes=3, size=32), toy_images(24, classes=3, size=32, seed=1)
    strategy = at.Strategy("tiny_cnn", epochs=1, frozen_groups=1, adabn=True)
    runs = [at.run_trial(strategy, train, valid, keep="last", seed=3, unlabeled=u).state_dict
            for u in (inputs.unlabeled(target, "image"), from_folder, from_paths)]
    stats = [k for k in runs[0] if k.endswith(("running_mean", "running_var"))]
    for other in runs[1:]:
        assert all(torch.allclose(runs[0][k], other[k], atol=1e-6) for k in stats)


def test_a_study_file_takes_a_folder_of_unlabeled_target_images(tmp_path):
    from autotransfer.cli import main

    train = toy_images(30, classes=3, size=32)
    _save_pngs(train.inputs, tmp_path / "train", train.labels)
    _save_pngs(_target(12), tmp_path / "photos" / "target")
    study = tmp_path / "shift.toml"
    study.write_text('n_trials = 2\nbackbones = ["tiny_cnn"]\nbaselines = false\n'
                     'warm_start = false\n[data]\nfolder = "train"\n'
                     'unlabeled = "photos/target"\n[space]\nepochs = 1\n')
    assert main(["run", str(study)]) == 0
    done = at.Study.load(tmp_path / "shift.db")
    assert done.meta["n_unlabeled"] == 12
    assert all("adabn" in t.params and "dann" in t.params for t in done.trials())
    study.write_text(study.read_text().replace("photos/target", "photos/missing"))
    assert main(["run", str(study)]) == 2


def test_the_warm_start_does_not_adapt_so_the_search_compares_adapting_with_not(tmp_path):
    # Sampled at random, one trial in ten would be unadapted; the portfolio's are.
    study = at.search(toy_images(60, classes=3, size=32), backbones="tiny_cnn", n_trials=12,
                      valid=toy_images(24, classes=3, size=32, seed=1), unlabeled=_target(),
                      storage=tmp_path / "s.db", space=at.SearchSpace(epochs=1),
                      progress=False, rank=False, baselines=False, pruner="none")
    board = study.leaderboard().set_index("trial").sort_index()
    portfolio = board.loc[[0, 1, 2]]
    assert portfolio["frozen_groups"].tolist() == [5, 3, 2]  # of tiny_cnn's 6 groups
    assert not portfolio["adabn"].any() and (portfolio["dann"] == 0).all()
    sampled = board.loc[3:]
    assert (sampled["adabn"] | (sampled["dann"] > 0)).any()  # the sampler still adapts
