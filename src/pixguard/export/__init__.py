"""Export models to ONNX, TorchScript and OpenVINO folders that load anywhere."""

from ._export import EXPORT_FORMATS, ExportResult, export_model

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_model"]
