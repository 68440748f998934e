"""Builds a random-weight ONNX MLP (784-512-512-10 by default, FP32, dynamic batch) with the onnx package.

    python examples/onnx_mlp/make_model.py examples/onnx_mlp/mlp.onnx

Used by the runtime tests and the benchmarks; nothing is downloaded.
"""

import itertools
import sys
from collections.abc import Sequence

import numpy as np


def build(path: str, sizes: Sequence[int] = (784, 512, 512, 10), seed: int = 0) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    previous = "input"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"h{i}"]))
        previous = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [previous], [f"r{i}"]))
            previous = f"r{i}"
    nodes.append(helper.make_node("Softmax", [previous], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, path)


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "mlp.onnx")
