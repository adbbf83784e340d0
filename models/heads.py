"""LAION's heads: the aesthetic predictor v2 (on the ViT-L/14 embedding) and the watermark model.

Both modules reproduce the original layer layout, so LAION's released state dicts load as they are:
- aesthetic v2 (improved-aesthetic-predictor, sac+logos+ava1-l14-linearMSE.pth): ``layers.{0,2,4,6,7}``,
  768-1024-128-64-16-1, applied to the L2-normalised ViT-L/14 image embedding;
- watermark (LAION-5B-WatermarkDetection, watermark_model_v1.pt): timm ``efficientnet_b3a`` whose
  ``classifier`` is replaced by 1536-625-256-2 (``classifier.{0,3,5}``); 256x256 input, ImageNet
  normalisation; score = softmax probability of class 0 ("watermark").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.storage import StorageOptions
from models import weights
from models.base import ARCH, ImageTextBatch, ModelError, ViewSpec, file_field
from models.clip import _autocast
from models.images import to_device_nchw

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AESTHETIC_HIDDEN = (1024, 128, 64, 16)
WATERMARK_HIDDEN = (625, 256)
# timm has no "a" variant name: efficientnet_b3a is efficientnet_b3 (width 1.2, depth 1.4) with another
# default input size, so the architecture and state-dict keys are the same.
TIMM_ALIASES = {"efficientnet_b3a": "efficientnet_b3"}


@dataclass(frozen=True)
class HeadSpec:
    """[aesthetic_laion_v2] of MODELS.toml."""

    weights: str = file_field()


@dataclass(frozen=True)
class WatermarkSpec:
    """[watermark] of MODELS.toml."""

    weights: str = file_field()
    arch: str = file_field("efficientnet_b3a", kind=ARCH)  # a timm architecture name
    image_size: int = 256


def aesthetic_mlp(input_size: int = 768):
    from torch import nn

    class AestheticMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h1, h2, h3, h4 = AESTHETIC_HIDDEN
            self.input_size = input_size
            self.layers = nn.Sequential(
                nn.Linear(input_size, h1),
                nn.Dropout(0.2),
                nn.Linear(h1, h2),
                nn.Dropout(0.2),
                nn.Linear(h2, h3),
                nn.Dropout(0.1),
                nn.Linear(h3, h4),
                nn.Linear(h4, 1),
            )

        def forward(self, x):
            return self.layers(x)

    return AestheticMLP()


def watermark_net(arch: str = "efficientnet_b3a"):
    import timm
    from torch import nn

    name = TIMM_ALIASES.get(arch, arch)
    if not timm.is_model(name):
        raise ModelError(f"unknown timm architecture {arch!r} for the watermark model")
    model = timm.create_model(name, pretrained=False, num_classes=2)
    h1, h2 = WATERMARK_HIDDEN
    model.classifier = nn.Sequential(
        nn.Linear(model.num_features, h1), nn.ReLU(), nn.Dropout(p=0.3), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 2)
    )
    return model


class AestheticScorer:
    """aesthetic_score_laion_v2 from the embedding the ViT-L/14 scorer shares: no second forward pass."""

    columns = ("aesthetic_score_laion_v2",)
    views: tuple[ViewSpec, ...] = ()
    provides: tuple[str, ...] = ()

    def __init__(self, name: str, spec: HeadSpec, embedding_key: str, options: StorageOptions | None = None):
        self.name = name
        self.spec = spec
        self.options = options
        self.needs = (embedding_key,)
        self.model = None
        self.device = "cpu"

    def describe(self) -> str:
        return f"LAION aesthetic v2 MLP on the ViT-L/14 embedding, from {self.spec.weights}"

    def load(self, device: str) -> None:
        weights.check_exists(self.name, self.spec.weights, self.options)
        state = weights.load_state_dict(self.name, self.spec.weights, self.options)
        first = state.get("layers.0.weight")
        if first is None:
            raise ModelError(f"model {self.name!r}: {self.spec.weights} has no layers.0.weight (not an aesthetic v2 head)")
        model = aesthetic_mlp(int(first.shape[1]))
        weights.load_into(self.name, model, state, self.spec.weights)
        self.model = model.to(device).eval()
        self.device = device

    def head(self, embedding):
        import torch

        if embedding.shape[-1] != self.model.input_size:
            raise ModelError(
                f"model {self.name!r}: head takes {self.model.input_size}-d embeddings but ViT-L/14 gives {embedding.shape[-1]}"
            )
        with torch.inference_mode():
            return self.model(embedding.float()).squeeze(-1)

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        embedding = batch.features.get(self.needs[0])
        if embedding is None:
            raise ModelError(f"model {self.name!r}: no {self.needs[0]!r} in the batch (the ViT-L/14 scorer must run first)")
        return {self.columns[0]: self.head(embedding).cpu().numpy().astype(np.float32)}


class WatermarkScorer:
    columns = ("watermark_score",)
    provides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __init__(self, name: str, spec: WatermarkSpec, options: StorageOptions | None = None):
        self.name = name
        self.spec = spec
        self.options = options
        self.views = (ViewSpec("stretch", spec.image_size),)
        self.model = None
        self.device = "cpu"

    def describe(self) -> str:
        return f"LAION watermark {self.spec.arch} + 1536-625-256-2 head, from {self.spec.weights}"

    def load(self, device: str) -> None:
        weights.check_exists(self.name, self.spec.weights, self.options)
        self.model = weights.load_module(self.name, watermark_net(self.spec.arch), self.spec.weights, self.options, device)
        self.device = device

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        import torch

        x = to_device_nchw(batch.view(self.views[0]), self.device, IMAGENET_MEAN, IMAGENET_STD)
        with torch.inference_mode(), _autocast(self.device):
            logits = self.model(x).float()
        prob = torch.softmax(logits, dim=-1)[:, 0]
        return {self.columns[0]: prob.cpu().numpy().astype(np.float32)}
