"""The scorer table: one row per MODELS.toml section, in the order the scorers run.

A row names the section, its spec dataclass (the section's keys; ``file_field`` marks the keys that
name files), the spec used when the section is absent (``None``: its columns stay null), the factory
that builds the scorer, and where its weights come from. The columns a row fills are the ANNOTATED
columns whose ``model`` is the row's name (schemas/tables.py). Everything else is derived from the
table and the schema: the MODELS.toml sections and their parsing (models.config), the weight files to
check, the column descriptions and the scorers the runner loads.

Adding a scorer: its module (models/<name>.py: the scorer class and its spec), one row in ``SCORERS``,
and its column(s) in ``ANNOTATED`` with ``model="<section>"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curation.storage import StorageOptions
from models import weights
from models.base import MissingWeightsError, ModelError, Scorer, spec_files
from models.clip import ClipScorer, ClipSpec
from models.faces import FacesSpec, face_counter
from models.heads import AestheticScorer, HeadSpec, WatermarkScorer, WatermarkSpec
from models.nsfw import NudenetScorer, NudenetSpec, OnnxNsfwScorer, OnnxSpec
from models.tokens import TokenCounter, TokensSpec
from schemas import ANNOTATED, Table

L14_EMBEDDING = "clip_vitl14.image_embedding"
ONNX_HINT = "convert the Keras model to ONNX (README, 'Models')"


@dataclass(frozen=True)
class Checkpoint:
    """A public checkpoint that ``curation models fetch`` downloads (models.weights.fetch)."""

    filename: str  # its name in the fetch folder
    url: str  # canonical public location (never contacted by the tests)
    licence: str
    section: tuple[tuple[str, object], ...] = ()  # MODELS.toml keys besides weights
    sha256: str | None = None  # pinned only where the publisher states it
    size: int | None = None


@dataclass(frozen=True)
class Requires:
    """A section that runs on what another section's scorer provides (the aesthetic head: ViT-L/14)."""

    section: str
    what: str  # what it takes from there, for messages


@dataclass(frozen=True)
class BuildContext:
    """What a factory gets besides its spec."""

    name: str  # the section
    columns: tuple[str, ...]  # the ANNOTATED columns the scorer must fill
    cfg: Any  # the whole ModelsConfig (a scorer may depend on which other sections are configured)
    options: StorageOptions | None

    def configured(self, section: str) -> bool:
        return enabled(getattr(self.cfg, section))


@dataclass(frozen=True)
class ScorerEntry:
    name: str  # the MODELS.toml section
    spec: type  # the section's dataclass
    build: Callable[[Any, BuildContext], Scorer]
    default: object | None = None  # the spec of an absent section; None: not run unless configured
    requires: Requires | None = None
    checkpoint: Checkpoint | None = None
    how_to_get: str | None = None  # where its weights come from, when `models fetch` does not fetch them


def enabled(spec: object | None) -> bool:
    """A section runs when it is configured (or on by default) and not switched off (``enabled``)."""
    return spec is not None and getattr(spec, "enabled", True)


def _checkpoint(filename: str, url: str, licence: str, **section: object) -> Checkpoint:
    return Checkpoint(filename, url, licence, tuple(section.items()))


SCORERS: tuple[ScorerEntry, ...] = (
    ScorerEntry(
        "clip_vitb32", ClipSpec, lambda spec, ctx: ClipScorer(ctx.name, ctx.columns[0], spec, ctx.options),
        checkpoint=_checkpoint(
            "clip-vit-b-32-openai.safetensors",
            "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors",
            "MIT (OpenAI CLIP)", arch="ViT-B-32", quick_gelu=True,
        ),
    ),
    ScorerEntry(
        "clip_vitl14", ClipSpec,
        lambda spec, ctx: ClipScorer(ctx.name, ctx.columns[0], spec, ctx.options,
                                     share_as=L14_EMBEDDING if ctx.configured("aesthetic_laion_v2") else None),
        checkpoint=_checkpoint(
            "clip-vit-l-14-openai.safetensors",
            "https://huggingface.co/timm/vit_large_patch14_clip_224.openai/resolve/main/open_clip_model.safetensors",
            "MIT (OpenAI CLIP)", arch="ViT-L-14", quick_gelu=True,
        ),
    ),
    ScorerEntry(
        "aesthetic_laion_v2", HeadSpec, lambda spec, ctx: AestheticScorer(ctx.name, spec, L14_EMBEDDING, ctx.options),
        requires=Requires("clip_vitl14", "the ViT-L/14 embedding"),
        checkpoint=_checkpoint(
            "sac+logos+ava1-l14-linearMSE.pth",
            "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth",
            "Apache-2.0 (improved-aesthetic-predictor)",
        ),
    ),
    ScorerEntry(
        "watermark", WatermarkSpec, lambda spec, ctx: WatermarkScorer(ctx.name, spec, ctx.options),
        checkpoint=_checkpoint(
            "watermark_model_v1.pt",
            "https://github.com/LAION-AI/LAION-5B-WatermarkDetection/raw/main/models/watermark_model_v1.pt",
            "MIT (LAION-5B-WatermarkDetection)", arch="efficientnet_b3a",
        ),
    ),
    ScorerEntry("nsfw_opennsfw2", OnnxSpec, lambda spec, ctx: OnnxNsfwScorer(ctx.name, "opennsfw2", spec, ctx.options),
                how_to_get=ONNX_HINT),
    ScorerEntry("nsfw_gantman", OnnxSpec, lambda spec, ctx: OnnxNsfwScorer(ctx.name, "gantman", spec, ctx.options),
                how_to_get=ONNX_HINT),
    ScorerEntry("nsfw_nudenet", NudenetSpec, lambda spec, ctx: NudenetScorer(ctx.name, spec, ctx.options), NudenetSpec()),
    ScorerEntry(
        "faces", FacesSpec, lambda spec, ctx: face_counter(ctx.name, spec, ctx.options), FacesSpec(),
        checkpoint=_checkpoint(
            "face_detection_yunet_2023mar.onnx",
            "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
            "MIT (OpenCV model zoo, YuNet)", detector="yunet",
        ),
    ),
    ScorerEntry("tokens", TokensSpec, lambda spec, ctx: TokenCounter(ctx.name, spec, ctx.options), TokensSpec()),
)  # fmt: skip


@dataclass(frozen=True)
class ColumnStatus:
    column: str
    section: str
    filled_by: str | None  # what fills it; None: the column stays null
    problem: str | None = None  # why it cannot be filled as configured (missing file, bad checkpoint)
    how_to_get: str | None = None

    def line(self) -> str:
        if self.problem:
            hint = f" -- {self.how_to_get}" if self.how_to_get else ""
            return f"PROBLEM: {self.problem}{hint}"
        return self.filled_by or f"null: [{self.section}] not configured"


class ScorerTable:
    """A scorer table checked against the annotated schema, with what is derived from both."""

    def __init__(self, entries: tuple[ScorerEntry, ...], schema: Table = ANNOTATED):
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"scorer table: a section appears twice: {names}")
        self.entries = {e.name: e for e in entries}
        # every score column the annotate stage fills, with the section that fills it
        self.score_columns: dict[str, str] = {c.name: c.model for c in schema.columns if c.model}
        unknown = sorted({s for s in self.score_columns.values() if s not in self.entries})
        if unknown:
            raise ValueError(f"{schema.name} columns name sections {unknown} that no scorer table row has")
        self.columns = {n: tuple(c for c, s in self.score_columns.items() if s == n) for n in names}
        bare = [n for n, cols in self.columns.items() if not cols]
        if bare:
            raise ValueError(f"scorer sections {bare} fill no {schema.name} column (give a Column model=...)")

    def configured(self, cfg) -> list[tuple[ScorerEntry, object]]:
        """(row, spec) of every section that runs, in table order."""
        return [(e, spec) for e in self.entries.values() if enabled(spec := getattr(cfg, e.name))]

    def build_scorers(self, cfg, options: StorageOptions | None = None) -> list[Scorer]:
        """Scorers for every configured section; providers of shared features come before their users."""
        scorers = []
        for entry, spec in self.configured(cfg):
            scorer = entry.build(spec, BuildContext(entry.name, self.columns[entry.name], cfg, options))
            if tuple(scorer.columns) != self.columns[entry.name]:
                raise ModelError(f"scorer {entry.name!r} fills {scorer.columns}, the schema gives it {self.columns[entry.name]}")
            scorers.append(scorer)
        return scorers

    def weight_files(self, cfg) -> dict[str, str]:
        """``section`` (its weights) or ``section.key`` (another file) -> every file a configured section
        names (the ones a package ships are not listed)."""
        return {
            entry.name if key == "weights" else f"{entry.name}.{key}": uri
            for entry, spec in self.configured(cfg)
            for key, uri in spec_files(spec)
        }

    def check_weights(self, cfg, options: StorageOptions | None = None) -> None:
        """Fail before any work starts if a configured file is missing (the error names model and file)."""
        for model, uri in self.weight_files(cfg).items():
            weights.check_exists(model, uri, options)

    def how_to_get(self, section: str) -> str | None:
        entry = self.entries.get(section)
        if entry is not None and entry.checkpoint is not None:
            return f"`curation models fetch DIR --only {section}` (README, 'Models')"
        return entry.how_to_get if entry is not None else None

    def check_models(self, cfg, options: StorageOptions | None = None, load: bool = False) -> list[ColumnStatus]:
        """Every score column with what fills it and, all at once, every problem: each missing file, and
        with ``load`` each checkpoint that does not load into its architecture (loaded on CPU, one at a time)."""
        scorers = {s.name: s for s in self.build_scorers(cfg, options)}
        problems: dict[str, list[str]] = {}
        for model, uri in self.weight_files(cfg).items():
            try:
                weights.check_exists(model, uri, options)
            except MissingWeightsError as e:
                problems.setdefault(model.split(".")[0], []).append(str(e))
        if load:
            for name, scorer in scorers.items():
                if name not in problems:
                    _try_load(name, scorer, problems)
        for entry, _ in self.configured(cfg):
            needs = entry.requires
            if needs is not None and needs.section in problems:
                problems.setdefault(entry.name, []).append(
                    f"model {entry.name!r}: needs {needs.what}, and {needs.section} has a problem"
                )
        filled = {col: s.describe() for s in scorers.values() for col in s.columns}
        out = []
        for column, section in self.score_columns.items():
            problem = "; ".join(problems.get(section, [])) or None
            out.append(ColumnStatus(column, section, filled.get(column), problem, self.how_to_get(section) if problem else None))
        return out

    def describe_columns(self, cfg, scorers: list[Scorer] | None = None) -> dict[str, str]:
        """column -> what fills it, or why it is null."""
        scorers = scorers if scorers is not None else self.build_scorers(cfg)
        filled = {col: s.describe() for s in scorers for col in s.columns}
        return {col: filled.get(col, f"null: [{section}] not configured") for col, section in self.score_columns.items()}


def _try_load(name: str, scorer: Scorer, problems: dict[str, list[str]]) -> None:
    try:
        scorer.load("cpu")
    except (ModelError, OSError, RuntimeError, ValueError) as e:
        problems.setdefault(name, []).append(f"model {name!r}: {e}")
    finally:
        for attr in ("model", "session"):
            if hasattr(scorer, attr):
                setattr(scorer, attr, None)  # free it before the next one loads


REGISTRY = ScorerTable(SCORERS)
SCORE_COLUMNS = REGISTRY.score_columns
build_scorers = REGISTRY.build_scorers
weight_files = REGISTRY.weight_files
check_weights = REGISTRY.check_weights
check_models = REGISTRY.check_models
describe_columns = REGISTRY.describe_columns
how_to_get = REGISTRY.how_to_get
