"""NSFW scores with onnxruntime (models.onnx_graph: whole batches, on CUDA with the ``gpu`` extra).

- ``nsfw_score_nudenet`` (on by default, offline): the YOLOv8 detector nudenet ships (320n.onnx) with
  nudenet's own preprocessing (pad right/bottom to a square, resize to 320, / 255, channels in the order
  NudeDetector.detect(path) gives them: BGR) and its own postprocessing (per location the best class
  if its probability is >= 0.2, then class-agnostic NMS at score 0.25 / IoU 0.45). The score is the highest
  score ``NudeDetector.detect`` reports for an exposed-body-part class (the classes below), 0 when it
  reports none: 0 or a value in [0.25, 1].
- ``nsfw_score_opennsfw2`` / ``nsfw_score_gantman`` when their weights are configured, as ONNX exports of
  the Keras models (tf2onnx): Yahoo open_nsfw as packaged by opennsfw2 (its preprocess_image: 256x256
  bilinear, a JPEG save and reload, centre 224, BGR minus (104, 117, 123); score = P(nsfw), output index 1) and GantMan's nsfw_model MobileNetV2 224 (RGB / 255;
  score = P(hentai) + P(porn) + P(sexy) of drawings/hentai/neutral/porn/sexy). The input layout (NHWC as
  tf2onnx writes it, or NCHW) is read from the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from curation.storage import StorageOptions
from models import weights
from models.base import ImageTextBatch, ModelError, ViewSpec, as_numpy, file_field
from models.onnx_graph import batched_session, onnx_session, run_batched

NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)  # fmt: skip
NUDENET_EXPLICIT = ("BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED")
GANTMAN_CLASSES = ("drawings", "hentai", "neutral", "porn", "sexy")
GANTMAN_NSFW = ("hentai", "porn", "sexy")
OPENNSFW2_MEAN_BGR = (104.0, 117.0, 123.0)
# nudenet's _postprocess: a location counts when its best class has at least this probability;
# NMSBoxes then keeps boxes scoring at least NUDENET_NMS_SCORE, suppressing overlaps above NUDENET_NMS_IOU
NUDENET_MIN_SCORE = 0.2
NUDENET_NMS_SCORE = 0.25
NUDENET_NMS_IOU = 0.45
NUDENET_CPU_CHUNK = 8  # images per onnxruntime run on the CPU (the fastest on one core)


@dataclass(frozen=True)
class OnnxSpec:
    """[nsfw_opennsfw2] / [nsfw_gantman] of MODELS.toml: an ONNX export of the Keras model."""

    weights: str = file_field()


@dataclass(frozen=True)
class NudenetSpec:
    """[nsfw_nudenet] of MODELS.toml; on by default with the detector the nudenet package ships."""

    enabled: bool = True
    weights: str | None = file_field(None)  # default: the 320n.onnx inside the nudenet package
    image_size: int = 320


def nudenet_model_path() -> str:
    import nudenet

    return os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")


class NudenetScorer:
    columns = ("nsfw_score_nudenet",)
    provides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __init__(self, name: str, spec: NudenetSpec, options: StorageOptions | None = None):
        self.name = name
        self.spec = spec
        self.options = options
        self.views = (ViewSpec("letterbox", spec.image_size),)
        self.session = None
        self.batched = False
        self.explicit = np.array([NUDENET_LABELS.index(c) for c in NUDENET_EXPLICIT])

    @property
    def weights_uri(self) -> str:
        return self.spec.weights or nudenet_model_path()

    def describe(self) -> str:
        return f"nudenet detector {'(shipped 320n.onnx)' if not self.spec.weights else self.spec.weights}"

    def load(self, device: str) -> None:
        size = self.spec.image_size
        probe = np.random.default_rng(0).random((2, 3, size, size), np.float32)
        path = weights.local_path(self.name, self.weights_uri, self.options)
        self.session, self.batched = batched_session(path, device, probe)  # the shipped graph takes any batch
        self.input_name = self.session.get_inputs()[0].name

    def raw_outputs(self, pixels: np.ndarray) -> np.ndarray:
        """The model's (N, 4 + classes, locations) output for letterboxed uint8 RGB views."""
        # channels reversed: what NudeDetector.detect(path) feeds its model (imread BGR, then a
        # COLOR_RGBA2BGR swap and blobFromImage(swapRB=True) swap again)
        x = np.ascontiguousarray(pixels[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        out = run_batched(self.session, x, self.batched, NUDENET_CPU_CHUNK)[0]
        if out.ndim != 3 or out.shape[1] != 4 + len(NUDENET_LABELS):
            raise ModelError(f"model {self.name!r}: expected {4 + len(NUDENET_LABELS)} output rows, got {out.shape}")
        return out

    def detections(self, batch: ImageTextBatch) -> list[list[tuple[str, float]]]:
        """Per image, the (class, score) pairs NudeDetector.detect reports, in its order."""
        pixels = as_numpy(batch.view(self.views[0]))
        if len(pixels) == 0:
            return []
        out = self.raw_outputs(pixels)
        sizes = batch.sizes or [(self.spec.image_size, self.spec.image_size)] * len(pixels)
        return [_nudenet_detections(o, w, h, self.spec.image_size) for o, (w, h) in zip(out, sizes, strict=True)]

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        explicit = set(NUDENET_EXPLICIT)
        scores = [max((s for c, s in found if c in explicit), default=0.0) for found in self.detections(batch)]
        return {self.columns[0]: np.array(scores, np.float32).clip(0.0, 1.0)}


def _nudenet_detections(output: np.ndarray, width: int, height: int, model_size: int) -> list[tuple[str, float]]:
    """nudenet's ``_postprocess`` for one image's (4 + classes, locations) output, vectorised: the same
    candidates, the same float32 box arithmetic and the same cv2.dnn.NMSBoxes call, so the same result."""
    rows = output.T  # (locations, 4 + classes)
    classes = rows[:, 4:]
    best = classes.max(axis=1)
    keep = np.flatnonzero(best >= NUDENET_MIN_SCORE)
    if keep.size == 0:
        return []
    class_ids = classes[keep].argmax(axis=1)
    side = max(width, height)  # the letterboxed square: original size + padding
    x, y, w, h = (rows[keep, i] for i in range(4))
    x = (x - w / 2) * side / model_size
    y = (y - h / 2) * side / model_size
    w = w * side / model_size
    h = h * side / model_size
    x = np.clip(x, 0, width)
    y = np.clip(y, 0, height)
    w = np.minimum(w, width - x)
    h = np.minimum(h, height - y)
    boxes = np.stack([x, y, w, h], axis=1).astype(np.float64).tolist()
    scores = best[keep].astype(np.float64).tolist()
    kept = cv2.dnn.NMSBoxes(boxes, scores, NUDENET_NMS_SCORE, NUDENET_NMS_IOU)
    return [(NUDENET_LABELS[class_ids[i]], float(best[keep][i])) for i in np.asarray(kept, dtype=np.int64).reshape(-1)]


def jpeg_round_trip(rgb: np.ndarray) -> np.ndarray:
    """opennsfw2's (and Yahoo's classify_nsfw.py's) step after the 256x256 bilinear resize: save as JPEG
    with Pillow's defaults and read it back, for the compression artefacts the model was trained with."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


class OnnxNsfwScorer:
    """opennsfw2 or GantMan, chosen by ``preset``."""

    provides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __init__(self, name: str, preset: str, spec: OnnxSpec, options: StorageOptions | None = None):
        if preset not in ("opennsfw2", "gantman"):
            raise ModelError(f"unknown NSFW preset {preset!r}")
        self.name = name
        self.preset = preset
        self.spec = spec
        self.options = options
        self.columns = (f"nsfw_score_{preset}",)
        self.views = (ViewSpec("stretch", 256) if preset == "opennsfw2" else ViewSpec("stretch_nearest", 224),)
        self.session = None

    def describe(self) -> str:
        return f"{self.preset} ONNX from {self.spec.weights}"

    def load(self, device: str) -> None:
        self.session = onnx_session(weights.local_path(self.name, self.spec.weights, self.options), device)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.nhwc = len(inp.shape) == 4 and inp.shape[-1] == 3

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        if self.preset == "opennsfw2":
            pixels = np.stack([jpeg_round_trip(p) for p in pixels]) if len(pixels) else pixels
        x = pixels.astype(np.float32)
        if self.preset == "opennsfw2":
            off = (x.shape[1] - 224) // 2
            x = x[:, off : off + 224, off : off + 224, ::-1] - np.float32(OPENNSFW2_MEAN_BGR)
        else:
            x = x / np.float32(255.0)
        return np.ascontiguousarray(x if self.nhwc else x.transpose(0, 3, 1, 2))

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        pixels = as_numpy(batch.view(self.views[0]))
        if len(pixels) == 0:
            return {self.columns[0]: np.zeros(0, np.float32)}
        probs = self.session.run(None, {self.input_name: self.preprocess(pixels)})[0]
        if self.preset == "opennsfw2":
            if probs.shape[-1] != 2:
                raise ModelError(f"model {self.name!r}: opennsfw2 gives 2 probabilities, got shape {probs.shape}")
            score = probs[:, 1]
        else:
            if probs.shape[-1] != len(GANTMAN_CLASSES):
                raise ModelError(f"model {self.name!r}: GantMan gives {len(GANTMAN_CLASSES)} probabilities, got {probs.shape}")
            score = probs[:, [GANTMAN_CLASSES.index(c) for c in GANTMAN_NSFW]].sum(axis=1)
        return {self.columns[0]: np.clip(score, 0.0, 1.0).astype(np.float32)}
