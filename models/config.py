"""MODELS.toml: which scorers run and where their weights are (local paths or s3:// URIs).

One section per row of the scorer table (models.registry.SCORERS), its keys the fields of the row's
spec dataclass; configs/models.toml is a full template. Relative file paths are resolved against the
folder of the MODELS.toml file. A section that is absent leaves its columns null (the stage's stats say
so) unless its row has a default (nudenet, faces, tokens run offline); a section that names a file that
does not exist stops the stage with an error naming the model and the file.

    [clip_vitb32]                 # clip_similarity_vitb32
    arch = "ViT-B-32"             # an open_clip model name, or a .json open_clip model config
    weights = "clip-vit-b-32.safetensors"
    quick_gelu = true             # OpenAI's CLIP weights use QuickGELU
    [aesthetic_laion_v2]          # aesthetic_score_laion_v2, on the ViT-L/14 embedding: needs [clip_vitl14]
    weights = "sac+logos+ava1-l14-linearMSE.pth"
    [faces]                       # num_faces; default OpenCV's bundled Haar cascade, "none" switches it off
    detector = "yunet"            # YuNet, batched: `curation models fetch DIR --only faces`
    weights = "face_detection_yunet_2023mar.onnx"
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from typing import Any

from curation import storage
from curation.errors import CurationError
from models.base import ARCH
from models.registry import REGISTRY, ScorerEntry, ScorerTable


class ModelsConfigError(CurationError, ValueError):
    pass


def _to_dict(self) -> dict:
    return dataclasses.asdict(self)


@functools.cache
def models_config_type(table: ScorerTable) -> type:
    """The frozen dataclass of a whole MODELS.toml: one field per table row (its spec, or its default),
    in table order, then ``source``."""
    fields: list[tuple[str, Any, Any]] = [
        (e.name, e.spec if e.default is not None else e.spec | None, dataclasses.field(default=e.default))
        for e in table.entries.values()
    ]
    fields.append(("source", str | None, dataclasses.field(default=None)))  # the MODELS.toml it came from
    cls = dataclasses.make_dataclass(
        "ModelsConfig", fields, frozen=True,
        namespace={"to_dict": _to_dict, "__module__": __name__, "__doc__": "Every MODELS.toml section, parsed."},
    )  # fmt: skip
    cls.__module__ = __name__  # pickled by reference (Spark ships it to the executors)
    return cls


ModelsConfig = models_config_type(REGISTRY)


def _resolve(base: str, value: str) -> str:
    """A relative path is relative to the MODELS.toml folder; absolute paths and URIs stay."""
    if "://" in value or value.startswith("/"):
        return value
    return storage.relative_to(base, value)


def _section(entry: ScorerEntry, data: Any, base: str, where: str):
    name, cls = entry.name, entry.spec
    if not isinstance(data, dict):
        raise ModelsConfigError(f"{where}: [{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ModelsConfigError(f"{where}: unknown key(s) {unknown} in [{name}]; known: {sorted(fields)}")
    values = dict(data)
    for key, value in data.items():
        kind = fields[key].metadata.get("file")
        if kind and isinstance(value, str) and (kind != ARCH or value.endswith(".json")):
            values[key] = _resolve(base, value)  # an ARCH not ending in .json is a name, not a file
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ModelsConfigError(f"{where}: [{name}] {e}") from e


def parse_models_config(data: dict, base: str = ".", source: str | None = None, table: ScorerTable = REGISTRY):
    where = source or "models config"
    unknown = sorted(set(data) - set(table.entries))
    if unknown:
        raise ModelsConfigError(f"{where}: unknown section(s) {unknown}; known: {sorted(table.entries)}")
    kwargs, problems = {}, []
    for name, value in data.items():  # every section's problem is reported, not only the first
        try:
            kwargs[name] = _section(table.entries[name], value, base, where)
        except ModelsConfigError as e:
            problems.append(str(e))
    for name in kwargs:
        needs = table.entries[name].requires
        if needs is not None and needs.section not in data:
            problems.append(f"{where}: [{name}] runs on {needs.what}: configure [{needs.section}]")
    if problems:
        raise ModelsConfigError("\n".join(problems))
    return models_config_type(table)(**kwargs, source=source)


def load_models_config(uri: str | None, options: storage.StorageOptions | None = None):
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
