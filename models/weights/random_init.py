"""Random-weight checkpoints of the real architectures, plus a MODELS.toml pointing at them.

``size="tiny"``: the same model families at small widths (open_clip ViT configs with width 64 and two
layers, timm's ``test_efficientnet``), a few MB, for tests and the sample run. ``size="real"``: ViT-B-32,
ViT-L-14, LAION's 768-d aesthetic head and efficientnet_b3a, for benchmarks (about 2.5 GB).
The scores they give are meaningless; only shapes, ranges and speed are real. Same seed, same files.
"""

from __future__ import annotations

import json
import logging

from curation import storage
from curation.storage import StorageOptions
from models import weights
from models.base import ModelError

log = logging.getLogger(__name__)

TINY_CLIP = {
    "curation-tiny-ViT-B-32": {"patch_size": 32},
    "curation-tiny-ViT-L-14": {"patch_size": 14},
}
REAL_CLIP = {"clip_vitb32": "ViT-B-32", "clip_vitl14": "ViT-L-14"}
SIZES = ("tiny", "real")


def tiny_clip_config(patch_size: int, width: int = 64, embed_dim: int = 64) -> dict:
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": width, "patch_size": patch_size, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 2, "layers": 2},
    }


def _seeded(seed: int):
    import torch

    torch.manual_seed(seed)


def write_random_models(out_dir: str, size: str = "tiny", seed: int = 0, options: StorageOptions | None = None) -> str:
    """Write the checkpoints and OUT_DIR/MODELS.toml (a local folder or an s3:// prefix), each file
    atomically; return the MODELS.toml path."""
    import torch

    from models.clip import build_clip
    from models.heads import aesthetic_mlp, watermark_net

    if size not in SIZES:
        raise ModelError(f"size must be one of {SIZES}, got {size!r}")
    sections: dict[str, dict] = {}
    with torch.no_grad():
        for i, section in enumerate(("clip_vitb32", "clip_vitl14")):
            if size == "tiny":
                name = list(TINY_CLIP)[i]
                arch = f"{name}.json"
                config = json.dumps(tiny_clip_config(**TINY_CLIP[name]), indent=2)
                storage.write_bytes_atomic(storage.join(out_dir, arch), config.encode(), options)
            else:
                name = arch = REAL_CLIP[section]
            _seeded(seed + i)
            model = build_clip(storage.join(out_dir, arch) if arch.endswith(".json") else arch, options=options)
            weights.save_state_dict(model.state_dict(), storage.join(out_dir, f"{section}.safetensors"), options)
            sections[section] = {"arch": arch, "weights": f"{section}.safetensors", "quick_gelu": True}
            if section == "clip_vitl14":
                embed_dim = int(model.text_projection.shape[1])
            del model
        _seeded(seed + 2)
        aesthetic = aesthetic_mlp(embed_dim).state_dict()
        weights.save_state_dict(aesthetic, storage.join(out_dir, "aesthetic_laion_v2.safetensors"), options)
        sections["aesthetic_laion_v2"] = {"weights": "aesthetic_laion_v2.safetensors"}
        arch = "test_efficientnet" if size == "tiny" else "efficientnet_b3a"
        _seeded(seed + 3)
        weights.save_state_dict(watermark_net(arch).state_dict(), storage.join(out_dir, "watermark.safetensors"), options)
        sections["watermark"] = {"arch": arch, "weights": "watermark.safetensors"}
    path = storage.join(out_dir, "MODELS.toml")  # written last and atomically: it exists only once every checkpoint does
    storage.write_bytes_atomic(path, models_toml(sections, size).encode(), options)
    log.info("wrote %s random-weight models to %s", size, out_dir)
    return path


def models_toml(sections: dict[str, dict], size: str) -> str:
    lines = [
        f"# RANDOM-WEIGHT {size} checkpoints of the real architectures (curation models init-random).",
        "# Their scores are meaningless: use them to test the pipeline, not to select data.",
        "# opennsfw2 and GantMan are not configured: their columns stay null.",
        "",
    ]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)
