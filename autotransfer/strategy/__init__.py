"""The transfer strategy: one point (``Strategy``), the searched ranges (``SearchSpace``), and
the reference points every study starts from (``baselines``)."""

from .space import Categorical, Float, Int, SearchSpace
from .strategy import Strategy, check_field

__all__ = ["Categorical", "Float", "Int", "SearchSpace", "Strategy", "check_field"]
