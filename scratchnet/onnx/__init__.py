"""ONNX export: ``sn.onnx.export(model, example_input, "model.onnx", opset=17)``; see export.py and ops.py.

The ``onnx`` package is needed only when exporting (``pip install -e ".[onnx]"``)."""
from .export import ExportError, build, export
from .ops import EMITTERS, UnsupportedOpError

__all__ = ["EMITTERS", "ExportError", "UnsupportedOpError", "build", "export"]
