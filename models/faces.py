"""num_faces: the YuNet face detector (OpenCV model zoo) when its weights are configured, else the
frontal-face Haar cascade that OpenCV ships (cv2.data), offline.

- ``detector = "yunet"``: OpenCV's YuNet (face_detection_yunet_2023mar.onnx, MIT; `curation models
  fetch` downloads it) run by onnxruntime on whole batches, on CUDA when onnxruntime has it. The input
  is the image letterboxed to ``input_size`` (pad right/bottom to a square, resize: the view nudenet
  reads at 320, so it is made once for both), in BGR as cv2.FaceDetectorYN feeds it; the outputs are
  decoded as FaceDetectorYN does (score = sqrt(cls * obj) >= ``score_threshold``, boxes from the
  stride-8/16/32 grids, cv2.dnn.NMSBoxes at ``nms_threshold`` on the integer boxes, ``top_k``), so the
  count equals ``len(cv2.FaceDetectorYN.detect(view))`` for the same file and view.
- ``detector = "opencv-haar"`` (the default: nothing to fetch): the cascade on the grayscale image as
  stored by the download stage (shorter side ~384 px); faces smaller than ``min_size`` pixels there are
  not counted. Fast to set up, slower to run, misses small and profile faces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from curation.storage import StorageOptions
from models import weights
from models.base import ImageTextBatch, ModelError, ViewSpec, as_numpy, file_field
from models.onnx_graph import batched_session, run_batched

CASCADE = "haarcascade_frontalface_default.xml"
FACE_DETECTORS = ("opencv-haar", "yunet", "none")
YUNET_STRIDES = (8, 16, 32)
YUNET_DIVISOR = 32  # FaceDetectorYN pads its input right/bottom to a multiple of this
CPU_CHUNK = 4  # images per onnxruntime run on the CPU (the fastest on one core)


@dataclass(frozen=True)
class FacesSpec:
    """[faces] of MODELS.toml; ``detector = "none"`` leaves num_faces null."""

    detector: str = "opencv-haar"
    weights: str | None = file_field(None)  # the YuNet ONNX file (detector = "yunet")
    # opencv-haar
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24
    # yunet: cv2.FaceDetectorYN's defaults
    input_size: int = 320
    score_threshold: float = 0.9
    nms_threshold: float = 0.3
    top_k: int = 5000

    def __post_init__(self) -> None:
        if self.detector not in FACE_DETECTORS:
            raise ValueError(f"detector must be one of {FACE_DETECTORS}")
        if self.detector == "yunet" and not self.weights:
            raise ValueError('detector = "yunet" needs weights = "face_detection_yunet_2023mar.onnx" (`curation models fetch DIR --only faces`)')
        if self.input_size < YUNET_DIVISOR:
            raise ValueError(f"input_size must be >= {YUNET_DIVISOR}")

    @property
    def enabled(self) -> bool:
        return self.detector != "none"


def face_counter(name: str, spec: FacesSpec, options: StorageOptions | None = None):
    """The counter ``spec.detector`` names."""
    if spec.detector == "yunet":
        return YuNetFaceCounter(name, spec, options)
    return HaarFaceCounter(name, spec)


class HaarFaceCounter:
    columns = ("num_faces",)
    views = (ViewSpec("gray"),)
    provides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __init__(self, name: str, spec: FacesSpec):
        self.name = name
        self.spec = spec
        self.cascade = None

    def describe(self) -> str:
        return f"OpenCV Haar cascade {CASCADE} (shipped with opencv)"

    def load(self, device: str) -> None:
        path = os.path.join(cv2.data.haarcascades, CASCADE)
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise ModelError(f"model {self.name!r}: OpenCV could not load {path}")
        self.cascade = cascade

    def count(self, gray: np.ndarray) -> int:
        faces = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.spec.scale_factor,
            minNeighbors=self.spec.min_neighbors,
            minSize=(self.spec.min_size, self.spec.min_size),
        )
        return int(len(faces))

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        return {self.columns[0]: np.array([self.count(g) for g in batch.view(self.views[0])], np.int32)}


class YuNetFaceCounter:
    columns = ("num_faces",)
    provides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __init__(self, name: str, spec: FacesSpec, options: StorageOptions | None = None):
        self.name = name
        self.spec = spec
        self.options = options
        self.views = (ViewSpec("letterbox", spec.input_size),)
        self.session = None
        self.batched = False

    def describe(self) -> str:
        return f"YuNet face detector {self.spec.weights} (onnxruntime, {self.spec.input_size} px letterbox)"

    def load(self, device: str) -> None:
        path = weights.local_path(self.name, self.spec.weights, self.options)
        side = _padded(self.spec.input_size)
        probe = np.random.default_rng(0).integers(0, 256, (2, 3, side, side)).astype(np.float32)
        try:
            self.session, self.batched = batched_session(path, device, probe)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            raise ModelError(f"model {self.name!r}: cannot load YuNet from {path}: {e}") from e
        names = {o.name for o in self.session.get_outputs()}
        missing = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES if f"{k}_{s}" not in names]
        if missing:
            raise ModelError(f"model {self.name!r}: {path} has no outputs {missing}: not a YuNet graph")
        self.input_name = self.session.get_inputs()[0].name

    def raw_outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs by name for uint8 RGB images of one size (N, H, W, 3), padded right/bottom
        to a multiple of 32 as FaceDetectorYN pads them."""
        n, height, width = pixels.shape[:3]
        x = np.zeros((n, 3, _padded(height), _padded(width)), np.float32)
        x[:, :, :height, :width] = pixels[..., ::-1].transpose(0, 3, 1, 2)  # BGR, as FaceDetectorYN feeds it
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, run_batched(self.session, x, self.batched, CPU_CHUNK), strict=True))

    def detect(self, pixels: np.ndarray, sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """Per letterboxed view, FaceDetectorYN's (faces, 15) rows (box x, y, w, h, 5 landmarks, score)
        for the view cut to the image's extent in it (``sizes``: decoded (width, height); else the
        whole view), padded to a multiple of 32. Views of one cut size run as one batch."""
        side = pixels.shape[1]
        cuts = [_cut(side, w, h) for w, h in sizes] if sizes else [(side, side)] * len(pixels)
        faces: list[np.ndarray] = [np.zeros((0, 15), np.float32)] * len(pixels)
        for cut in dict.fromkeys(cuts):
            rows = [i for i, c in enumerate(cuts) if c == cut]
            out = self.raw_outputs(pixels[rows, : cut[1], : cut[0]])
            for k, i in enumerate(rows):
                faces[i] = yunet_faces({name: v[k] for name, v in out.items()}, _padded(cut[0]), _padded(cut[1]), self.spec)
        return faces

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        pixels = as_numpy(batch.view(self.views[0]))
        return {self.columns[0]: np.array([len(f) for f in self.detect(pixels, batch.sizes)], np.int32)}


def _cut(side: int, width: int, height: int) -> tuple[int, int]:
    """(width, height) of the part of a ``side`` letterbox view that holds a width x height image, up to
    the next multiple of 32: the rest of the view is black, as FaceDetectorYN's padding. (extent + 1)
    scaled covers the row and column the linear resize blends with the black border."""
    longest = max(width, height, 1)
    return tuple(min(side, _padded(-(-(extent + 1) * side // longest))) for extent in (width, height))


def _padded(size: int) -> int:
    return ((size - 1) // YUNET_DIVISOR + 1) * YUNET_DIVISOR


def yunet_faces(outputs: dict[str, np.ndarray], pad_w: int, pad_h: int, spec: FacesSpec) -> np.ndarray:
    """FaceDetectorYN's postprocessing for one image's outputs (each (locations, channels)), vectorised
    with the same float32 arithmetic, candidate order and cv2.dnn.NMSBoxes call."""
    found = []
    for stride in YUNET_STRIDES:
        cols = pad_w // stride
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1).astype(np.float32)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1).astype(np.float32)
        score = np.sqrt(cls * obj)
        idx = np.flatnonzero(score >= np.float32(spec.score_threshold))
        if idx.size == 0:
            continue
        r, c = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
        s = np.float32(stride)
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[idx].astype(np.float32)
        kps = outputs[f"kps_{stride}"].reshape(-1, 10)[idx].astype(np.float32)
        w = np.exp(bbox[:, 2]) * s
        h = np.exp(bbox[:, 3]) * s
        x1 = (c + bbox[:, 0]) * s - w / np.float32(2)
        y1 = (r + bbox[:, 1]) * s - h / np.float32(2)
        marks = np.empty((idx.size, 10), np.float32)
        marks[:, 0::2] = (kps[:, 0::2] + c[:, None]) * s
        marks[:, 1::2] = (kps[:, 1::2] + r[:, None]) * s
        found.append(np.column_stack([x1, y1, w, h, marks, score[idx]]).astype(np.float32))
    if not found:
        return np.zeros((0, 15), np.float32)
    faces = np.concatenate(found)
    if len(faces) == 1:
        return faces
    # Rect2i(int(x), int(y), int(w), int(h)): truncation toward zero (kept within int32)
    boxes = np.clip(np.nan_to_num(faces[:, :4]), -(2**31), 2**31 - 1).astype(np.int64).tolist()
    kept = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), spec.score_threshold, spec.nms_threshold, 1.0, spec.top_k)
    return faces[np.asarray(kept, dtype=np.int64).reshape(-1)]
