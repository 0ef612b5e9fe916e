"""Exporting trained models to other formats (ONNX: :mod:`klayer.export.onnx`)."""

from .onnx import OPSET, export_onnx, fold_batch_norm, onnx_model

__all__ = ["OPSET", "export_onnx", "fold_batch_norm", "onnx_model"]
