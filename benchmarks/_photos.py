"""Photo crops: which of ten scikit-image photographs or textures a crop was cut from.

Each picture is cut into a 4x4 grid of tiles, coloured like a chessboard: training crops
come from the white tiles, validation crops from the black ones, so no validation pixel was
seen in training and both cover the whole picture. A crop is a random square of 60-100%
of a tile's side, resized to ``image_size`` and made RGB (the grey pictures are repeated
over the three channels). Needs ``pip install scikit-image`` (the ``bench`` extra).
"""

from __future__ import annotations

import numpy as np

import autotransfer as at

# Large enough for a 4x4 grid of useful tiles; one of chelsea and cat (the same cat).
PICTURES = ("astronaut", "brick", "camera", "coffee", "coins", "grass", "gravel",
            "immunohistochemistry", "moon", "rocket")
GRID = 4


def _picture(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as exc:
        raise SystemExit(f"The photo task needs scikit-image ({exc}): "
                         "pip install 'autotransfer[bench]'") from exc
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def _crops(image: np.ndarray, parity: int, n: int, size: int,
           rng: np.random.Generator) -> list[np.ndarray]:
    import torch
    import torch.nn.functional as F

    h, w = image.shape[0] // GRID, image.shape[1] // GRID
    tiles = [(r, c) for r in range(GRID) for c in range(GRID) if (r + c) % 2 == parity]
    out = []
    for i in range(n):
        r, c = tiles[i % len(tiles)]
        side = int(min(h, w) * rng.uniform(0.6, 1.0))
        y = r * h + int(rng.integers(0, h - side + 1))
        x = c * w + int(rng.integers(0, w - side + 1))
        crop = torch.from_numpy(image[y:y + side, x:x + side]).permute(2, 0, 1)[None].float()
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)
        out.append(crop[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    return out


def photos(image_size: int = 64, per_class: int = 20, valid_per_class: int = 40,
           seed: int = 0) -> tuple[at.data.Dataset, at.data.Dataset]:
    """(train, valid): ``per_class`` crops of each picture from its white tiles, and
    ``valid_per_class`` from its black tiles."""
    rng = np.random.default_rng(seed)
    parts: dict[int, tuple[list, list]] = {0: ([], []), 1: ([], [])}
    for name in PICTURES:
        image = _picture(name)
        for parity, n in ((0, per_class), (1, valid_per_class)):
            crops = _crops(image, parity, n, image_size, rng)
            parts[parity][0].extend(crops)
            parts[parity][1].extend([name] * n)
    (xt, yt), (xv, yv) = parts[0], parts[1]
    return at.data.from_arrays(np.stack(xt), yt), at.data.from_arrays(np.stack(xv), yv)
