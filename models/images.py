"""Decoding once, and the views (resize/crop variants) the scorers share.

Pixels stay uint8 until they reach the device, where each scorer normalises its own view: a uint8
batch is a quarter of the bytes of a float one to copy to the GPU, and the arithmetic is free there.
Decoding is bounded by Pillow's decompression-bomb guard.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from models.base import ViewSpec

MAX_PIXELS = 89_478_485  # Pillow's default bomb limit, stated here so it cannot be lowered elsewhere unseen


class ImageDecodeError(ValueError):
    pass


def decode_rgb(data: bytes | None) -> Image.Image:
    """Decode image bytes to an RGB image or raise ImageDecodeError saying why."""
    if not data:
        raise ImageDecodeError("no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise ImageDecodeError(f"{img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
            img.load()
    except UnidentifiedImageError as e:  # its message holds a memory address: keep the detail reproducible
        raise ImageDecodeError("not a known image format") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(str(e)) from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt streams
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from e
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if "transparency" in img.info else img.convert("RGB")
    return img


def _center_crop(img: Image.Image, size: int) -> np.ndarray:
    # torchvision's Resize(size) + CenterCrop(size) on a PIL image (open_clip's eval transform)
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = img.resize((nw, nh), Image.BICUBIC)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)))


def _stretch(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img.resize((size, size), Image.BILINEAR))


def _letterbox(img: Image.Image, size: int) -> np.ndarray:
    # nudenet's preprocessing: pad right/bottom with black to a square, then cv2 linear resize
    arr = np.asarray(img)
    side = max(arr.shape[:2])
    padded = np.zeros((side, side, 3), np.uint8)
    padded[: arr.shape[0], : arr.shape[1]] = arr
    return cv2.resize(padded, (size, size), interpolation=cv2.INTER_LINEAR)


def make_view(img: Image.Image, spec: ViewSpec) -> np.ndarray:
    if spec.kind == "center_crop":
        return _center_crop(img, spec.size)
    if spec.kind == "stretch":
        return _stretch(img, spec.size)
    if spec.kind == "stretch_nearest":  # keras load_img(target_size=...)'s default: GantMan's predict.py
        return np.asarray(img.resize((spec.size, spec.size), Image.NEAREST))
    if spec.kind == "letterbox":
        return _letterbox(img, spec.size)
    if spec.kind == "gray":
        return np.asarray(img.convert("L"))
    raise ValueError(f"unknown view kind {spec.kind!r}")


def image_views(img: Image.Image, specs: Iterable[ViewSpec]) -> dict[ViewSpec, np.ndarray]:
    return {spec: make_view(img, spec) for spec in specs}


def stack_views(per_image: list[dict[ViewSpec, np.ndarray]], specs: Iterable[ViewSpec]) -> dict:
    """Per-image views -> one array per view (gray views stay a list: their sizes differ)."""
    out: dict = {}
    for spec in specs:
        arrays = [v[spec] for v in per_image]
        if spec.kind == "gray":
            out[spec] = arrays
        elif arrays:
            out[spec] = np.stack(arrays)
        else:
            out[spec] = np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return out


def to_device_nchw(batch: np.ndarray, device: str, mean: tuple, std: tuple, scale: float = 255.0):
    """uint8 NHWC -> normalised float32 NCHW on ``device`` ((x / scale - mean) / std)."""
    import torch

    if isinstance(batch, torch.Tensor):  # made on the device already (models.gpu_decode)
        t = batch.to(device)
    else:
        t = torch.from_numpy(np.ascontiguousarray(batch))
        if device.startswith("cuda"):
            t = t.pin_memory().to(device, non_blocking=True)
    t = t.permute(0, 3, 1, 2).float().div_(scale)
    m = torch.tensor(mean, device=t.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=t.device).view(1, -1, 1, 1)
    return t.sub_(m).div_(s).contiguous()
