"""num_faces with the frontal-face Haar cascade that OpenCV ships (cv2.data), offline.

It runs on the grayscale image as stored by the download stage (shorter side ~384 px), so faces
smaller than ``min_size`` pixels there are not counted. OpenCV's YuNet (cv2.FaceDetectorYN) is more
accurate but its ONNX file is not shipped with opencv-python, and SCRFD needs insightface's ONNX
weights: neither is supported (see the README).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from models.base import ImageTextBatch, ModelError, ViewSpec

CASCADE = "haarcascade_frontalface_default.xml"
FACE_DETECTORS = ("opencv-haar", "none")


@dataclass(frozen=True)
class FacesSpec:
    """[faces] of MODELS.toml; ``detector = "none"`` leaves num_faces null."""

    detector: str = "opencv-haar"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24

    def __post_init__(self) -> None:
        if self.detector not in FACE_DETECTORS:
            raise ValueError(f"detector must be one of {FACE_DETECTORS}")

    @property
    def enabled(self) -> bool:
        return self.detector != "none"


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
        import cv2

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
