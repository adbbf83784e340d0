"""Run configuration: typed dataclasses with COYO-700M defaults, loaded from TOML.

It sits in the stage layer because it gathers the rules of every layer below (crawl, fetch, politeness,
storage from the core; text, image and dedup rules from filters/). ``ConfigError`` lives in
``curation.errors`` so the core can raise it; it is re-exported here."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from curation import storage
from curation.crawl.links import ExtractRules
from curation.errors import ConfigError
from curation.fetch.http import FetchOptions
from curation.fetch.politeness import PolitenessOptions
from curation.storage import StorageOptions
from filters.dedup import DedupRules
from filters.image import ImageRules
from filters.safety import SafetyOptions
from filters.text import TextRules


@dataclass(frozen=True)
class SparkOptions:
    master: str | None = "local[*]"  # Spark master URL; unset: leave it to spark-submit (spark-submit.sh sets it)
    conf: dict = field(default_factory=dict)  # Spark settings passed to the session builder, e.g. "spark.sql.shuffle.partitions" = "200"


@dataclass(frozen=True)
class ExtractOptions:
    rules: ExtractRules = ExtractRules()
    rows_per_shard: int = 1_000_000  # kept candidates per output shard (after uid dedup)
    paths_base: str | None = None  # base of relative lines in a paths file (default: its folder)


@dataclass(frozen=True)
class PipelineOptions:
    run_root: str = "runs/sample"  # each stage writes RUN_ROOT/<stage>/
    inputs: tuple[str, ...] = ()  # crawl files, folders, globs or paths files
    sample: bool = False  # generate the embedded sample into RUN_ROOT/input and use it as input
    sample_pages: int = 300  # sample = true: crawl pages generated (they link sample_pages // 2 distinct images)
    stages: tuple[str, ...] = ()  # empty: every stage the pipeline has, in order
    sample_image_port: int = 8765  # sample = true: the loopback port its images are served on
    # sample = true: a local folder its images are drawn into and served from (kept, reused by later runs);
    # default: a temporary folder removed after the run. The serving driver never holds image bytes.
    sample_image_cache: str | None = None
    # a stage built from another version of its input (an upstream stage changed on a rerun) is redone;
    # false: the run stops with an error naming the stale stage
    redo_stale: bool = True


@dataclass(frozen=True)
class FilterTextOptions:
    rules: TextRules = TextRules()  # [filter_text.rules] in TOML
    rows_per_shard: int = 1_000_000  # kept rows per output shard


DOWNLOAD_ENGINES = ("spark", "local")


@dataclass(frozen=True)
class DownloadOptions:
    rules: ImageRules = ImageRules()  # [download.rules]: COYO's image rules, resize and encoding
    fetch: FetchOptions = FetchOptions()  # [download.fetch]: timeouts, retries, user agent, SSRF allow-list
    politeness: PolitenessOptions = PolitenessOptions()  # [download.politeness]: per-host limits, host lanes
    threads: int = 64  # concurrent fetches per task
    rows_per_shard: int = 5_000  # input rows per task and output shard
    engine: str = "spark"  # or "local": the same tasks in a process pool, without Spark
    processes: int = 0  # local engine: worker processes (0 = one per CPU)
    retry_transient: bool = True  # a rerun retries the rows that failed with a transient error

    def __post_init__(self) -> None:
        if self.engine not in DOWNLOAD_ENGINES:
            raise ConfigError(f"[download] engine {self.engine!r}: use one of {list(DOWNLOAD_ENGINES)}")
        if self.threads < 1 or self.rows_per_shard < 1:
            raise ConfigError("[download] threads and rows_per_shard must be at least 1")


SELECT_ENGINES = ("duckdb", "spark")


@dataclass(frozen=True)
class SelectOptions:
    engine: str = "duckdb"  # embedded default; "spark" runs the same SQL on the cluster
    preset_file: str | None = None  # custom presets (TOML), added to the built-in ones
    rows_per_shard: int = 10_000  # --materialize: rows per output shard (the last one may hold fewer)
    webdataset: bool = False  # --materialize: also write webdataset tars

    def __post_init__(self) -> None:
        if self.engine not in SELECT_ENGINES:
            raise ConfigError(f"[select] engine {self.engine!r}: use one of {list(SELECT_ENGINES)}")
        if self.rows_per_shard < 1:
            raise ConfigError("[select] rows_per_shard must be at least 1")


@dataclass(frozen=True)
class ReportOptions:
    samples: int = 8  # thumbnails per preset and per rejection reason
    thumbnail_px: int = 128  # longer side of a thumbnail
    bins: int = 40  # histogram bins


ANNOTATE_DEVICES = ("auto", "cpu", "cuda")
ANNOTATE_EMBEDDINGS = ("auto", "vitb32", "vitl14", "none")


@dataclass(frozen=True)
class AnnotateOptions:
    models: str | None = None  # MODELS.toml (local or s3://); unset: only the offline defaults run
    random_models: str | None = None  # a folder: write tiny random-weight models there if absent, and use them
    device: str = "auto"  # auto | cpu | cuda (cuda:N also accepted)
    batch_size: int = 64  # images per model batch
    decode_workers: int = 4  # decode/resize threads per Python worker (one batch ahead of the models)
    rows_per_shard: int = 10_000  # input rows per task and output shard
    id_bits: int = 63  # ids are the top id_bits bits of md5(uid); 63 = non-negative long (tests use fewer)
    # CLIP embeddings written per shard in clip-retrieval's layout (img_emb/, text_emb/, metadata/):
    # "vitb32" | "vitl14" | "none"; "auto": vitb32 when that model is configured, else none
    embeddings: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in ANNOTATE_DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"[annotate] device {self.device!r}: use one of {list(ANNOTATE_DEVICES)} or cuda:N")
        if self.embeddings not in ANNOTATE_EMBEDDINGS:
            raise ConfigError(f"[annotate] embeddings {self.embeddings!r}: use one of {list(ANNOTATE_EMBEDDINGS)}")
        if min(self.batch_size, self.decode_workers, self.rows_per_shard) < 1 or not 1 <= self.id_bits <= 63:
            raise ConfigError("[annotate] batch_size, decode_workers, rows_per_shard >= 1 and 1 <= id_bits <= 63")


@dataclass(frozen=True)
class DedupOptions:
    rules: DedupRules = DedupRules()  # [dedup.rules]: mode, [dedup.rules.keys] (hashing), [dedup.rules.links] (decisions)
    blocklist: tuple[str, ...] = ()  # hash-index outputs / HASH_LIST parquet to decontaminate against
    images_per_shard: int = 1_000  # hash-index: image files of a folder per task and output shard

    def __post_init__(self) -> None:
        if self.images_per_shard < 1:
            raise ConfigError("[dedup] images_per_shard must be at least 1")


@dataclass(frozen=True)
class SemdedupOptions:
    """SemDeDup on the annotate stage's image embeddings: spherical k-means, then within each cluster a
    row whose cosine similarity to a kept row exceeds 1 - eps is rejected (semantic_duplicate)."""

    eps: float = 0.05  # similarity > 1 - eps = duplicate
    clusters: int = 1000  # k-means clusters (fewer when the training sample is smaller)
    train_sample: int = 40_000  # rows k-means is trained on (a uid-hash sample, independent of partitioning)
    iterations: int = 10  # k-means iterations
    seed: int = 0  # k-means initialisation seed
    keep_by: str = "clip_similarity_vitb32"  # in a group, the row with the highest value is kept (then the smallest uid)
    partitions: int = 0  # Spark partitions of the per-cluster step (0: spark.sql.shuffle.partitions)
    block_rows: int = 2048  # rows per block of the blocked similarity products
    histogram_bins: int = 50  # nearest-neighbour similarity histogram in _stats.json (the report draws it)

    def __post_init__(self) -> None:
        if not 0.0 < self.eps < 1.0:
            raise ConfigError("[semdedup] eps must be in (0, 1)")
        if min(self.clusters, self.train_sample, self.iterations, self.block_rows, self.histogram_bins) < 1 or self.partitions < 0:
            raise ConfigError("[semdedup] clusters, train_sample, iterations, block_rows, histogram_bins >= 1, partitions >= 0")


BALANCE_POSITIONS = ("filter-text", "dedup", "annotate")


@dataclass(frozen=True)
class BalanceOptions:
    """MetaCLIP metadata balancing: a row is kept when one of the entries its caption matches samples it;
    an entry matched ``count`` times samples each of its rows with probability min(1, t / count)."""

    metadata: str | None = None  # the entry list: MetaCLIP's metadata.json or one entry per line (local or s3://)
    t: int = 20_000  # rows each entry keeps on average (MetaCLIP: 20k for 400M pairs)
    seed: int = 0  # the draw is a hash of (seed, uid, entry)
    # in `curation pipeline`: the stage whose output balance reads (annotate: the end of the run, after
    # semdedup when it runs); the stage after it reads balance's output
    after: str = "filter-text"

    def __post_init__(self) -> None:
        if self.t < 1:
            raise ConfigError("[balance] t must be at least 1")
        if self.after not in BALANCE_POSITIONS:
            raise ConfigError(f"[balance] after {self.after!r}: use one of {list(BALANCE_POSITIONS)}")


@dataclass(frozen=True)
class Config:
    storage: StorageOptions = StorageOptions()
    spark: SparkOptions = SparkOptions()
    pipeline: PipelineOptions = PipelineOptions()
    extract: ExtractOptions = ExtractOptions()
    filter_text: FilterTextOptions = FilterTextOptions()
    download: DownloadOptions = DownloadOptions()
    select: SelectOptions = SelectOptions()
    report: ReportOptions = ReportOptions()
    annotate: AnnotateOptions = AnnotateOptions()
    dedup: DedupOptions = DedupOptions()
    semdedup: SemdedupOptions = SemdedupOptions()
    safety: SafetyOptions = SafetyOptions()  # [[safety.lists]]: URL / image / PDQ hash lists the download stage applies
    balance: BalanceOptions = BalanceOptions()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data: dict[str, Any], where: str, base=None):
    """Instantiate a (nested) dataclass from a dict, rejecting unknown keys and values of the wrong
    type with a message that names the key; a dataclass's own validation becomes a ConfigError too.

    The table's plain values are applied first (on ``base``, else on the class defaults), and each
    nested table is then built on the value that gave: so a value that sets whole groups
    (``[dedup.rules] mode``) gives the base that the groups' own keys override."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{where}]; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    defaults = base if base is not None else (cls() if _has_defaults(cls) else None)
    plain, nested = {}, {}
    for name, value in data.items():
        default = getattr(defaults, name, None)
        if dataclasses.is_dataclass(default):
            nested[name] = value
            continue
        item = _dataclass_item(hints[name])
        if item is not None:  # [[section.name]]: an array of tables, each one a dataclass
            if not isinstance(value, list):
                raise ConfigError(f"[{where}] {name} must be an array of tables ([[{where}.{name}]])")
            plain[name] = tuple(_build(item, v, f"{where}.{name}[{k}]") for k, v in enumerate(value))
            continue
        _check_type(value, hints[name], f"[{where}] {name}" if where else name)
        plain[name] = tuple(value) if isinstance(value, list) else value  # frozen dataclasses hold tuples
    made = _construct(cls, base, plain, where)
    if not nested:
        return made
    groups = {name: _build(type(getattr(made, name)), value, f"{where}.{name}" if where else name, getattr(made, name))
              for name, value in nested.items()}
    return _construct(cls, made, groups, where)


def _construct(cls, base, kwargs: dict[str, Any], where: str):
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{where}]: {e}") from e


def _dataclass_item(hint: Any) -> type | None:
    """The dataclass of a ``tuple[SomeDataclass, ...]`` field, else None."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if args and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a table"}


def _check_type(value: Any, hint: Any, where: str) -> None:
    """Raise ConfigError unless ``value`` (as TOML gives it) fits the field's annotation."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None):
            if value is None:
                return
            continue
        origin = typing.get_origin(option) or option
        if origin is tuple:
            item = (typing.get_args(option) or (Any,))[0]
            if isinstance(value, list | tuple) and all(item is Any or _fits(v, item) for v in value):
                return
        elif origin is Any or _fits(value, origin):
            return
    wanted = " or ".join(_TYPE_NAMES.get(typing.get_origin(o) or o, "a list") if o is not type(None) else "unset"
                         for o in options)
    raise ConfigError(f"{where} = {value!r}: expected {wanted}")


def _fits(value: Any, kind: Any) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(kind, type):
        return isinstance(value, kind)
    return True  # Literal and other rare hints: the dataclass validates


def _has_defaults(cls) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def load_config(path: str | None = None, overrides: dict | None = None) -> Config:
    data: dict = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    return absolute_paths(_build(Config, data, ""))


def absolute_paths(cfg: Config) -> Config:
    """Every local path of the config made absolute here, on the driver (executors run in other
    working folders); object-store URIs unchanged."""
    replace, absolute = dataclasses.replace, storage.absolute
    maybe = lambda p: absolute(p) if p else p  # noqa: E731
    rules = replace(cfg.filter_text.rules, language_model=maybe(cfg.filter_text.rules.language_model))
    return replace(
        cfg,
        pipeline=replace(cfg.pipeline, run_root=absolute(cfg.pipeline.run_root),
                         inputs=tuple(absolute(i) for i in cfg.pipeline.inputs),
                         sample_image_cache=maybe(cfg.pipeline.sample_image_cache)),
        extract=replace(cfg.extract, paths_base=maybe(cfg.extract.paths_base)),
        filter_text=replace(cfg.filter_text, rules=rules),
        annotate=replace(cfg.annotate, models=maybe(cfg.annotate.models), random_models=maybe(cfg.annotate.random_models)),
        dedup=replace(cfg.dedup, blocklist=tuple(absolute(b) for b in cfg.dedup.blocklist)),
        select=replace(cfg.select, preset_file=maybe(cfg.select.preset_file)),
        safety=replace(cfg.safety, lists=tuple(replace(s, path=absolute(s.path)) for s in cfg.safety.lists)),
        balance=replace(cfg.balance, metadata=maybe(cfg.balance.metadata)),
    )
