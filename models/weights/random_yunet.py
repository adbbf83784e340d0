"""A YuNet ONNX graph with random weights: the layers of OpenCV's face_detection_yunet_2023mar.onnx
(libfacedetection.train's ``yunet_n``: YuNetBackbone, TFPN neck, YuNet_Head with 5 keypoints) and
its interface (input ``input``, BGR 0-255 NCHW; outputs ``cls_8`` ... ``kps_32`` flattened per stride
location), batch norms folded into the convolutions as in the released file, the batch fixed at 1.

For timing (bench/annotate.py) and for the tests that pin the batched detector against
cv2.FaceDetectorYN, which runs any graph with this interface. Its detections are meaningless.
"""

from __future__ import annotations

import numpy as np

# yunet_n: stage channels, the stages followed by a 2x2 max pool, the stages the neck reads
STAGES = ((3, 16, 16), (16, 64), (64, 64), (64, 64), (64, 64), (64, 64))
POOLED_AFTER = (0, 2, 3, 4)
FEATURES = (3, 4, 5)
STRIDES = (8, 16, 32)
HEAD_OUTPUTS = (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))


class _Graph:
    def __init__(self, rng: np.random.Generator, score_bias: float):
        self.rng = rng
        self.score_bias = score_bias
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: float = 0.0, gain: float = 1.0) -> str:
        fan_in = cin // groups * k * k
        w = (self.rng.standard_normal((cout, cin // groups, k, k)) * gain * np.sqrt(1.5 / fan_in)).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.05 + bias).astype(np.float32)
        return self.node("Conv", [x, self.const(w, "w"), self.const(b, "b")], kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, group=groups)

    def dp_unit(self, x: str, cin: int, cout: int, relu: bool = True, bias: float = 0.0, gain: float = 1.0) -> str:
        """ConvDPUnit: 1x1 conv, depthwise 3x3 conv (its batch norm folded in), ReLU."""
        y = self.conv(self.conv(x, cin, cout, 1), cout, cout, 3, groups=cout, bias=bias, gain=gain)
        return self.node("Relu", [y]) if relu else y

    def flatten(self, x: str, channels: int, output: str) -> None:
        """(1, C, H, W) -> (1, H*W, C), the shape FaceDetectorYN reads."""
        from onnx import helper

        t = self.node("Transpose", [x], perm=[0, 2, 3, 1])
        self.nodes.append(helper.make_node("Reshape", [t, self.const(np.array([1, -1, channels], np.int64), "shape")], [output]))


def yunet_graph(seed: int = 0, score_bias: float = -1.0):
    """The random-weight YuNet as an onnx.ModelProto; ``score_bias`` raises the cls/obj logits so some
    locations pass FaceDetectorYN's 0.9 threshold."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph(np.random.default_rng(seed), score_bias)
    x = "input"
    feats = []
    for i, channels in enumerate(STAGES):
        if i == 0:
            cin, mid, cout = channels
            x = g.node("Relu", [g.conv(x, cin, mid, 3, stride=2, gain=1 / 128)])  # pixels are 0..255
            x = g.dp_unit(x, mid, cout)
        else:
            cin, cout = channels
            x = g.dp_unit(g.dp_unit(x, cin, cin), cin, cout)
        if i in FEATURES:
            feats.append(x)
        if i in POOLED_AFTER:
            x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    for i in range(len(feats) - 1, 0, -1):  # TFPN: top-down, nearest 2x upsampling
        feats[i] = g.dp_unit(feats[i], 64, 64)
        up = g.node("Resize", [feats[i], "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
        feats[i - 1] = g.node("Add", [feats[i - 1], up])
    feats[0] = g.dp_unit(feats[0], 64, 64)
    outputs = []
    for stride, feat in zip(STRIDES, feats, strict=True):
        shared = g.dp_unit(feat, 64, 64)
        for kind, channels in HEAD_OUTPUTS:
            score = kind in ("cls", "obj")
            # box and landmark offsets kept small (exp(w) of a random output would overflow)
            y = g.dp_unit(shared, 64, channels, relu=False, bias=score_bias if score else 0.0, gain=1.0 if score else 0.01)
            if score:
                y = g.node("Sigmoid", [y])
            g.flatten(y, channels, f"{kind}_{stride}")
    for kind, channels in HEAD_OUTPUTS:
        for stride in STRIDES:
            outputs.append(helper.make_tensor_value_info(f"{kind}_{stride}", TensorProto.FLOAT, [1, None, channels]))
    graph = helper.make_graph(
        g.nodes, "yunet_random", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, None, None])], outputs, g.inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="curation-random-yunet")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_random_yunet(path: str, seed: int = 0, score_bias: float = -1.0) -> str:
    import onnx

    onnx.save(yunet_graph(seed, score_bias), path)
    return path
