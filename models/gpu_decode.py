"""JPEG decoding and view resizing on the GPU, so decoding does not starve it.

JPEGs (baseline or progressive, RGB or grayscale: what the download stage stores) are decoded in one
batched call to torchvision's ``decode_jpeg(device="cuda")`` (nvJPEG) and each view is made with
``torch.nn.functional.interpolate`` on the device; the views stay there as uint8 NHWC tensors, which the
torch scorers normalise in place and the ONNX scorers copy back (:func:`models.base.as_numpy`). Every
other input (PNG, WebP, CMYK JPEG, anything nvJPEG refuses) falls back to the CPU path of
models.images, image by image, and so does every image if torchvision cannot decode on the device.
The decompression-bomb guard reads the header with Pillow before any pixel is decoded.

The GPU resizes follow the CPU views (PIL bicubic / bilinear with antialiasing; OpenCV's linear resize
without it for the nudenet letterbox), not bit for bit: scores agree within fp16 tolerance, which
tests/models/test_gpu_decode.py checks where a GPU exists (and on CPU tensors everywhere).
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
from PIL import Image

from models.base import ViewSpec
from models.images import MAX_PIXELS, ImageDecodeError, decode_rgb, image_views

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"


def gpu_decodable(data: bytes | None) -> tuple[int, int] | None:
    """(width, height) when ``data`` is a JPEG nvJPEG can take (RGB/YCbCr or grayscale, within the
    pixel limit), else None (the CPU path decides, and says why when it cannot decode either)."""
    if not data or not data.startswith(JPEG_MAGIC):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format != "JPEG" or img.mode not in ("RGB", "L") or img.width * img.height > MAX_PIXELS:
                return None
            return img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _resize(t, height: int, width: int, mode: str, antialias: bool):
    import torch
    import torch.nn.functional as F  # noqa: N812

    x = t.unsqueeze(0).float()
    if mode.startswith("nearest"):
        x = F.interpolate(x, size=(height, width), mode=mode)
    else:
        x = F.interpolate(x, size=(height, width), mode=mode, antialias=antialias, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).squeeze(0)


def make_view_tensor(chw, spec: ViewSpec):
    """One view of a uint8 CHW RGB tensor, as uint8 HWC on the same device (gray: a numpy array)."""
    import torch

    _, h, w = chw.shape
    if spec.kind == "center_crop":
        size = spec.size
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        resized = _resize(chw, nh, nw, "bicubic", antialias=True)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        return resized[:, top : top + size, left : left + size].permute(1, 2, 0).contiguous()
    if spec.kind == "stretch":
        return _resize(chw, spec.size, spec.size, "bilinear", antialias=True).permute(1, 2, 0).contiguous()
    if spec.kind == "stretch_nearest":  # PIL's NEAREST picks the source pixel as nearest-exact does
        return _resize(chw, spec.size, spec.size, "nearest-exact", antialias=False).permute(1, 2, 0).contiguous()
    if spec.kind == "letterbox":
        side = max(h, w)
        padded = torch.zeros((3, side, side), dtype=chw.dtype, device=chw.device)
        padded[:, :h, :w] = chw
        return _resize(padded, spec.size, spec.size, "bilinear", antialias=False).permute(1, 2, 0).contiguous()
    if spec.kind == "gray":  # PIL's L: (299 R + 587 G + 114 B) / 1000, rounded
        weights = torch.tensor([299, 587, 114], dtype=torch.int32, device=chw.device).view(3, 1, 1)
        gray = ((chw.to(torch.int32) * weights).sum(0) + 500) // 1000
        return gray.to(torch.uint8).cpu().numpy()
    raise ValueError(f"unknown view kind {spec.kind!r}")


def decode_batch(images: list[bytes | None], specs: tuple[ViewSpec, ...], device: str) -> list[tuple[dict, tuple[int, int]] | str]:
    """What AnnotationRunner._prepare gives, with JPEGs decoded and resized on ``device``:
    per image (views, (width, height)) or the reason it could not be decoded."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list = [None] * len(images)
    gpu_rows = [i for i, data in enumerate(images) if gpu_decodable(data)]
    decoded: dict[int, object] = {}
    if gpu_rows:
        tensors = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in gpu_rows]
        try:
            decoded = dict(zip(gpu_rows, decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device), strict=True))
        except RuntimeError as e:  # one bad stream fails the batch: decode one by one, CPU for the failures
            log.debug("batched decode_jpeg failed (%s); decoding one by one", e)
            for i, t in zip(gpu_rows, tensors, strict=True):
                try:
                    decoded[i] = decode_jpeg(t, mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    pass
    for i, data in enumerate(images):
        chw = decoded.get(i)
        if chw is not None:
            out[i] = ({spec: make_view_tensor(chw, spec) for spec in specs}, (int(chw.shape[2]), int(chw.shape[1])))
            continue
        try:
            img = decode_rgb(data)
            out[i] = (image_views(img, specs), img.size)
        except ImageDecodeError as e:
            out[i] = str(e) or "not decodable"
    return out


def stack(per_image: list[dict], specs: tuple[ViewSpec, ...], device: str) -> dict:
    """One NHWC tensor per view on ``device`` (CPU-decoded images are moved there); gray views stay lists."""
    import torch

    out: dict = {}
    for spec in specs:
        arrays = [v[spec] for v in per_image]
        if spec.kind == "gray":
            out[spec] = arrays
        elif arrays:
            tensors = [a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]
            if str(device).startswith("cuda"):
                for t in tensors:  # made on the decode stream, read on this one: keep their memory until then
                    t.record_stream(torch.cuda.current_stream())
            out[spec] = torch.stack(tensors)
        else:
            out[spec] = torch.zeros((0, spec.size, spec.size, 3), dtype=torch.uint8, device=device)
    return out
