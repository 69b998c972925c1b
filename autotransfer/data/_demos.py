"""``at.data.demo``: small real data sets that work offline, for examples and benchmarks.

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits, upsampled and made RGB.
- ``photos``: which of ten scikit-image photographs or textures a crop was cut from
  (``pip install 'autotransfer[photos]'``). Each picture is cut into a 4x4 grid of tiles
  coloured like a chessboard: training crops come from the white tiles, validation and
  test crops from the black ones, so no evaluated pixel was seen in training. A crop is a
  random square of 60-100% of a tile's side, resized to ``image_size``; grey pictures are
  repeated over the three channels.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError, UnknownNameError
from ._adapters import from_arrays
from ._dataset import Dataset
from ._sources import TensorImages

DEMOS = ("digits", "photos")
# Large enough for a 4x4 grid of useful tiles; chelsea, not also cat (the same cat).
PICTURES = ("astronaut", "brick", "camera", "coffee", "coins", "grass", "gravel",
            "immunohistochemistry", "moon", "rocket")
GRID = 4
PHOTOS_INSTALL = "pip install 'autotransfer[photos]'"


def demo(name: str = "digits", *, image_size: int | None = None, per_class: int = 20,
         valid_per_class: int | None = None, test_per_class: int | None = None,
         seed: int = 0) -> tuple[Dataset, ...]:
    """A built-in real data set that works offline, as (train, valid) or, with
    ``test_per_class``, (train, valid, test): disjoint, seeded, stratified.

    ``digits``: scikit-learn's 1,797 handwritten 8x8 digits, upsampled to ``image_size``
    (default 32) and made RGB; ``per_class`` labelled examples per class for training,
    then ``test_per_class`` held out for the test set, and the rest (or
    ``valid_per_class`` per class) for validation.

    ``photos``: 10 classes, one per scikit-image picture, crops resized to ``image_size``
    (default 64); ``per_class`` crops of each for training (from its white tiles),
    ``valid_per_class`` (default 40) for validation (its black tiles; with
    ``test_per_class``, the black tiles of even rows, and the test crops those of odd
    rows). Needs scikit-image: ``pip install 'autotransfer[photos]'``.

    Example:
        >>> train, valid = at.data.demo("photos", image_size=64)  # doctest: +SKIP
    """
    from ..checks import integer

    if name not in DEMOS:
        raise UnknownNameError("demo data set", name, DEMOS)
    image_size = integer("image_size", {"digits": 32, "photos": 64}[name]
                         if image_size is None else image_size, low=8, high=1024)
    per_class = integer("per_class", per_class, low=1)
    if valid_per_class is not None:
        valid_per_class = integer("valid_per_class", valid_per_class, low=1)
    n_test = 0 if test_per_class is None else integer("test_per_class", test_per_class, low=1)
    seed = integer("seed", seed, low=0)
    if name == "photos":
        return photos(image_size, per_class, 40 if valid_per_class is None else
                      valid_per_class, n_test, seed)
    return digits(image_size, per_class, valid_per_class, n_test, seed)


def digits(image_size: int, per_class: int, valid_per_class: int | None, n_test: int,
           seed: int) -> tuple[Dataset, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = resized(torch.from_numpy(d.images * (255.0 / 16.0))[:, None], image_size)
    x = x.expand(-1, 3, -1, -1).contiguous()
    y = d.target
    rng = np.random.default_rng(seed)
    train_idx, valid_idx, test_idx = [], [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if per_class + n_test >= len(idx):
            raise DataError(f"per_class={per_class} and test_per_class={n_test} leave no "
                            f"validation data: class {c} has {len(idx)} examples.")
        train_idx += idx[:per_class].tolist()
        test_idx += idx[per_class:per_class + n_test].tolist()
        rest = idx[per_class + n_test:]
        valid_idx += (rest if valid_per_class is None else rest[:valid_per_class]).tolist()
    full = Dataset(TensorImages(x), y)
    splits = [full.subset(sorted(train_idx)), full.subset(sorted(valid_idx))]
    return (*splits, full.subset(sorted(test_idx))) if n_test else tuple(splits)


def photos(image_size: int, per_class: int, valid_per_class: int, n_test: int,
           seed: int) -> tuple[Dataset, ...]:
    rng = np.random.default_rng(seed)
    # (white tiles, black tiles) or, with a test set, black tiles split by row parity
    kinds = [("white", per_class), ("black", valid_per_class)] if not n_test else [
        ("white", per_class), ("black-even", valid_per_class), ("black-odd", n_test)]
    parts: list[tuple[list, list]] = [([], []) for _ in kinds]
    for name in PICTURES:
        image = picture(name)
        for (tiles, n), (x, y) in zip(kinds, parts):
            x.extend(crops(image, tiles, n, image_size, rng))
            y.extend([name] * n)
    return tuple(from_arrays(np.stack(x), y) for x, y in parts)


def picture(name: str) -> np.ndarray:
    """One of scikit-image's pictures as uint8 RGB (H, W, 3)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise DataError(f"The 'photos' demo needs scikit-image ({exc}); install it with "
                        f"`{PHOTOS_INSTALL}`, or use demo('digits').") from exc
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def crops(image: np.ndarray, tiles: str, n: int, size: int,
          rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random square crops (uint8, (size, size, 3)) from ``image``'s ``tiles``
    ("white", "black", "black-even" or "black-odd" rows), taken from the tiles in turn."""
    h, w = image.shape[0] // GRID, image.shape[1] // GRID
    colour, _, rows = tiles.partition("-")
    cells = [(r, c) for r in range(GRID) for c in range(GRID)
             if (r + c) % 2 == (colour == "black") and (not rows or r % 2 == (rows == "odd"))]
    out = []
    for i in range(n):
        r, c = cells[i % len(cells)]
        side = int(min(h, w) * rng.uniform(0.6, 1.0))
        top = r * h + int(rng.integers(0, h - side + 1))
        left = c * w + int(rng.integers(0, w - side + 1))
        crop = torch.from_numpy(image[top:top + side, left:left + side]).permute(2, 0, 1)
        out.append(resized(crop[None], size)[0].permute(1, 2, 0).numpy())
    return out


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` on the 0-255 scale, resized to ``size`` (bilinear,
    antialiased) and rounded to uint8."""
    import torch.nn.functional as F

    x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)
