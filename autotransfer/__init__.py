"""autotransfer: search how to transfer a pretrained model to your task."""

from . import data, log
from .backbones import Backbone, HFBackbone, PackageWeights, Stage, TimmBackbone
from .backends import Backend, OptunaBackend, RayBackend
from .errors import (
    AutotransferError,
    ConfigError,
    DataError,
    DeviceError,
    ExportError,
    ModalityError,
    OptimisticValidation,
    PluginError,
    SearchFailed,
    StorageError,
    StrategyError,
    TrialFailed,
    UnknownNameError,
    WeightsUnavailableError,
)
from .heads._base import Head
from .hookspecs import hookimpl
from .plugins import (
    create_backbone,
    get_backbone,
    get_head,
    list_backbones,
    list_plugins,
    register_plugin,
)
from .predict.predictor import Predictor, load
from .search import search
from .selection.ranking import rank_backbones
from .strategy.space import Categorical, Float, Int, SearchSpace
from .strategy.strategy import Strategy
from .study.distill import Distillation
from .study.study import Study
from .techniques import Technique
from .training.model import TransferModel
from .training.runner import TrialResult, TrialSetup, run_trial

__version__ = "0.2.0"

__all__ = [
    "AutotransferError", "Backbone", "Backend", "OptunaBackend", "RayBackend",
    "SearchFailed", "ConfigError", "DataError", "DeviceError", "ExportError", "HFBackbone",
    "Head", "ModalityError", "OptimisticValidation", "PackageWeights", "PluginError",
    "Stage", "StorageError",
    "Strategy", "StrategyError", "TimmBackbone", "TransferModel", "TrialFailed",
    "TrialResult", "UnknownNameError", "WeightsUnavailableError", "create_backbone", "data",
    "get_backbone", "get_head", "hookimpl", "list_backbones", "list_plugins",
    "register_plugin", "run_trial", "search", "SearchSpace", "Float", "Int", "Categorical",
    "Study", "Predictor", "load", "rank_backbones", "Distillation", "Technique", "TrialSetup",
    "log",
]
