"""Small ONNX models written with onnx.helper (no PyTorch needed), shaped like what
torch.onnx.export writes for CNN classifiers: NCHW, Conv with bias, BatchNormalization, Flatten or
Reshape heads. Weights are seeded random numbers, so a wrong transpose shows in the outputs."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Graph:
    """Collects nodes and initializers; `conv`, `bn`, ... return the name of the output tensor."""

    def __init__(self, input_shape, seed: int = 0, opset: int = 17, batch="N"):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.opset = opset
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *input_shape])
        self.n = 0

    def name(self, op: str) -> str:
        self.n += 1
        return f"/{op.lower()}_{self.n}/{op}"

    def const(self, value, name: str | None = None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape, scale: float = 0.3) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs, outputs: int = 1, **attrs):
        name = self.name(op)
        outs = [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    # -- layers

    def conv(self, x, cin, cout, k=3, stride=1, pad=1, group=1, bias=True, dilation=1):
        w = self.weight(cout, cin // group, k, k, scale=1.0 / np.sqrt(cin // group * k * k))
        inputs = [x, w] + ([self.weight(cout, scale=0.1)] if bias else [])
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                         group=group, dilations=[dilation, dilation])

    def bn(self, x, c):
        return self.node("BatchNormalization", [
            x, self.const((1 + 0.2 * self.rng.standard_normal(c)).astype(np.float32)),
            self.const((0.1 * self.rng.standard_normal(c)).astype(np.float32)),
            self.const((0.1 * self.rng.standard_normal(c)).astype(np.float32)),
            self.const((1 + 0.3 * self.rng.random(c)).astype(np.float32))], epsilon=1e-5)

    def relu(self, x):
        return self.node("Relu", [x])

    def gemm(self, x, cin, cout):
        return self.node("Gemm", [x, self.weight(cout, cin, scale=1 / np.sqrt(cin)), self.weight(cout, scale=0.1)],
                         transB=1)

    def model(self, output, out_shape, path=None):
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)
        graph = helper.make_graph(self.nodes, "g", [self.input], [out], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="edgesparse-tests")
        model.ir_version = 8
        onnx.checker.check_model(model)
        if path is not None:
            onnx.save(model, str(path))
        return model


# ----------------------------------------------------------------------------- the models


def residual_cnn(path, classes: int = 10, flatten_head: bool = False, size: int = 8, channels: int = 1):
    """conv-bn-relu, a residual block (Add), max pool, then GAP+Flatten+Gemm or Flatten+Gemm."""
    g = Graph((channels, size, size))
    x = g.relu(g.bn(g.conv("input", channels, 8, bias=False), 8))
    y = g.relu(g.bn(g.conv(x, 8, 8), 8))
    y = g.bn(g.conv(y, 8, 8), 8)
    x = g.relu(g.node("Add", [x, y]))
    x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.relu(g.conv(x, 8, 16))
    if flatten_head:
        x = g.node("Flatten", [x], axis=1)
        x = g.gemm(x, 16 * (size // 2) ** 2, classes)
    else:
        x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
        x = g.gemm(x, 16, classes)
    return g.model(x, ["N", classes], path)


def mobile_block(path):
    """Depthwise conv, ReLU6 (Clip), squeeze-excite (GAP, 1x1 convs, HardSigmoid, Mul), HardSwish,
    a Reshape head, and Softmax."""
    g = Graph((3, 16, 16), opset=18)
    x = g.node("Clip", [g.bn(g.conv("input", 3, 8, stride=2), 8), g.const(np.float32(0)), g.const(np.float32(6))])
    x = g.bn(g.conv(x, 8, 8, group=8), 8)                        # depthwise
    x = g.node("HardSwish", [x])
    s = g.node("GlobalAveragePool", [x])
    s = g.relu(g.conv(s, 8, 4, k=1, pad=0))
    s = g.node("HardSigmoid", [g.conv(s, 4, 8, k=1, pad=0)], alpha=1 / 6, beta=0.5)
    x = g.node("Mul", [x, s])
    x = g.conv(x, 8, 16, k=1, pad=0)
    x = g.node("ReduceMean", [x, g.const(np.array([2, 3], np.int64))], keepdims=1)
    x = g.node("Reshape", [x, g.const(np.array([-1, 16], np.int64))])
    x = g.node("Softmax", [g.gemm(x, 16, 5)], axis=1)
    return g.model(x, ["N", 5], path)


def concat_resize(path):
    """Two branches concatenated on channels, nearest and bilinear upsampling, Pad, AveragePool,
    LeakyRelu, Sigmoid/Tanh, a Split, a ConvTranspose and a MatMul + Add head."""
    g = Graph((2, 8, 8))
    a = g.node("LeakyRelu", [g.conv("input", 2, 4)], alpha=0.1)
    b = g.node("Tanh", [g.conv("input", 2, 4, k=1, pad=0)])
    x = g.node("Concat", [a, b], axis=1)                          # 8 channels
    x = g.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    up = g.node("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    bil = g.node("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32))], mode="linear",
                 coordinate_transformation_mode="half_pixel")
    x = g.node("Add", [up, g.node("Sigmoid", [bil])])
    x = g.node("Pad", [x, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], mode="constant")
    p, q = g.node("Split", [x, g.const(np.array([3, 5], np.int64))], outputs=2, axis=1)
    x = g.node("Concat", [g.conv(p, 3, 4), g.conv(q, 5, 4)], axis=1)
    x = g.node("ConvTranspose", [x, g.weight(8, 4, 2, 2), g.weight(4, scale=0.1)], kernel_shape=[2, 2],
               strides=[2, 2])
    x = g.relu(x)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    x = g.node("Add", [g.node("MatMul", [x, g.weight(4, 6)]), g.weight(6, scale=0.1)])
    return g.model(x, ["N", 6], path)


def channels_last_input(path):
    """What tf2onnx writes: an NHWC input transposed to NCHW first, a Reshape head."""
    g = Graph((8, 8, 3), opset=13)
    x = g.node("Transpose", ["input"], perm=[0, 3, 1, 2])
    x = g.relu(g.conv(x, 3, 8))
    x = g.relu(g.conv(x, 8, 8, stride=2))
    x = g.node("Transpose", [x], perm=[0, 2, 3, 1])               # back to NHWC, then flattened
    x = g.node("Reshape", [x, g.const(np.array([-1, 4 * 4 * 8], np.int64))])
    x = g.node("Softmax", [g.gemm(x, 128, 3)], axis=1)
    return g.model(x, ["N", 3], path)
