"""Weight files: local paths or s3:// URIs, read as safetensors or with ``torch.load(weights_only=True)``.

Nothing is ever fetched from a model hub. An object-store file is copied once into a local cache
folder ($CURATION_MODEL_CACHE, default ~/.cache/curation/models) because torch, onnxruntime and
safetensors read local files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path

from curation import storage
from curation.storage import StorageOptions
from models.base import MissingWeightsError, ModelError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("CURATION_MODEL_CACHE", Path.home() / ".cache" / "curation" / "models"))


def check_exists(model: str, uri: str, options: StorageOptions | None = None) -> None:
    if not storage.exists(uri, options):
        raise MissingWeightsError(f"model {model!r}: weight file not found: {uri}")


def local_path(model: str, uri: str, options: StorageOptions | None = None) -> str:
    """A local file holding ``uri`` (the path itself, or a cached copy of an s3:// object)."""
    check_exists(model, uri, options)
    if not storage.is_s3(uri):
        return storage.filesystem(uri)[1]
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache_dir() / digest / storage.basename(uri)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("model %s: copying %s to %s", model, uri, target)
        tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
        fs, path = storage.filesystem(uri, options)
        with fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
        os.replace(tmp, target)
    return str(target)


def load_state_dict(model: str, uri: str, options: StorageOptions | None = None) -> dict:
    """A flat name -> tensor dict. Pickle-free: safetensors, or torch.load with weights_only=True.
    Common wrappers (``state_dict``, ``model``) and DataParallel's ``module.`` prefix are unwrapped."""
    import torch

    path = local_path(model, uri, options)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:  # what weights_only raises for a pickled module/object
            raise ModelError(f"model {model!r}: {uri} is not a weights-only checkpoint: {e}") from e
        except (RuntimeError, ValueError, EOFError) as e:
            raise ModelError(f"model {model!r}: cannot read {uri} as a torch state dict: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"model {model!r}: {uri} holds a {type(state).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_into(model_name: str, module, state: dict, uri: str) -> None:
    """Strict load with a message that lists what does not match."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if shapes:
            k = shapes[0]
            detail.append(f"{len(shapes)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        raise ModelError(f"model {model_name!r}: {uri} does not fit the architecture: {'; '.join(detail)}")
    module.load_state_dict(state, strict=True)


def load_module(model_name: str, module, uri: str, options: StorageOptions | None, device: str):
    """Read ``uri`` into ``module`` (strict) and return it in eval mode on ``device``."""
    weights_state = load_state_dict(model_name, uri, options)
    load_into(model_name, module, weights_state, uri)
    return module.to(device).eval()


def save_state_dict(state: dict, uri: str, options: StorageOptions | None = None) -> None:
    """Write ``state`` as safetensors to a local path or s3:// URI (atomically, through curation.storage)."""
    from safetensors.torch import save

    storage.write_bytes_atomic(uri, save({k: v.detach().contiguous() for k, v in state.items()}), options)
