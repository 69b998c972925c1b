"""The frozen-prefix feature cache: same results, right invalidation, no trust in bad files."""

import pytest
import torch

import autotransfer as at
from autotransfer.testing import toy_images
from autotransfer.training.cache import FeatureCache

BASE = at.Strategy("tiny_cnn", frozen_groups=3, epochs=2, image_size=16, lr=5e-3)


@pytest.fixture
def toy():
    return toy_images(64, classes=2, size=16).split(0.25, seed=0)


def _run(strategy, data, cache):
    return at.run_trial(strategy, *data, cache=cache, patience=None)


def test_random_init_prefixes_of_other_seeds_do_not_share_features(toy, tmp_path):
    """tiny_cnn has no pretrained weights: each seed inits another frozen prefix, so a
    trial of another seed must not read the first one's features (its saved model would
    not match what its head was trained on)."""
    cache = FeatureCache(tmp_path / "cache")
    sources = [at.run_trial(BASE, *toy, cache=cache, seed=s, patience=None).cache_source
               for s in (0, 1, 0)]
    assert sources == ["computed", "computed", "memory"]


def test_cached_trials_match_uncached_ones_across_trials(toy, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    plain = _run(BASE, toy, cache=False)
    first = _run(BASE, toy, cache)
    again = _run(BASE.replace(lr=5e-3), toy, cache)  # another trial, same prefix
    fresh = _run(BASE, toy, FeatureCache(tmp_path / "cache"))  # another process, say
    assert (plain.cache_source, first.cache_source, again.cache_source, fresh.cache_source) == \
        ("off", "computed", "memory", "disk")
    for r in (first, again, fresh):
        assert [h["accuracy"] for h in r.history] == [h["accuracy"] for h in plain.history]
        assert r.history[-1]["train_loss"] == pytest.approx(plain.history[-1]["train_loss"],
                                                            rel=1e-4)


def test_a_text_encoder_trains_from_its_cached_prefix(tmp_path):
    """A text prefix's output is (hidden states, attention mask): the loader's batches of it
    reach the trainable layers as they would live."""
    texts = ["awful film", "dull and slow", "a waste", "lovely", "great fun", "moving"] * 4
    data = at.data.from_texts(texts, ["neg"] * 3 + ["pos"] * 3 + ["neg"] * 3 + ["pos"] * 3
                              + ["neg"] * 3 + ["pos"] * 3 + ["neg"] * 3 + ["pos"] * 3)
    split = data.split(0.5, seed=0)
    text = at.Strategy("tiny_bert", frozen_groups=2, epochs=2, batch_size=4, lr=1e-3)
    plain = _run(text, split, cache=False)
    cached = _run(text, split, FeatureCache(tmp_path / "cache"))
    assert cached.cache_source == "computed"
    assert [h["accuracy"] for h in cached.history] == [h["accuracy"] for h in plain.history]
    # BERT's dropout draws per token: cached batches are padded to another length
    assert cached.history[-1]["train_loss"] == pytest.approx(plain.history[-1]["train_loss"],
                                                             rel=2e-2)


def _other_weights(tmp_path):
    path = tmp_path / "w.pth"
    torch.manual_seed(1)
    torch.save(at.create_backbone("tiny_cnn", pretrained=False).state_dict(), path)
    return path


@pytest.mark.parametrize("part", ["backbone", "weights", "pretrained", "frozen_groups",
                                  "preprocessing", "data"])
def test_changing_any_key_part_misses_the_cache(part, toy, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    assert _run(BASE, toy, cache).cache_source == "computed"
    strategy, data = BASE, toy
    if part == "backbone":
        at.register_plugin(_Twin(), name="twin")
        strategy = BASE.replace(backbone="tiny_cnn_twin")
    elif part == "weights":
        at.register_plugin(_Twin(weights=_other_weights(tmp_path)), name="twin")
        strategy = BASE.replace(backbone="tiny_cnn_twin")
        cache = FeatureCache(tmp_path / "cache")
        assert _run(strategy, data, cache).cache_source == "computed"
        path = _other_weights(tmp_path)  # rewrite the same file: a new size/mtime key
        torch.save({k: v + 1 for k, v in torch.load(path).items()}, path)
    elif part == "pretrained":
        strategy = BASE.replace(pretrained=False)
    elif part == "frozen_groups":
        strategy = BASE.replace(frozen_groups=4)
    elif part == "preprocessing":
        strategy = BASE.replace(image_size=24)
    elif part == "data":
        train, valid = toy
        x = train.inputs.clone()
        x[0, 0, 0, 0] ^= 1  # one pixel
        data = (at.data.Dataset(x, train.labels, "image"), valid)
    r = _run(strategy, data, cache)
    assert r.cache_source.startswith("computed"), r.cache_source
    if part == "data":
        assert r.cache_source == "computed/memory"  # the validation split still hits


class _Twin:
    """The same architecture under another name (and maybe other weights)."""

    def __init__(self, weights=None):
        self.weights = weights

    @at.hookimpl
    def register_backbones(self, register):
        register(at.TimmBackbone("tiny_cnn_twin", timm_name="test_efficientnet",
                                 image_size=32, weights=self.weights))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_corrupted_cache_file_is_rebuilt_not_trusted(damage, toy, tmp_path):
    first = _run(BASE, toy, FeatureCache(tmp_path / "cache"))
    files = sorted((tmp_path / "cache").glob("*.features"))
    assert len(files) == 2  # train and valid features
    for f in files:
        raw = bytearray(f.read_bytes())
        if damage == "flip":
            raw[len(raw) // 2] ^= 0xFF
        elif damage == "truncate":
            raw = raw[: len(raw) // 2]
        else:
            raw = bytearray(b"not a cache file")
        f.write_bytes(bytes(raw))
    cache = FeatureCache(tmp_path / "cache")
    again = _run(BASE, toy, cache)
    assert again.cache_source == "computed" and cache.hits["rebuilt"] == 2
    assert [h["accuracy"] for h in again.history] == [h["accuracy"] for h in first.history]
    assert _run(BASE, toy, FeatureCache(tmp_path / "cache")).cache_source == "disk"


class _Payload:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def test_a_cache_file_holding_a_pickle_runs_no_code(toy, tmp_path):
    """Cache files are safetensors: a crafted one (valid checksum, pickled payload) is
    rebuilt, and its payload never runs."""
    import hashlib
    import pickle

    _run(BASE, toy, FeatureCache(tmp_path / "cache"))
    target = tmp_path / "written.txt"
    for f in (tmp_path / "cache").glob("*.features"):
        payload = pickle.dumps(_Payload(target))
        f.write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    cache = FeatureCache(tmp_path / "cache")
    assert _run(BASE, toy, cache).cache_source == "computed" and cache.hits["rebuilt"] == 2
    assert not target.exists()


def test_memory_budget_evicts_least_recently_used(toy):
    cache = FeatureCache(None, max_bytes=1)  # nothing fits: memory stays empty
    _run(BASE, toy, cache)
    assert cache.memory_bytes == 0
    roomy = FeatureCache(None, max_bytes=10 << 20)
    _run(BASE, toy, roomy)
    _run(BASE.replace(frozen_groups=4), toy, roomy)
    size = roomy.memory_bytes
    assert 0 < size <= 10 << 20 and len(roomy._memory) == 4
    tight = FeatureCache(None, max_bytes=size - 1)
    _run(BASE, toy, tight)
    _run(BASE.replace(frozen_groups=4), toy, tight)
    assert tight.memory_bytes <= size - 1 and len(tight._memory) < 4


def test_disk_budget_drops_the_oldest_files(toy, tmp_path):
    cache = FeatureCache(tmp_path / "c", max_bytes=1 << 20, disk_bytes=1)
    _run(BASE, toy, cache)
    _run(BASE.replace(frozen_groups=4), toy, cache)
    assert len(list((tmp_path / "c").glob("*.features"))) == 1


def test_leaderboard_says_which_trials_used_the_cache(tmp_path):
    study = at.search(toy_images(60, classes=2, size=16), backbones=["tiny_cnn"], n_trials=4,
                      storage=tmp_path / "s.db", progress=False, final="best",
                      space=at.SearchSpace(epochs=2, image_size=16, mixup=[0.4], augment="none"))
    lb = study.leaderboard()
    cached = dict(zip(lb["baseline"], lb["cached"]))
    assert cached["linear_probe"] == "computed"
    assert cached["default_finetune"] == "no (nothing frozen)"
    assert cached[""] in ("no (mixup)", "no (nothing frozen)")  # the searched trial mixes


def test_augmented_frozen_trials_read_cached_views(toy, tmp_path):
    """A frozen trial's first K epochs keep one augmented view each; later trials reuse them."""
    from autotransfer.training import features

    cache = FeatureCache(tmp_path / "cache")
    flip = BASE.replace(augment="flip", epochs=features.AUG_VIEWS)
    short = _run(flip.replace(epochs=features.AUG_VIEWS - 1), toy, cache)
    assert len(cache._memory) == 1  # too few epochs to see every view: only valid is kept
    first = _run(flip, toy, cache)
    again = _run(flip.replace(lr=1e-3), toy, cache)
    plain = _run(BASE, toy, cache)
    views = f"({features.AUG_VIEWS} views, augment=flip)"
    assert short.cache_source == f"computed {views}"
    assert first.cache_source == f"computed/memory {views}"  # the views are computed again
    assert again.cache_source == f"memory {views}"
    assert plain.cache_source == "computed/memory"  # the plain validation features are shared
    assert first.cached and first.epochs_run == features.AUG_VIEWS
    train_rows = len(toy[0]) * features.AUG_VIEWS
    assert len(cache._memory) == 3  # augmented train views, plain train, plain valid
    assert sorted(len(v) for v in cache._memory.values())[-1] == train_rows


def test_augment_runs_the_prefix_live_when_views_are_off(toy, monkeypatch):
    from autotransfer.training import features

    monkeypatch.setattr(features, "AUG_VIEWS", 0)
    r = _run(BASE.replace(augment="trivial"), toy, True)
    assert not r.cached and r.cache_source == "no (augment=trivial)"
    assert 0 <= r.value <= 1
