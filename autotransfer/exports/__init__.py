"""The export formats behind :func:`autotransfer.export.export`, one module per concept:
:mod:`.common` (the model as one CPU module, sample batches, the faithfulness check and the
JSON description), :mod:`.targets` (which existing files an export may replace),
:mod:`.graph` (ONNX and TorchScript files) and :mod:`.folders` (timm and transformers
folders). Every export writes temporary siblings, checks them, then renames them into place.
"""
