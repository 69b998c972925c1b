"""Data for ``benchmarks/beyond.py``, built offline with fixed seeds.

- :func:`contrast_reviews` (part a): short review sentences whose label needs word order.
- :func:`quickstart_digits` (part b): the quickstart's digits, plus the digits it leaves
  out, unlabelled, as a transfer set for distillation.
- :func:`digits_shift` (part c): clean labelled digits to train on; the target domain is
  the same digits with inverted contrast or heavy noise.
- :func:`digits_multitask` (part d): digits with two label columns derived from them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import autotransfer as at

# --- part (a): sentiment that needs the sentence's structure -------------------------------
# A clause is "<subject> was <adjective>", or its negation ("was not great" is negative).
# A sentence is one clause, or two of opposite polarity joined by "but" / "although": its
# label is the polarity of the main clause (after "but", the non-"although" one), which may
# come first or last. Both polarities' words occur equally often in contrast sentences, so
# a bag of words (what a linear probe on mean-pooled frozen features mostly sees) cannot
# tell them apart; the order and the connective decide.
POSITIVE = ("good great excellent wonderful superb delightful fantastic lovely brilliant "
            "pleasant enjoyable charming").split()
NEGATIVE = ("bad terrible awful horrible dreadful poor disappointing lousy unpleasant "
            "mediocre boring annoying").split()
SUBJECTS = ("the film", "the meal", "our stay", "the service", "this book", "the concert",
            "the hotel room", "the game", "the lecture", "the trip", "the coffee", "the show",
            "the music", "the staff", "the ending", "the price")
NEGATORS = ("not", "hardly", "never", "far from")
FORMS = ("single", "but", "although_first", "although_last")  # drawn equally often
NEGATED = 0.3  # share of clauses negated


def _clause(rng: random.Random, positive: bool) -> str:
    subject = rng.choice(SUBJECTS)
    if rng.random() < NEGATED:  # "not <opposite word>" carries the polarity
        word = rng.choice(NEGATIVE if positive else POSITIVE)
        return f"{subject} was {rng.choice(NEGATORS)} {word}"
    return f"{subject} was {rng.choice(POSITIVE if positive else NEGATIVE)}"


def _sentence(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    main, other = _clause(rng, positive), _clause(rng, not positive)
    form = rng.choice(FORMS)
    text = {"single": main, "but": f"{other}, but {main}",
            "although_first": f"although {other}, {main}",
            "although_last": f"{main}, although {other}"}[form]
    return text + ".", "positive" if positive else "negative"


def contrast_reviews(n_train: int = 160, n_valid: int = 200, n_test: int = 200,
                     seed: int = 0) -> tuple[at.data.Dataset, ...]:
    """(train, valid, test) of distinct sentences (no sentence is in two splits).

    Measured on MiniLM-L6 (max_length 32, batch 16, validation accuracy): a linear probe
    on frozen features 0.635 after 4 epochs (logistic regression on the frozen mean-pooled
    features of 300 training sentences: 0.67-0.70); a full fine-tune at lr 1e-4 0.87 after
    4 epochs (1.0 with 300 sentences and 6 epochs); LoRA r8 everywhere at 1e-3 0.70.
    """
    rng, seen, splits = random.Random(seed), set(), []
    for n in (n_train, n_valid, n_test):
        texts, labels = [], []
        while len(texts) < n:
            text, label = _sentence(rng)
            if text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(label)
        splits.append(at.data.from_texts(texts, labels))
    return tuple(splits)


# --- digits, as the demo builds them -------------------------------------------------------
def _digits(image_size: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """All 1,797 digits as uint8 (N, 3, S, S) (``at.data.demo``'s upsampling) and labels."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images * (255.0 / 16.0)).float()[:, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous(), d.target


def _split(y: np.ndarray, per_class: dict[str, int | None],
           seed: int) -> dict[str, np.ndarray]:
    """Disjoint, stratified, seeded index sets; ``None`` takes the rest of each class."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {k: [] for k in per_class}
    for c in np.unique(y):
        idx, start = rng.permutation(np.flatnonzero(y == c)), 0
        for name, n in per_class.items():
            stop = len(idx) if n is None else start + n
            if stop > len(idx):
                raise ValueError(f"class {c} has {len(idx)} digits, fewer than {per_class}")
            out[name] += idx[start:stop].tolist()
            start = stop
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in out.items()}


# --- part (b): the quickstart's data -------------------------------------------------------
def quickstart_digits(seed: int = 0) -> tuple[at.data.Dataset, at.data.Dataset,
                                              at.data.Dataset, torch.Tensor]:
    """(train, valid, test, transfer): studies/quickstart.toml's digits (32 px, 20 / 40 / 40
    per class, the same split as ``at.data.demo``) and the other 797 digits' images,
    unlabelled uint8 (N, 3, 32, 32), for a distillation transfer set."""
    train, valid, test = at.data.demo("digits", image_size=32, per_class=20,
                                      valid_per_class=40, test_per_class=40, seed=seed)
    x, _ = _digits(32)
    used = np.concatenate([train.index, valid.index, test.index])
    rest = np.setdiff1d(np.arange(len(x)), used)
    return train, valid, test, x[torch.from_numpy(rest)]


# --- part (c): a domain shift ----------------------------------------------------------------
SHIFTS = ("invert", "noise")  # beyond.py part c's targets; "dim" is adabn_frozen.py's
KINDS = (*SHIFTS, "dim")
DIM = (0.25, 96)  # "dim": contrast x 0.25 on a grey 96: a positive affine change of intensity
NOISE_STD = 0.35 * 255  # heavy: strokes stay visible to a person, not to clean features


def corrupt(x: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """The target domain's version of uint8 images ``x``: contrast inverted (white digits
    on black become black on white), dimmed (``DIM``), or Gaussian noise of ``NOISE_STD``
    per pixel (the same in the three channels, so the images stay grey)."""
    if kind == "invert":
        return 255 - x
    if kind == "dim":
        return (x.float() * DIM[0] + DIM[1]).round().to(torch.uint8)
    if kind == "noise":
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((len(x), 1, *x.shape[2:]), generator=gen) * NOISE_STD
        return (x.float() + noise).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"Unknown shift {kind!r}; accepted: {KINDS}.")


@dataclass
class DomainShift:
    """Train on ``train`` (clean, labelled); the target is ``kind``-corrupted digits."""

    kind: str
    train: at.data.Dataset  # clean, 20 per class
    source_valid: at.data.Dataset  # clean, 10 per class (a search without target labels)
    unlabeled: torch.Tensor  # target inputs, uint8 (N, 3, 32, 32), 60 per class, no labels
    target_valid: at.data.Dataset  # target, labelled, 5 per class: what searches choose on
    target_test: at.data.Dataset  # target, labelled, 50 per class: the reported figure
    source_test: at.data.Dataset  # clean, 20 per class: how much the shift costs


def digits_shift(kind: str = "invert", seed: int = 0, image_size: int = 32) -> DomainShift:
    """Disjoint splits of the digits (none shares an image) for one target ``kind``."""
    x, y = _digits(image_size)
    idx = _split(y, {"train": 20, "source_valid": 10, "unlabeled": 60, "target_valid": 5,
                     "target_test": 50, "source_test": 20}, seed)  # 165; the rarest has 174
    target = corrupt(x, kind, seed)

    def part(images: torch.Tensor, name: str) -> at.data.Dataset:
        i = torch.from_numpy(idx[name])
        return at.data.Dataset(images[i].contiguous(), y[idx[name]])

    return DomainShift(kind, part(x, "train"), part(x, "source_valid"),
                       target[torch.from_numpy(idx["unlabeled"])].contiguous(),
                       part(target, "target_valid"), part(target, "target_test"),
                       part(x, "source_test"))


# --- part (d): two targets from one data set ----------------------------------------------
# The digit itself and a second target derived from it or from the image; part (d) uses
# MULTITASK's two columns. "parity" shares the digit's features but groups them differently;
# "ink" (mean stroke intensity, 0-1) is a regression target read from the pixels.
MULTITASK = {"digit": "classification", "parity": "classification"}
COLUMNS = ("digit", "parity", "large", "ink")


def label_table(y: np.ndarray, x: torch.Tensor) -> Any:
    """A DataFrame of targets for digits ``y`` with images ``x``: digit (0-9), parity
    ("even" / "odd"), large ("yes" for 5-9) and ink (mean pixel value / 255)."""
    import pandas as pd

    return pd.DataFrame({
        "digit": y.astype(np.int64),
        "parity": np.where(y % 2 == 0, "even", "odd"),
        "large": np.where(y >= 5, "yes", "no"),
        "ink": (x[:, 0].float().mean(dim=(1, 2)) / 255.0).numpy().astype(np.float64),
    })


def digits_multitask(columns: tuple[str, ...] = tuple(MULTITASK), seed: int = 0,
                     per_class: int = 20, valid_per_class: int = 40,
                     test_per_class: int = 40) -> tuple[at.data.Dataset, ...]:
    """(train, valid, test) whose labels are ``columns`` of a :func:`label_table` (the
    table a multi-task search takes); :func:`single_task` gives one column's view."""
    x, y = _digits(32)
    idx = _split(y, {"train": per_class, "valid": valid_per_class, "test": test_per_class},
                 seed)
    table = label_table(y, x)[list(columns)]
    return tuple(at.data.Dataset(x[torch.from_numpy(i)].contiguous(),
                                 table.iloc[i].reset_index(drop=True))
                 for i in (idx["train"], idx["valid"], idx["test"]))


def single_task(data: at.data.Dataset, column: str) -> at.data.Dataset:
    """The same images with one column of the label table as their labels."""
    return at.data.Dataset(data.inputs, data.labels[column].to_numpy())
