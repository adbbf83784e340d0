"""CLIP similarity with open_clip (ViT-B/32, ViT-L/14): cosine of the normalised image and text embeddings.

The architecture comes from open_clip's own model configs (``ViT-B-32``, ``ViT-L-14``) or from an
open_clip model-config JSON file (tests use small widths of the same architectures); the weights are
an open_clip-format state dict read by models.weights, never a hub download (``pretrained=None``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation import storage
from curation.storage import StorageOptions
from models import weights
from models.base import ARCH, ImageTextBatch, ModelError, ViewSpec, file_field
from models.images import to_device_nchw

log = logging.getLogger(__name__)

TEXT_CHUNKS = 8  # a batch's captions are encoded in up to this many length-sorted chunks ...
TEXT_CHUNK_MIN = 8  # ... of at least this many captions


@dataclass(frozen=True)
class ClipSpec:
    """[clip_vitb32] / [clip_vitl14] of MODELS.toml."""

    arch: str = file_field(kind=ARCH)  # an open_clip model name, or a .json open_clip model config
    weights: str = file_field()
    quick_gelu: bool = True  # OpenAI's CLIP weights use QuickGELU


def register_arch(arch: str, options: StorageOptions | None = None) -> str:
    """Make ``arch`` known to open_clip and return its name: a built-in name is returned as is; a
    .json model config (local or s3://) is registered under its file stem."""
    import open_clip

    if not arch.endswith(".json"):
        if open_clip.get_model_config(arch) is None:
            raise ModelError(f"unknown open_clip architecture {arch!r}; e.g. ViT-B-32, ViT-L-14, or a .json config")
        return arch
    if not storage.exists(arch, options):
        raise ModelError(f"open_clip model config not found: {arch}")
    cfg = json.loads(storage.read_bytes(arch, options))
    name = Path(storage.basename(arch)).stem
    local = weights.cache_dir() / "open_clip_configs" / f"{name}.json"
    local.parent.mkdir(parents=True, exist_ok=True)
    if not local.exists() or json.loads(local.read_text()) != cfg:
        local.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(local))
    return name


def build_clip(arch: str, quick_gelu: bool = True, options: StorageOptions | None = None, device: str = "cpu"):
    """The architecture with random weights (no download). Used by the loader and by init-random."""
    import open_clip

    name = register_arch(arch, options)
    quiet = _DropRandomInitWarning()  # the loader puts the weights in right after: the warning would mislead
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model(name, pretrained=None, load_weights=False, force_quick_gelu=quick_gelu, device=device)
    finally:
        logging.getLogger().removeFilter(quiet)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


class ClipScorer:
    """Scores ``column`` = cos(image, text). With ``share_as`` it leaves the normalised image embedding
    in ``batch.features[share_as]`` for heads (aesthetic v2) so the image tower runs once."""

    views: tuple[ViewSpec, ...]
    needs: tuple[str, ...] = ()

    def __init__(self, name: str, column: str, spec: ClipSpec, options: StorageOptions | None = None, share_as: str | None = None):
        self.name = name
        self.columns = (column,)
        self.spec = spec
        self.options = options
        self.share_as = share_as
        self.provides = (share_as,) if share_as else ()
        self.model = None
        self.tokenizer = None
        self.device = "cpu"
        self.image_size = 224
        self.views = (ViewSpec("center_crop", self.image_size),)

    def describe(self) -> str:
        return f"open_clip {Path(self.spec.arch).stem} from {self.spec.weights}"

    def load(self, device: str) -> None:
        import open_clip
        import torch

        weights.check_exists(self.name, self.spec.weights, self.options)
        model = build_clip(self.spec.arch, self.spec.quick_gelu, self.options)
        self.model = model = weights.load_module(self.name, model, self.spec.weights, self.options, device)
        self.device = device
        name = register_arch(self.spec.arch, self.options)
        self.tokenizer = open_clip.get_tokenizer(name)
        size = model.visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.views = (ViewSpec("center_crop", self.image_size),)
        self.mean = tuple(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        torch.set_grad_enabled(False)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if self.model is not None else 0

    def encode_images(self, pixels: np.ndarray):
        import torch

        x = to_device_nchw(pixels, self.device, self.mean, self.std)
        with torch.inference_mode(), _autocast(self.device):
            return self.model.encode_image(x, normalize=True).float()

    def encode_texts(self, texts: list[str]):
        import torch

        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode(), _autocast(self.device):
            if len(texts) <= TEXT_CHUNK_MIN:
                return encode_text_trimmed(self.model, tokens).float()
            # captions sorted by length in a few chunks, each trimmed to its own longest, so that one
            # long caption does not make the whole batch pay for 77 positions
            order = torch.argsort(tokens.argmax(dim=-1))
            size = max(TEXT_CHUNK_MIN, -(-len(texts) // TEXT_CHUNKS))
            parts = [(rows, encode_text_trimmed(self.model, tokens[rows]).float()) for rows in order.split(size)]
            out = torch.empty((len(texts), parts[0][1].shape[1]), dtype=torch.float32, device=tokens.device)
            for rows, part in parts:
                out[rows] = part
            return out

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        if self.model is None:
            raise ModelError(f"model {self.name!r} used before load()")
        image = self.encode_images(batch.view(self.views[0]))
        text = self.encode_texts(batch.texts)
        if self.share_as:
            batch.features[self.share_as] = image
        # the annotate stage's embeddings output ([annotate] embeddings) reads these two
        batch.features[f"{self.name}.image_embedding"] = image
        batch.features[f"{self.name}.text_embedding"] = text
        similarity = (image * text).sum(dim=-1)
        return {self.columns[0]: similarity.cpu().numpy().astype(np.float32)}


def encode_text_trimmed(model, tokens):
    """``model.encode_text(tokens, normalize=True)`` over the first L positions only, L = the last
    end-of-text position in the batch + 1, instead of all 77.

    Exact for open_clip's CLIP text tower: its attention is causal, so positions after a caption's EOT
    token never reach the EOT position, where the embedding is read (argmax pooling: EOT is the
    highest token id). Alt texts are mostly far shorter than 77 tokens, so the text tower does a
    fraction of the work (README, 'Annotate throughput'). Any other text tower (no causal mask, other
    pooling) runs unchanged.
    """
    import torch.nn.functional as F  # noqa: N812
    from open_clip.transformer import text_global_pool
    from torch import nn

    if (
        getattr(model, "text_pool_type", None) != "argmax"
        or getattr(model, "attn_mask", None) is None
        or not hasattr(model, "token_embedding")
        or getattr(model.transformer, "batch_first", True) is not True
    ):
        return model.encode_text(tokens, normalize=True)
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return F.normalize(x, dim=-1)


def _autocast(device: str):
    """fp16 autocast on CUDA; a no-op context on CPU (fp32 keeps CPU runs deterministic)."""
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
