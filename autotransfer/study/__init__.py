"""Studies: the stored record (``record``), what acts on it (``study``: scores, refit,
distillation, report), warm starts from earlier studies (``prior``) and what a study was
made from (``identity``)."""

from .distill import Distillation
from .record import StudyRecord
from .study import Study

__all__ = ["Distillation", "Study", "StudyRecord"]
