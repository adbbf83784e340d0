"""onnxruntime sessions for the detectors (nudenet, YuNet) and the ONNX NSFW classifiers.

On ``cuda``/``cuda:N`` a session runs on onnxruntime's CUDA provider for that GPU when the installed
onnxruntime has it (the ``gpu`` extra, onnxruntime-gpu), else on the CPU. On the CPU it uses as many
threads as torch does (the runner sets torch's to ``[annotate] cpu_threads``; OMP_NUM_THREADS=1 gives 1),
so N Spark tasks on N cores do not each start a thread per core.

A graph exported with its batch dimension fixed at 1 (YuNet's release), or its input size fixed, is
rewritten to take any batch and size: the input's batch, height and width and the outputs' batch and
location dimensions made symbolic, and every constant Reshape target that starts
with 1, on a tensor computed from the input's values, made to copy the batch dimension instead (0). ``batched_session`` checks the rewrite on two
different inputs against runs of one image each and falls back to one image per run if they differ.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def providers_for(device: str) -> list:
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        ordinal = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": ordinal}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def onnx_session(model: str | bytes, device: str):
    """A session for a model file (or its bytes) on ``device``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    providers = providers_for(device)
    if providers == ["CPUExecutionProvider"]:
        import torch

        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


def on_cuda(session) -> bool:
    return "CUDAExecutionProvider" in session.get_providers()


def run_batched(session, x: np.ndarray, batched: bool, cpu_chunk: int) -> list[np.ndarray]:
    """Every output of ``session`` for the inputs ``x`` (N, ...), concatenated over N. On CUDA the whole
    batch goes in one run; on the CPU ``cpu_chunk`` images per run keep the feature maps in cache (the
    results do not depend on the split); a graph that does not take batches gets one image per run."""
    step = (len(x) if on_cuda(session) else cpu_chunk) if batched else 1
    name = session.get_inputs()[0].name
    runs = [session.run(None, {name: x[i : i + step]}) for i in range(0, len(x), max(1, step))]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))] if runs else []


def fixed_batch(model) -> bool:
    """Whether the graph's first input fixes its batch dimension (or, for an image, its height or width)."""
    dim = model.graph.input[0].type.tensor_type.shape.dim
    return any(i < len(dim) and dim[i].HasField("dim_value") for i in (0, 2, 3))


def dynamic_batch(model):
    """A copy of ``model`` whose input and outputs take any batch size (and input height/width)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    dims = graph.input[0].type.tensor_type.shape.dim
    for i, name in ((0, "batch"), (2, "height"), (3, "width")):
        if i < len(dims):
            dims[i].Clear()
            dims[i].dim_param = name
    for value in graph.output:  # batch and locations follow the input; the last (channels) stays
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if i == 0 or dim.HasField("dim_value") and i < len(value.type.tensor_type.shape.dim) - 1:
                dim.Clear()
                dim.dim_param = "batch" if i == 0 else f"{value.name}_{i}"
    del graph.value_info[:]  # shapes inferred for batch 1 would be wrong now
    carries = _carrying_the_batch(graph)
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[0] not in carries or any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        target = node.input[1]
        if target in inits:
            _copy_batch_dim(inits[target])
        elif target in constants:
            _copy_batch_dim(next(a for a in constants[target].attribute if a.name == "value").t)
    return model


def _carrying_the_batch(graph) -> set[str]:
    """The tensors computed from the input's values (not only from its shape: a grid of anchors built
    from Shape(...) has no batch dimension, and its Reshape targets stay as they are)."""
    carries = {graph.input[0].name}
    for node in graph.node:  # ONNX nodes are topologically sorted
        if node.op_type not in ("Shape", "Size") and any(i in carries for i in node.input):
            carries.update(node.output)
    return carries


def _copy_batch_dim(tensor) -> None:
    """A Reshape target [1, ...] -> [0, ...]: 0 copies the input's dimension, here the batch."""
    from onnx import numpy_helper

    shape = numpy_helper.to_array(tensor)
    if shape.ndim == 1 and shape.size and shape[0] == 1:
        fixed = shape.copy()
        fixed[0] = 0
        tensor.CopyFrom(numpy_helper.from_array(fixed, tensor.name))


def batched_session(path: str, device: str, probe: np.ndarray) -> tuple[object, bool]:
    """(session, batched): a session that takes whole batches when the graph allows it.

    ``probe``: two different inputs (2, C, H, W) of the size the scorer feeds. The rewritten graph's
    outputs for both at once must equal the released graph's for each alone (or, where the released
    graph does not take that size, its own for each alone); else the released graph runs one image at a
    time (``batched`` False). A graph that runs neither way at that size is refused."""
    import onnx

    model = onnx.load(path)
    if not fixed_batch(model):
        return onnx_session(path, device), True
    original = onnx_session(path, device)
    name = original.get_inputs()[0].name
    alone = _runs(original, name, probe)
    try:
        session = onnx_session(dynamic_batch(model).SerializeToString(), device)
        together = session.run(None, {name: probe})
        alone = alone or _runs(session, name, probe)
    except Exception as e:  # noqa: BLE001 - any failure of the rewritten graph means: not batchable
        if alone is None:
            raise ValueError(f"{path} does not run on inputs of shape {probe.shape[1:]}: {e}") from e
        log.warning("%s: the graph does not run batched (%s); one image per run", path, e)
        return original, False
    same = alone is not None and all(
        np.allclose(t, np.concatenate([a[k] for a in alone]), rtol=1e-4, atol=1e-4) for k, t in enumerate(together)
    )
    if not same:
        if alone is None:
            raise ValueError(f"{path} does not run on inputs of shape {probe.shape[1:]}")
        log.warning("%s: batched outputs differ from one-image runs; one image per run", path)
        return original, False
    return session, True


def _runs(session, name: str, probe: np.ndarray) -> list | None:
    """The outputs for each probe input alone, or None where the session cannot run them."""
    try:
        return [session.run(None, {name: probe[i : i + 1]}) for i in range(len(probe))]
    except Exception:  # noqa: BLE001 - onnxruntime's own error types
        return None
