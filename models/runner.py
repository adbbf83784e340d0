"""Runs every configured scorer over rows of (image bytes, text), in batches.

Decoding and resizing run in a thread pool (Pillow and OpenCV release the GIL) one batch ahead of the
models, so on a GPU the next batch is being decoded while the current one is scored; on CUDA, JPEGs
are decoded and resized on the GPU itself, on a stream of their own (models.gpu_decode). Each image is
decoded once and each distinct view is made once per image, whatever the number of scorers using it.
Models are loaded once per Python process and device: ``get_runner`` caches the runner, so a Spark
executor's reused Python worker loads them once for each GPU its tasks are given. ``place`` turns the GPU
addresses Spark assigned a task into the device its models run on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from curation.storage import StorageOptions
from models.base import ImageTextBatch, ModelError, Scorer, ViewSpec
from models.config import ModelsConfig
from models.images import ImageDecodeError, decode_rgb, image_views, stack_views
from models.registry import build_scorers

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RunOptions:
    device: str = "auto"  # auto: cuda when a GPU is visible, else cpu
    batch_size: int = 64
    decode_workers: int = 4
    gpu_decode: bool = True  # on CUDA: JPEGs decoded (nvJPEG, batched) and resized on the GPU
    cpu_threads: int = 0  # torch intra-op threads on CPU; 0: torch's default (all cores, or OMP_NUM_THREADS)

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICES} or cuda:N, got {self.device!r}")
        if self.batch_size < 1 or self.decode_workers < 1 or self.cpu_threads < 0:
            raise ValueError("batch_size and decode_workers must be >= 1, cpu_threads >= 0")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    return device


def cuda_ordinal(address: str, visible: str | None = None) -> int:
    """The torch ordinal of the GPU Spark calls ``address``. Discovery scripts report the indexes
    nvidia-smi shows; where CUDA_VISIBLE_DEVICES narrows the process's GPUs (``visible``), torch numbers
    them 0.. in that list's order, so an address found there maps to its position."""
    names = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    if address in names:
        return names.index(address)
    try:
        return int(address)
    except ValueError:
        raise ModelError(f"Spark assigned GPU {address!r}, which is neither an index nor in CUDA_VISIBLE_DEVICES={visible!r}") from None


@dataclass(frozen=True)
class Placement:
    """Where one task's models run: the device, the GPU addresses Spark assigned the task, and a note
    whenever the device is not the assigned GPU (empty otherwise)."""

    device: str
    assigned: tuple[str, ...] = ()
    note: str = ""


def place(requested: str, addresses: Sequence[str] = (), cuda: bool | None = None, visible: str | None = None) -> Placement:
    """The device for a task given ``requested`` ([annotate] device) and the GPU addresses Spark assigned
    it. Without addresses: ``resolve_device(requested)``. With them, ``auto`` and ``cuda`` run on the
    first assigned GPU, and on the CPU (saying so) where torch sees no CUDA; ``cpu`` and an explicit
    ``cuda:N`` are kept. ``cuda``/``visible``: torch's view and CUDA_VISIBLE_DEVICES (default: this process's)."""
    assigned = tuple(str(a) for a in addresses)
    if not assigned:
        return Placement(resolve_device(requested))
    gpus = "GPU " + ", ".join(assigned) if len(assigned) == 1 else "GPUs " + ", ".join(assigned)
    if requested == "cpu" or requested.startswith("cuda:"):
        return Placement(resolve_device(requested), assigned, f"device = {requested} set: Spark's {gpus} not used")
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        return Placement("cpu", assigned, f"Spark assigned {gpus} but torch sees no CUDA GPU: scored on the CPU")
    ordinal = cuda_ordinal(assigned[0], os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible)
    note = f"Spark assigned {gpus}: models on the first" if len(assigned) > 1 else ""
    return Placement(f"cuda:{ordinal}", assigned, note)


@dataclass
class Scored:
    ok: np.ndarray  # bool per input row: decoded and scored
    errors: list[str | None]  # per input row: why it could not be decoded
    columns: dict[str, np.ndarray]  # per scored row (rows where ok), in input order
    seconds: dict[str, float] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # per scored row: the asked batch.features


def _ordered(scorers: list[Scorer]) -> list[Scorer]:
    provided: set[str] = set()
    for s in scorers:
        missing = [n for n in s.needs if n not in provided]
        if missing:
            raise ModelError(f"scorer {s.name!r} needs {missing}, which no earlier scorer provides")
        provided.update(s.provides)
    return scorers


class AnnotationRunner:
    def __init__(self, cfg: ModelsConfig, options: RunOptions = RunOptions(), storage: StorageOptions | None = None):
        self.cfg = cfg
        self.options = options
        self.device = resolve_device(options.device)
        self.scorers = _ordered(build_scorers(cfg, storage))
        self.views: tuple[ViewSpec, ...] = ()
        self._pool: ThreadPoolExecutor | None = None
        self._prefetch: ThreadPoolExecutor | None = None
        self.profile = False
        self.loaded = False

    @property
    def columns(self) -> list[str]:
        return [c for s in self.scorers for c in s.columns]

    def load(self) -> AnnotationRunner:
        if self.loaded:
            return self
        import torch

        torch.set_grad_enabled(False)
        if self.options.cpu_threads and not self.device.startswith("cuda"):
            # Spark runs several tasks per executor, each a Python worker whose torch would otherwise
            # start one thread per core: N tasks x N threads on N cores spin against each other
            torch.set_num_threads(self.options.cpu_threads)
        for s in self.scorers:
            started = time.perf_counter()
            with self._on_device():
                s.load(self.device)
            log.info("loaded %s on %s in %.1fs: %s", s.name, self.device, time.perf_counter() - started, s.describe())
        # views are known after load (a CLIP config decides its input size)
        self.views = tuple(dict.fromkeys(v for s in self.scorers for v in s.views))
        self._pool = ThreadPoolExecutor(self.options.decode_workers, thread_name_prefix="decode")
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self._decode_stream = torch.cuda.Stream(device=self.device) if self.decodes_on_gpu else None
        self.loaded = True
        return self

    def _on_device(self):
        """torch's current CUDA device set to the runner's (cuda:N) for this thread; a no-op on the CPU."""
        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        import torch

        return torch.cuda.device(self.device)

    def _decode(self, data: bytes | None) -> tuple[dict, tuple[int, int]] | str:
        try:
            img = decode_rgb(data)
            return image_views(img, self.views), img.size
        except ImageDecodeError as e:
            return str(e) or "not decodable"

    @property
    def decodes_on_gpu(self) -> bool:
        return self.options.gpu_decode and self.device.startswith("cuda")

    def _prepare(self, images: list[bytes | None]) -> list[tuple[dict, tuple[int, int]] | str]:
        if self.decodes_on_gpu:
            import torch

            from models.gpu_decode import decode_batch

            with torch.cuda.stream(self._decode_stream):  # overlaps the scoring of the previous batch
                prepared = decode_batch(images, self.views, self.device)
            self._decode_stream.synchronize()
            return prepared
        return list(self._pool.map(self._decode, images))

    def _stack(self, per_image: list[dict]) -> dict:
        if self.decodes_on_gpu:
            from models.gpu_decode import stack

            return stack(per_image, self.views, self.device)
        return stack_views(per_image, self.views)

    def _sync(self) -> None:
        if self.profile and self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def score_batch(self, batch: ImageTextBatch, seconds: dict[str, float]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for s in self.scorers:
            started = time.perf_counter()
            result = s.score(batch)
            self._sync()
            seconds[s.name] = seconds.get(s.name, 0.0) + time.perf_counter() - started
            for col in s.columns:
                if len(result[col]) != len(batch):
                    raise ModelError(f"scorer {s.name!r} returned {len(result[col])} values for {len(batch)} rows")
            out.update(result)
        return out

    def score(self, images: list[bytes | None], texts: list[str], features: tuple[str, ...] = ()) -> Scored:
        """Score every row; rows whose image does not decode are reported in ``errors``, not scored.
        ``features``: batch.features keys (e.g. ``clip_vitb32.image_embedding``) returned as float32 arrays."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        self.load()
        bs = self.options.batch_size
        starts = list(range(0, len(images), bs))
        seconds: dict[str, float] = {}
        errors: list[str | None] = []
        parts: list[dict[str, np.ndarray]] = []
        kept: list[dict[str, np.ndarray]] = []
        pending: Future | None = self._prefetch.submit(self._prepare, images[:bs]) if starts else None
        for k, start in enumerate(starts):
            waited = time.perf_counter()
            prepared = pending.result()
            seconds["decode_wait"] = seconds.get("decode_wait", 0.0) + time.perf_counter() - waited
            if k + 1 < len(starts):  # decode the next batch while this one is scored
                nxt = starts[k + 1]
                pending = self._prefetch.submit(self._prepare, images[nxt : nxt + bs])
            ok_rows = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
            errors.extend(p if isinstance(p, str) else None for p in prepared)
            if not ok_rows:
                continue
            batch = ImageTextBatch(
                texts=[texts[start + i] for i in ok_rows],
                views=self._stack([prepared[i][0] for i in ok_rows]),
                sizes=[prepared[i][1] for i in ok_rows],
            )
            with self._on_device():
                parts.append(self.score_batch(batch, seconds))
            kept.append(_features(batch, features))
        columns = {c: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0) for c in self.columns}
        ok = np.array([e is None for e in errors], dtype=bool)
        feats = {k: np.concatenate([f[k] for f in kept]) if kept else np.zeros((0, 0), np.float32) for k in features}
        return Scored(ok=ok, errors=errors, columns=columns, seconds=seconds, features=feats)

    def close(self) -> None:
        for pool in (self._pool, self._prefetch):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._prefetch = None
        self.loaded = False


def _features(batch: ImageTextBatch, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in batch.features]
    if missing:
        raise ModelError(f"no scorer provides {missing}; provided: {sorted(batch.features)}")
    return {k: batch.features[k].float().cpu().numpy() for k in keys}


_RUNNERS: dict[tuple, AnnotationRunner] = {}


def get_runner(cfg: ModelsConfig, options: RunOptions, storage: StorageOptions | None = None) -> AnnotationRunner:
    """One loaded runner per (models, options, device) per Python process: ``auto`` is resolved first,
    so ``auto`` and the device it stands for share one runner."""
    options = dataclasses.replace(options, device=resolve_device(options.device))
    key = (cfg, options, storage)
    runner = _RUNNERS.get(key)
    if runner is None:
        runner = AnnotationRunner(cfg, options, storage).load()
        _RUNNERS[key] = runner
    return runner
