"""Which scorer fills which column, built from a ModelsConfig, in the order they must run."""

from __future__ import annotations

from dataclasses import dataclass

from curation.storage import StorageOptions
from schemas import ANNOTATED
from models import weights
from models.base import MissingWeightsError, ModelError, Scorer
from models.config import ModelsConfig

L14_EMBEDDING = "clip_vitl14.image_embedding"

# every score column the annotate stage fills, with the MODELS.toml section that fills it (from the schema)
SCORE_COLUMNS: dict[str, str] = {c.name: c.model for c in ANNOTATED.columns if c.model}


def build_scorers(cfg: ModelsConfig, options: StorageOptions | None = None) -> list[Scorer]:
    """Scorers for every configured section; providers of shared features come before their users."""
    from models.clip import ClipScorer
    from models.faces import HaarFaceCounter
    from models.heads import AestheticScorer, WatermarkScorer
    from models.nsfw import NudenetScorer, OnnxNsfwScorer
    from models.tokens import TokenCounter

    scorers: list[Scorer] = []
    if cfg.clip_vitb32:
        scorers.append(ClipScorer("clip_vitb32", "clip_similarity_vitb32", cfg.clip_vitb32, options))
    if cfg.clip_vitl14:
        share = L14_EMBEDDING if cfg.aesthetic_laion_v2 else None
        scorers.append(ClipScorer("clip_vitl14", "clip_similarity_vitl14", cfg.clip_vitl14, options, share_as=share))
    if cfg.aesthetic_laion_v2:
        scorers.append(AestheticScorer("aesthetic_laion_v2", cfg.aesthetic_laion_v2, L14_EMBEDDING, options))
    if cfg.watermark:
        scorers.append(WatermarkScorer("watermark", cfg.watermark, options))
    if cfg.nsfw_opennsfw2:
        scorers.append(OnnxNsfwScorer("nsfw_opennsfw2", "opennsfw2", cfg.nsfw_opennsfw2, options))
    if cfg.nsfw_gantman:
        scorers.append(OnnxNsfwScorer("nsfw_gantman", "gantman", cfg.nsfw_gantman, options))
    if cfg.nsfw_nudenet.enabled:
        scorers.append(NudenetScorer("nsfw_nudenet", cfg.nsfw_nudenet, options))
    if cfg.faces.detector == "opencv-haar":
        scorers.append(HaarFaceCounter("faces", cfg.faces))
    if cfg.tokens.enabled:
        scorers.append(TokenCounter("tokens", cfg.tokens, options))
    return scorers


def weight_files(cfg: ModelsConfig) -> dict[str, str]:
    """model section -> every file it needs (the ones a package ships are not listed)."""
    files: dict[str, str] = {}
    for name in ("clip_vitb32", "clip_vitl14", "aesthetic_laion_v2", "watermark", "nsfw_opennsfw2", "nsfw_gantman"):
        spec = getattr(cfg, name)
        if spec is not None:
            files[name] = spec.weights
            if getattr(spec, "arch", "").endswith(".json"):
                files[f"{name}.arch"] = spec.arch
    if cfg.nsfw_nudenet.enabled and cfg.nsfw_nudenet.weights:
        files["nsfw_nudenet"] = cfg.nsfw_nudenet.weights
    for key in ("bert_vocab", "gpt2_vocab", "gpt2_merges"):
        if cfg.tokens.enabled and getattr(cfg.tokens, key):
            files[f"tokens.{key}"] = getattr(cfg.tokens, key)
    return files


def check_weights(cfg: ModelsConfig, options: StorageOptions | None = None) -> None:
    """Fail before any work starts if a configured file is missing (the error names model and file)."""
    for model, uri in weight_files(cfg).items():
        weights.check_exists(model, uri, options)


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


def how_to_get(section: str) -> str | None:
    from models.weights.fetch import SOURCES

    if section in SOURCES:
        return f"`curation models fetch DIR --only {section}` (README, 'Models')"
    if section in ("nsfw_opennsfw2", "nsfw_gantman"):
        return "convert the Keras model to ONNX (README, 'Models')"
    return None


def check_models(cfg: ModelsConfig, options: StorageOptions | None = None, load: bool = False) -> list[ColumnStatus]:
    """Every score column with what fills it and, all at once, every problem: each missing file, and
    with ``load`` each checkpoint that does not load into its architecture (loaded on CPU, one at a time)."""
    scorers = {s.name: s for s in build_scorers(cfg, options)}
    problems: dict[str, list[str]] = {}
    for model, uri in weight_files(cfg).items():
        try:
            weights.check_exists(model, uri, options)
        except MissingWeightsError as e:
            problems.setdefault(model.split(".")[0], []).append(str(e))
    if load:
        for name, scorer in scorers.items():
            if name in problems:
                continue
            try:
                scorer.load("cpu")
            except (ModelError, OSError, RuntimeError, ValueError) as e:
                problems.setdefault(name, []).append(f"model {name!r}: {e}")
            finally:
                for attr in ("model", "session"):
                    if hasattr(scorer, attr):
                        setattr(scorer, attr, None)  # free it before the next one loads
    if "clip_vitl14" in problems and "aesthetic_laion_v2" in scorers:
        problems.setdefault("aesthetic_laion_v2", []).append("model 'aesthetic_laion_v2': needs the ViT-L/14 embedding, and clip_vitl14 has a problem")
    filled = {col: s.describe() for s in scorers.values() for col in s.columns}
    out = []
    for column, section in SCORE_COLUMNS.items():
        problem = "; ".join(problems.get(section, [])) or None
        out.append(ColumnStatus(column, section, filled.get(column), problem, how_to_get(section) if problem else None))
    return out


def describe_columns(cfg: ModelsConfig, scorers: list[Scorer] | None = None) -> dict[str, str]:
    """column -> what fills it, or why it is null."""
    scorers = scorers if scorers is not None else build_scorers(cfg)
    filled = {col: s.describe() for s in scorers for col in s.columns}
    return {col: filled.get(col, f"null: [{section}] not configured") for col, section in SCORE_COLUMNS.items()}
