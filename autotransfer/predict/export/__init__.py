"""Exports for other runtimes, one module per kind: ``graph`` (ONNX, TorchScript),
``folders`` (timm and transformers folders); ``targets`` says what may be replaced."""

from ._export import FORMATS, export

__all__ = ["FORMATS", "export"]
