"""Pixel values: what an image's numbers mean, decided by its dtype, never by its values.

uint8 is 0-255, uint16 0-65535, bool 0/1 (as PIL's mode "1"), floats [0, 1]; other
integers (int8-int64, uint32, uint64) are read as 8-bit and must hold 0-255. A file's
scale is its declared bit depth (a 16-bit PNG or PGM is 0-65535 whatever it holds). What
cannot be an image at its dtype's scale (floats outside [0, 1], NaN, a 12-bit scan in an
int32 array) is refused with the range found and what is accepted: rescaling by the
values would decode one value differently in two images, or one pixel would change the
whole batch's scale.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

CHANNELS = (1, 3, 4)  # grayscale, RGB, RGBA (alpha dropped)
TOP = {"uint8": 255, "uint16": 65535, "bool": 1}  # the dtypes whose whole range is pixels
HALF_STEP = 0.5 / 255  # a float within half an 8-bit step of [0, 1] rounds into 0-255
ACCEPTED = ("Accepted: uint8 0-255, uint16 0-65535, float in [0, 1], or other integers "
            "holding 0-255")
_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def pixels(x: Any) -> tuple[torch.Tensor, str]:
    """``x`` as a tensor holding its values exactly, and its dtype's name (its scale)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        name = str(t.dtype).removeprefix("torch.")
        if t.dtype in (getattr(torch, "uint16", None), getattr(torch, "uint32", None),
                       getattr(torch, "uint64", None)):
            t = t.to(torch.int64)  # few ops take them; the values fit
        return t, name
    a = np.asarray(x)
    name = a.dtype.name
    if a.dtype.kind not in "biufc":
        raise DataError(f"Images must be numeric arrays, but got an array of dtype {name}"
                        f"{' (for images of varied sizes give a list)' if name == 'object' else ''}"
                        f". {ACCEPTED}.")
    if a.dtype.kind in "biuf" and not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype.kind == "u" and a.dtype.itemsize > 1:
        a = a.astype(np.int64)
    with warnings.catch_warnings():  # a read-only array (PIL's) is only read here
        warnings.simplefilter("ignore", UserWarning)
        return torch.as_tensor(a), name


def to_uint8(t: torch.Tensor, where: str = "images", dtype: str | None = None) -> torch.Tensor:
    """``(N, C, H, W)`` numeric, C in 1/3/4 -> uint8 ``(N, 3, H, W)``, scaled by ``dtype``
    (the original dtype's name, from :func:`pixels`; default: the tensor's)."""
    name = dtype or str(t.dtype).removeprefix("torch.")
    if t.dtype.is_complex or not (t.dtype.is_floating_point or t.dtype in _INTS
                                  or t.dtype == torch.bool):
        raise DataError(f"{where}: images must be numeric arrays, but got dtype {name}. "
                        f"{ACCEPTED}.")
    if t.shape[1] == 4:
        t = t[:, :3]  # drop alpha
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return _scaled(t, where, name).contiguous()


def _scaled(t: torch.Tensor, where: str, name: str) -> torch.Tensor:
    if name == "uint8":
        return t
    if name == "bool":
        return t.to(torch.uint8) * 255
    if t.dtype.is_floating_point:
        return _floats(t, where, name)
    lo, hi = (int(v) for v in torch.aminmax(t)) if t.numel() else (0, 0)
    top = TOP.get(name, 255)
    if lo < 0 or hi > top:
        fix = ("negative values are not pixels: give the images before any normalisation"
               if lo < 0 else "cast them to uint16 if they are 16-bit pixels (0-65535), or "
               "scale them to float in [0, 1]")
        raise DataError(f"{where}: {name} images are read as {'16' if top > 255 else '8'}-bit "
                        f"(0-{top}), but hold values in [{lo}, {hi}]; {fix}. {ACCEPTED}.")
    if top == 255:
        return t.to(torch.uint8)
    return (t.to(torch.float32) * (255 / top)).round().to(torch.uint8)


def _floats(t: torch.Tensor, where: str, name: str) -> torch.Tensor:
    t = t.float()
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise DataError(f"{where}: {bad} pixel value(s) are NaN or infinite; images must be "
                        f"finite. {ACCEPTED}.")
    lo, hi = (float(v) for v in torch.aminmax(t)) if t.numel() else (0.0, 0.0)
    if lo < -HALF_STEP or hi > 1 + HALF_STEP:
        if lo >= -0.1 and hi <= 1.1:
            fix = "clip them to [0, 1] (e.g. x.clip(0, 1): a resize can overshoot)"
        elif lo < 0:
            fix = ("give them before mean/std normalisation: each backbone's own "
                   "normalisation is applied for you")
        else:
            fix = "pass uint8 0-255 or divide by 255" if hi <= 255 else "scale them to [0, 1]"
        raise DataError(f"{where}: float images must lie in [0, 1]; got values in "
                        f"[{lo:.4g}, {hi:.4g}] ({name}): {fix}. {ACCEPTED}.")
    return (t * 255).round().clamp(0, 255).to(torch.uint8)


def image_tensor(x: Any, where: str = "image") -> torch.Tensor:
    """One image (HW, CHW or HWC array or tensor; or PIL) -> uint8 ``(3, H, W)``."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return pil_tensor(x, where)
    t, name = pixels(x)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise DataError(f"{where}: an image must be (H, W), (C, H, W) or (H, W, C), but got "
                        f"shape {tuple(t.shape)}.")
    if t.shape[0] not in CHANNELS and t.shape[-1] in CHANNELS:
        t = t.permute(2, 0, 1)
    if t.shape[0] not in CHANNELS:
        raise DataError(f"{where}: images must have 1, 3 or 4 channels, but got shape "
                        f"{tuple(t.shape)}.")
    return to_uint8(t[None], where, name)[0]


def rgb(im: Any, where: str = "image") -> Any:
    """An RGB PIL image; 16-bit, 32-bit and float images are scaled by their bit depth."""
    from PIL import Image

    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        arr = np.asarray(im)
        if im.mode == "I" and _declared_bits(im) == 16:  # a 16-bit file PIL widened
            lo, hi = int(arr.min(initial=0)), int(arr.max(initial=0))
            if lo < 0 or hi > 65535:
                raise DataError(f"{where}: a 16-bit image holds values in [{lo}, {hi}]; "
                                f"16-bit pixels must lie in 0-65535.")
            arr = arr.astype(np.uint16)
        t, name = pixels(arr)
        chw = to_uint8(t[None, None], where, name)[0]
        im = Image.fromarray(chw.permute(1, 2, 0).contiguous().numpy())
    try:
        return im.convert("RGB")
    except ValueError as exc:  # a mode PIL cannot turn into RGB ("La", ...)
        raise DataError(f"{where}: PIL mode {im.mode!r} cannot be converted to RGB ({exc}); "
                        f"give RGB, RGBA, L, P, I;16 or F images.") from exc


def _declared_bits(im: Any) -> int | None:
    """The bit depth a file declares for its 32-bit ("I") pixels: PIL widens 16-bit PGM
    (scaled to 0-65535) and old 16-bit PNGs to "I"; a TIFF says in BitsPerSample."""
    if im.format in ("PNG", "PPM"):
        return 16
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258, (None,))
        return bits[0] if isinstance(bits, tuple) else bits
    return None


def pil_tensor(im: Any, where: str = "image") -> torch.Tensor:
    """A PIL image -> uint8 ``(3, H, W)`` (its layout is known: no guessing)."""
    return torch.from_numpy(np.array(rgb(im, where))).permute(2, 0, 1).contiguous()


def to_pil(chw: torch.Tensor) -> Any:
    from PIL import Image

    return Image.fromarray(chw.permute(1, 2, 0).contiguous().numpy())


def as_pil(x: Any, where: str) -> Any:
    """A PIL image, a ``(C, H, W)``/``(H, W, C)``/``(H, W)`` array or tensor -> RGB PIL."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return rgb(x, where)
    if isinstance(x, (str, Path)):
        return open_image(str(x))
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return to_pil(image_tensor(x, where))
    raise DataError(f"{where}: expected an image (PIL image, array or tensor, or a file path), "
                    f"but got {type(x).__name__}.")


def open_image(path: str, size_hint: int | None = None) -> Any:
    """An RGB image from a file, EXIF orientation applied; a bad file names itself."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if size_hint and im.format == "JPEG":
                im.draft("RGB", (size_hint, size_hint))  # decode at 1/2, 1/4 or 1/8 scale
            return rgb(ImageOps.exif_transpose(im), f"image {path!r}")
    except DataError:
        raise  # a scale it cannot be read at: already says so (DataError is a ValueError)
    except Image.DecompressionBombError as exc:
        raise DataError(too_large(path, exc)) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # on_error="skip" checks headers when the data set is built; this file's header
        # was fine and its pixels are not, so only fixing or removing it helps.
        raise DataError(f"Cannot read image {path!r}: {type(exc).__name__}: {exc}. Its "
                        f"header is valid but its data is not: fix or remove the file.") from exc


def too_large(path: str, exc: Exception) -> str:
    """Why a file over PIL's decompression-bomb limit is refused, and what to do."""
    from PIL import Image

    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return (f"Image {path!r} is too large to decode: {exc} The limit is {limit:,} pixels "
            f"(PIL.Image.MAX_IMAGE_PIXELS x 2, a guard against decompression bombs); give "
            f"a smaller image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file.")


def check_image_file(path: str) -> str | None:
    """Why ``path`` is not a readable image (header only, no decode), or None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format not in ("JPEG", "PNG"):  # their headers are checked by open
                im.verify()
        return None
    except Image.DecompressionBombError as exc:
        return too_large(path, exc)
    except Exception as exc:  # PIL raises many kinds for garbage
        return f"{type(exc).__name__}: {exc}"
