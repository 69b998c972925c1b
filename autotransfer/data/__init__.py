"""Data sources: lazy datasets over folders, tables of paths, HF and torch datasets, arrays.

A :class:`Dataset` references its inputs and decodes them when a loader reads them, so
its memory grows with the number of items, not with their pixels.

Example:
    >>> import numpy as np, autotransfer as at
    >>> ds = at.data.from_arrays(np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1])
    >>> ds.modality, tuple(ds.inputs.shape)
    ('image', (4, 3, 8, 8))
"""

from ._adapters import (
    from_arrays,
    from_csv,
    from_folder,
    from_hf,
    from_pandas,
    from_texts,
    from_torch,
    to_uint8_images,
)
from ._dataset import Dataset
from ._demos import DEMOS, demo
from ._sources import IMAGE_SUFFIXES, Source

__all__ = [
    "DEMOS", "Dataset", "IMAGE_SUFFIXES", "Source", "demo", "from_arrays", "from_csv",
    "from_folder", "from_hf", "from_pandas", "from_texts", "from_torch", "to_uint8_images",
]
