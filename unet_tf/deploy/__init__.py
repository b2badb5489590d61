"""Deployment: the SavedModel for TF Serving and TFLite/LiteRT files, each proven against Keras."""
from ..errors import ExportError
from .export import ExportOptions, export_model, format_report
from .tflite import GPU_DELEGATE_OPS, TFLITE_VARIANTS

__all__ = ["ExportError", "ExportOptions", "GPU_DELEGATE_OPS", "TFLITE_VARIANTS", "export_model",
           "format_report"]
