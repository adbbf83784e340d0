"""The scorer interface: load once per worker, score a batch, name the columns it fills.

A batch carries the decoded images once, each *view* (a resize/crop the models need) computed once
and shared by every scorer that asks for it, and a ``features`` dict through which one scorer hands an
embedding to the heads that need it (the ViT-L/14 image embedding -> the aesthetic head), so no image
goes through the same network twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from curation.errors import CurationError


class ModelError(CurationError, ValueError):
    """A model cannot be built or loaded (bad architecture name, wrong checkpoint shape, ...): a
    configuration problem, reported by the CLI as a one-line error."""


class MissingWeightsError(ModelError, FileNotFoundError):
    """A configured model's weight file does not exist; the message names the model and the path."""


FILE = "file"  # a path or URI; a relative one is relative to the MODELS.toml folder
ARCH = "arch"  # an architecture name, or (ending in .json) a model config file, then a FILE


def file_field(default: Any = dataclasses.MISSING, kind: str = FILE) -> Any:
    """A spec field that names a file: MODELS.toml resolves it, ``check_weights`` checks that it exists."""
    return field(default=default, metadata={"file": kind})


def spec_files(spec: object) -> list[tuple[str, str]]:
    """(field, value) of every file a spec names, the ``weights`` field first, then the others in field
    order; an ``ARCH`` field only when it names a .json file, unset fields not at all."""
    found = []
    for f in dataclasses.fields(spec):
        kind, value = f.metadata.get("file"), getattr(spec, f.name)
        if kind and isinstance(value, str) and value and (kind == FILE or value.endswith(".json")):
            found.append((f.name, value))
    return sorted(found, key=lambda item: item[0] != "weights")


@dataclass(frozen=True)
class ViewSpec:
    """How a scorer wants its pixels. Views are uint8 RGB (N, H, W, 3) arrays, normalised on the device.

    kind: ``center_crop`` (shorter side -> size, bicubic, centre crop: CLIP), ``stretch`` (resize to
    size x size, bilinear: the LAION watermark model, opennsfw2), ``stretch_nearest`` (the same with
    nearest-neighbour: GantMan, whose predict.py reads images with keras load_img), ``letterbox`` (pad right/bottom to a square,
    then resize: nudenet/YOLO), ``gray`` (uint8 grayscale at the decoded size, one array per image).
    """

    kind: str
    size: int = 0


@dataclass
class ImageTextBatch:
    texts: list[str]
    views: dict[ViewSpec, np.ndarray | list[np.ndarray]]
    features: dict[str, object] = field(default_factory=dict)  # e.g. torch tensors of embeddings
    sizes: list[tuple[int, int]] | None = None  # decoded (width, height) per image, when known

    def __len__(self) -> int:
        return len(self.texts)

    def view(self, spec: ViewSpec):
        try:
            return self.views[spec]
        except KeyError as e:
            raise ModelError(f"batch has no view {spec}; views: {list(self.views)}") from e


def as_numpy(view) -> np.ndarray:
    """A view as a numpy array: views made on the GPU (models.gpu_decode) are torch tensors there."""
    if isinstance(view, np.ndarray):
        return view
    return view.cpu().numpy()


@runtime_checkable
class Scorer(Protocol):
    name: str  # the MODELS.toml section it comes from
    columns: tuple[str, ...]  # annotated columns it fills
    views: tuple[ViewSpec, ...]  # image views it reads (empty: a text-only scorer)
    provides: tuple[str, ...]  # feature keys it puts into batch.features
    needs: tuple[str, ...]  # feature keys it reads from batch.features

    def describe(self) -> str: ...

    def load(self, device: str) -> None: ...

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]: ...
