"""Techniques: what a trial does beyond plain fine-tuning. :class:`Technique` is the
plugin interface (``register_techniques``); ``adapters`` and ``domain`` are the built-in
adapters and domain adaptation, not plugins yet."""

from ..strategy.fields import Categorical, Float, Int, Where, spec
from ._base import Technique, active

__all__ = ["Categorical", "Float", "Int", "Technique", "Where", "active", "spec"]
