"""MODELS.toml: which scorers run and where their weights are (local paths or s3:// URIs).

Relative paths are resolved against the folder of the MODELS.toml file. A section that is absent
leaves its columns null (the stage's stats say so); a section that names a file that does not exist
stops the stage with an error naming the model and the file.

    [clip_vitb32]                 # clip_similarity_vitb32
    arch = "ViT-B-32"             # an open_clip model name, or a .json open_clip model config
    weights = "clip-vit-b-32.safetensors"
    quick_gelu = true             # OpenAI's CLIP weights use QuickGELU
    [clip_vitl14]                 # clip_similarity_vitl14
    arch = "ViT-L-14"
    weights = "clip-vit-l-14.safetensors"
    [aesthetic_laion_v2]          # aesthetic_score_laion_v2, on the ViT-L/14 image embedding
    weights = "sac+logos+ava1-l14-linearMSE.pth"
    [watermark]                   # watermark_score
    arch = "efficientnet_b3a"
    weights = "watermark_model_v1.pt"
    [nsfw_opennsfw2]              # nsfw_score_opennsfw2 (ONNX export of the Keras model)
    weights = "open_nsfw_weights.onnx"
    [nsfw_gantman]                # nsfw_score_gantman (ONNX export of GantMan's MobileNetV2 224)
    weights = "gantman_mobilenet_v2_224.onnx"
    [nsfw_nudenet]                # nsfw_score_nudenet; on by default with the detector nudenet ships
    enabled = true
    [faces]                       # num_faces; default OpenCV's bundled Haar cascade
    detector = "opencv-haar"
    [tokens]                      # num_tokens_bert / num_tokens_gpt; default: vocabularies blingfire ships
    bert_vocab = "vocab.txt"      # optional: a BERT vocab.txt
    gpt2_vocab = "vocab.json"     # optional: GPT-2 vocab.json + merges.txt
    gpt2_merges = "merges.txt"
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from typing import Any

from curation.errors import CurationError
from curation import storage

FACE_DETECTORS = ("opencv-haar", "none")


class ModelsConfigError(CurationError, ValueError):
    pass


@dataclass(frozen=True)
class ClipSpec:
    arch: str
    weights: str
    quick_gelu: bool = True


@dataclass(frozen=True)
class HeadSpec:
    weights: str


@dataclass(frozen=True)
class WatermarkSpec:
    weights: str
    arch: str = "efficientnet_b3a"
    image_size: int = 256


@dataclass(frozen=True)
class OnnxSpec:
    weights: str


@dataclass(frozen=True)
class NudenetSpec:
    enabled: bool = True
    weights: str | None = None  # default: the 320n.onnx inside the nudenet package
    image_size: int = 320


@dataclass(frozen=True)
class FacesSpec:
    detector: str = "opencv-haar"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24


@dataclass(frozen=True)
class TokensSpec:
    enabled: bool = True
    bert_vocab: str | None = None
    gpt2_vocab: str | None = None
    gpt2_merges: str | None = None


@dataclass(frozen=True)
class ModelsConfig:
    clip_vitb32: ClipSpec | None = None
    clip_vitl14: ClipSpec | None = None
    aesthetic_laion_v2: HeadSpec | None = None
    watermark: WatermarkSpec | None = None
    nsfw_opennsfw2: OnnxSpec | None = None
    nsfw_gantman: OnnxSpec | None = None
    nsfw_nudenet: NudenetSpec = NudenetSpec()
    faces: FacesSpec = FacesSpec()
    tokens: TokensSpec = TokensSpec()
    source: str | None = None  # the MODELS.toml it came from (for messages and stats)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {
    "clip_vitb32": ClipSpec,
    "clip_vitl14": ClipSpec,
    "aesthetic_laion_v2": HeadSpec,
    "watermark": WatermarkSpec,
    "nsfw_opennsfw2": OnnxSpec,
    "nsfw_gantman": OnnxSpec,
    "nsfw_nudenet": NudenetSpec,
    "faces": FacesSpec,
    "tokens": TokensSpec,
}
_PATH_KEYS = ("weights", "arch", "bert_vocab", "gpt2_vocab", "gpt2_merges")


def _resolve(base: str, value: str) -> str:
    """A relative path is relative to the MODELS.toml folder; absolute paths and URIs stay."""
    if "://" in value or value.startswith("/"):
        return value
    return storage.relative_to(base, value)


def _section(name: str, data: Any, base: str, where: str):
    cls = _SECTIONS[name]
    if not isinstance(data, dict):
        raise ModelsConfigError(f"{where}: [{name}] must be a table")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ModelsConfigError(f"{where}: unknown key(s) {unknown} in [{name}]; known: {sorted(fields)}")
    values = dict(data)
    for key in _PATH_KEYS:
        if key in values and isinstance(values[key], str):
            if key == "arch" and not values[key].endswith(".json"):
                continue  # a registry name, not a file
            values[key] = _resolve(base, values[key])
    try:
        return cls(**values)
    except TypeError as e:
        raise ModelsConfigError(f"{where}: [{name}] {e}") from e


def parse_models_config(data: dict, base: str = ".", source: str | None = None) -> ModelsConfig:
    where = source or "models config"
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ModelsConfigError(f"{where}: unknown section(s) {unknown}; known: {sorted(_SECTIONS)}")
    kwargs, problems = {}, []
    for name, value in data.items():  # every section's problem is reported, not only the first
        try:
            kwargs[name] = _section(name, value, base, where)
        except ModelsConfigError as e:
            problems.append(str(e))
    if kwargs.get("faces") and kwargs["faces"].detector not in FACE_DETECTORS:
        problems.append(f"{where}: [faces] detector must be one of {FACE_DETECTORS}")
    if "aesthetic_laion_v2" in kwargs and "clip_vitl14" not in kwargs and "clip_vitl14" not in data:
        problems.append(f"{where}: [aesthetic_laion_v2] runs on the ViT-L/14 embedding: configure [clip_vitl14]")
    if problems:
        raise ModelsConfigError("\n".join(problems))
    return ModelsConfig(**kwargs, source=source)


def load_models_config(uri: str | None, options: storage.StorageOptions | None = None) -> ModelsConfig:
    """Read MODELS.toml (local or s3://); ``None`` gives the offline defaults (nudenet, Haar, tokens)."""
    if uri is None:
        return ModelsConfig()
    uri = storage.absolute(uri)  # its relative values resolve against an absolute folder, on the driver
    if not storage.exists(uri, options):
        raise ModelsConfigError(f"models config not found: {uri}")
    try:
        data = tomllib.loads(storage.read_bytes(uri, options).decode())
    except tomllib.TOMLDecodeError as e:
        raise ModelsConfigError(f"models config {uri} is not valid TOML: {e}") from e
    base = uri.rsplit("/", 1)[0] if "/" in uri else "."
    return parse_models_config(data, base, source=uri)
