"""num_faces: the batched YuNet counter pinned against cv2.FaceDetectorYN on the same graph and views,
the batch rewrite of fixed-batch graphs, and the Haar cascade as the default."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from models.base import ImageTextBatch, ModelError, ViewSpec
from models.faces import FacesSpec, HaarFaceCounter, YuNetFaceCounter, _cut
from models.images import decode_rgb, image_views, stack_views
from models.onnx_graph import batched_session, dynamic_batch, fixed_batch
from models.registry import REGISTRY
from models.weights.random_yunet import write_random_yunet, yunet_graph
from tests.conftest import photo_files, shared

# the released file, when a developer has fetched it (`curation models fetch DIR --only faces`)
REAL_YUNET = os.environ.get("CURATION_YUNET_ONNX")


@pytest.fixture(scope="module")
def yunet_file(tmp_path_factory) -> str:
    return write_random_yunet(str(tmp_path_factory.mktemp("yunet") / "yunet.onnx"))


def _stored(data: bytes, short_side: int = 384) -> bytes:
    """The image as the download stage stores it: shorter side 384, JPEG."""
    img = decode_rgb(data)
    scale = short_side / min(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _batch(images: list[bytes], views) -> ImageTextBatch:
    decoded = [decode_rgb(d) for d in images]
    per_image = [image_views(img, views) for img in decoded]
    return ImageTextBatch(texts=["x"] * len(images), views=stack_views(per_image, views), sizes=[img.size for img in decoded])


def _reference(path: str, view: np.ndarray, size: tuple[int, int], spec: FacesSpec) -> np.ndarray:
    """cv2.FaceDetectorYN on the part of the letterboxed view that holds the image, as OpenCV's demo
    calls it (BGR, input size = the image's)."""
    width, height = _cut(view.shape[0], *size)
    detector = cv2.FaceDetectorYN.create(path, "", (width, height), spec.score_threshold, spec.nms_threshold, spec.top_k)
    _, faces = detector.detect(np.ascontiguousarray(view[:height, :width, ::-1]))
    return np.zeros((0, 15), np.float32) if faces is None else faces


def _assert_equals_facedetectoryn(path: str, images: list[bytes]) -> int:
    spec = FacesSpec(detector="yunet", weights=path)
    counter = YuNetFaceCounter("faces", spec)
    counter.load("cpu")
    assert counter.batched
    batch = _batch(images, counter.views)
    view = batch.view(counter.views[0])
    counts = counter.score(batch)["num_faces"]
    found = counter.detect(view, batch.sizes)
    for i, (faces, size) in enumerate(zip(found, batch.sizes, strict=True)):
        expected = _reference(path, view[i], size, spec)
        assert counts[i] == len(expected), f"image {i}"
        np.testing.assert_allclose(faces, expected, rtol=0, atol=1e-3, err_msg=f"image {i}")
    return int(counts.sum())


def test_batched_yunet_gives_facedetectoryns_faces_on_real_photos(yunet_file):
    photos = [_stored(data) for _, data in photo_files(12)]
    shared("images", "photos")  # skip without the real photos (photo_files would give generated ones)
    assert _assert_equals_facedetectoryn(yunet_file, photos) > 0, "no faces at all: the comparison would be empty"


def test_batched_yunet_gives_facedetectoryns_faces_on_generated_pictures(yunet_file):
    from curation.sample.images import picture

    rng = np.random.default_rng(3)
    sizes = [(576, 384), (384, 576), (384, 384), (512, 384), (384, 683), (100, 37)]
    images = []
    for w, h in sizes:
        buf = io.BytesIO()
        picture(w, h, rng).save(buf, "JPEG", quality=90)
        images.append(buf.getvalue())
    assert _assert_equals_facedetectoryn(yunet_file, images) > 0


def test_the_view_beyond_the_cut_is_black_so_the_cut_loses_nothing():
    from curation.sample.images import picture

    rng = np.random.default_rng(5)
    for w, h in [(576, 384), (384, 577), (100, 37), (37, 100), (320, 320), (1000, 9)]:
        img = Image.fromarray(np.full((h, w, 3), 255, np.uint8)) if w * h < 5000 else picture(w, h, rng)
        spec = ViewSpec("letterbox", FacesSpec().input_size)
        pixels = image_views(img, [spec])[spec]
        cw, ch = _cut(pixels.shape[0], w, h)
        assert cw % 32 == 0 and ch % 32 == 0 or (cw, ch) == pixels.shape[:2][::-1]
        assert not pixels[ch:].any() and not pixels[:, cw:].any(), (w, h)


def test_a_fixed_batch_graph_is_rewritten_to_take_whole_batches(yunet_file, tmp_path):
    import onnx
    import onnxruntime as ort

    model = onnx.load(yunet_file)
    assert fixed_batch(model)  # as released: batch 1, Reshape targets [1, -1, C]
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 96, 128)).astype(np.float32)
    fixed = ort.InferenceSession(yunet_file, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type
        fixed.run(None, {"input": x})
    rewritten = ort.InferenceSession(dynamic_batch(model).SerializeToString(), providers=["CPUExecutionProvider"])
    together = rewritten.run(None, {"input": x})
    alone = [fixed.run(None, {"input": x[i : i + 1]}) for i in range(3)]
    for k, out in enumerate(together):
        np.testing.assert_allclose(out, np.concatenate([a[k] for a in alone]), rtol=1e-5, atol=1e-5)
    session, batched = batched_session(yunet_file, "cpu", x[:2])
    assert batched and session.run(None, {"input": x})[0].shape[0] == 3


def test_a_graph_exported_for_one_input_size_counts_images_of_every_cut(yunet_file, tmp_path):
    import onnx

    model = onnx.load(yunet_file)
    for i, size in ((2, 320), (3, 320)):
        model.graph.input[0].type.tensor_type.shape.dim[i].dim_value = size
    path = str(tmp_path / "yunet-320x320.onnx")
    onnx.save(model, path)
    photos = [_stored(data) for _, data in photo_files(6)]
    fixed = YuNetFaceCounter("faces", FacesSpec(detector="yunet", weights=path))
    fixed.load("cpu")
    free = YuNetFaceCounter("faces", FacesSpec(detector="yunet", weights=yunet_file))
    free.load("cpu")
    batch = _batch(photos, free.views)
    assert fixed.batched and fixed.score(batch)["num_faces"].tolist() == free.score(batch)["num_faces"].tolist()


def test_nudenets_graph_with_its_batch_fixed_runs_batched_after_the_rewrite(photos, tmp_path):
    """The same rewrite on a second real graph: nudenet's YOLOv8 with its batch dimension set to 1."""
    import onnx

    from models.nsfw import NudenetScorer, NudenetSpec, nudenet_model_path

    model = onnx.load(nudenet_model_path())
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "320n-batch1.onnx"
    onnx.save(model, str(path))
    shipped = NudenetScorer("nsfw_nudenet", NudenetSpec())
    shipped.load("cpu")
    pinned = NudenetScorer("nsfw_nudenet", NudenetSpec(weights=str(path)))
    pinned.load("cpu")
    assert shipped.batched and pinned.batched
    batch = _batch(photos[:4], shipped.views)
    assert pinned.detections(batch) == shipped.detections(batch)


def test_haar_is_the_default_and_yunet_runs_when_configured(yunet_file):
    from models.config import ModelsConfig

    entry = REGISTRY.entries["faces"]
    assert entry.default == FacesSpec() and FacesSpec().detector == "opencv-haar"
    assert entry.checkpoint.filename == "face_detection_yunet_2023mar.onnx" and entry.checkpoint.licence.startswith("MIT")
    default = {s.name: s for s in REGISTRY.build_scorers(ModelsConfig())}["faces"]
    assert isinstance(default, HaarFaceCounter)
    configured = REGISTRY.build_scorers(ModelsConfig(faces=FacesSpec(detector="yunet", weights=yunet_file)))
    assert isinstance({s.name: s for s in configured}["faces"], YuNetFaceCounter)
    with pytest.raises(ValueError, match="weights"):
        FacesSpec(detector="yunet")


def test_a_graph_without_yunets_outputs_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["out"])], "other",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, None, None])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "other.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="not a YuNet graph"):
        YuNetFaceCounter("faces", FacesSpec(detector="yunet", weights=str(path))).load("cpu")


@pytest.mark.skipif(not REAL_YUNET, reason="CURATION_YUNET_ONNX names no fetched face_detection_yunet_2023mar.onnx")
def test_real_yunet_counts_the_astronauts_face_like_facedetectoryn():
    with open(shared("images", "photos", "skimage-astronaut.png"), "rb") as f:
        astronaut = _stored(f.read())
    assert _assert_equals_facedetectoryn(REAL_YUNET, [astronaut]) == 1


def test_random_yunet_has_the_released_interface():
    model = yunet_graph()
    outputs = [o.name for o in model.graph.output]
    assert outputs == [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)]
    assert model.graph.input[0].name == "input"
