"""Techniques: what a trial does beyond plain fine-tuning, as plugins. :class:`Technique`
is the interface (``register_techniques``); :class:`Trial` is what one sees of a trial.
The built-in ones (``autotransfer_plugins.techniques``) register through the same hook;
the mechanics they use live here: ``adapters`` (LoRA, BitFit, norm) and ``domain``
(AdaBN, DANN)."""

from ..strategy.fields import Categorical, Float, Int, Where, spec
from ._base import Technique
from ._trial import Started, Trial, active, fit_space

__all__ = ["Categorical", "Float", "Int", "Started", "Technique", "Trial", "Where", "active",
           "fit_space", "spec"]
