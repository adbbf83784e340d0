"""COYO-700M's image rules as one pure function: downloaded bytes in, a stored image or a Reason out.

Decoding is bounded (hostile bytes are the normal case on the web):

- only the formats in ``ImageRules.formats`` are opened (Pillow would otherwise hand EPS to Ghostscript);
- the declared pixel count is checked against ``max_pixels`` from the header, before any pixel is decoded,
  and Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) stays on;
- the cheap rules (bytes, shorter side, aspect ratio) run on the header's size, so most rejected images
  are never decoded; JPEGs are decoded at reduced scale (``draft``) when they will be shrunk anyway;
- EXIF orientation is applied before measuring: ``width``/``height`` are the size a viewer shows;
- palette, alpha (composited on white, as img2dataset does), CMYK, 1-bit and 16-bit images are converted
  to RGB; float images and vector formats (SVG) are rejected as ``unsupported_image``; animated images
  keep their first frame (or are rejected, ``animated = "reject"``).

The stored image is resized keep-ratio to ``resize_side_px`` on the shorter side (never upscaled) and
re-encoded, which also drops EXIF metadata such as GPS positions.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from schemas import Reason, Rejection

ORIENTATION_TAG = 0x0112  # EXIF Orientation
SWAPS_SIDES = {5, 6, 7, 8}  # orientations that rotate by 90 degrees
ENCODERS = {"jpeg": "JPEG", "webp": "WEBP"}
ANIMATED_POLICIES = ("first_frame", "reject")
# What Pillow's plugins raise on malformed input (it has no single base class for "bad file").
DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError, TypeError, ZeroDivisionError)
_WHITE = (255, 255, 255)
Image.init()  # register every plugin now, so ``formats`` can name any of them


@dataclass(frozen=True)
class ImageRules:
    """Defaults are COYO-700M's: >= 5 KB, shorter side >= 200 px, aspect ratio <= 3."""

    min_bytes: int = 5 * 1024  # smaller original bodies are rejected too_small_bytes
    max_bytes: int = 20 * 1024 * 1024  # larger bodies are not read past this (too_large_bytes)
    min_side_px: int = 200  # original shorter side below this: too_small_side
    max_aspect_ratio: float = 3.0  # longer side / shorter side above this: aspect_ratio
    max_pixels: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # declared width*height above -> decompression_bomb
    formats: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "ICO", "AVIF")  # Pillow formats decoded; others: unsupported_image
    animated: str = "first_frame"  # or "reject"
    resize_side_px: int = 384  # shorter side of the stored image; never upscaled; 0 keeps the size
    encode_format: str = "jpeg"  # or "webp"
    encode_quality: int = 90  # JPEG / WebP quality of the stored image

    def __post_init__(self) -> None:
        if self.encode_format not in ENCODERS:
            raise ValueError(f"encode_format {self.encode_format!r}: use one of {sorted(ENCODERS)}")
        if self.animated not in ANIMATED_POLICIES:
            raise ValueError(f"animated {self.animated!r}: use one of {list(ANIMATED_POLICIES)}")
        unknown = sorted(set(self.formats) - set(Image.OPEN))
        if unknown:
            raise ValueError(f"formats {unknown} are not image formats this Pillow opens; known: {sorted(Image.OPEN)}")
        if self.min_side_px < 1 or self.max_aspect_ratio < 1 or self.resize_side_px < 0:
            raise ValueError("min_side_px >= 1, max_aspect_ratio >= 1 and resize_side_px >= 0 are required")


@dataclass(frozen=True)
class StoredImage:
    width: int  # original size, after EXIF orientation
    height: int
    image_bytes: bytes  # resized keep-ratio, re-encoded
    image_format: str
    bytes_original: int


def check_size(width: int, height: int, rules: ImageRules) -> Rejection | None:
    """The geometric rules on the shown (oriented) size; None = keep."""
    short, long = min(width, height), max(width, height)
    if short < rules.min_side_px:
        return Rejection(Reason.TOO_SMALL_SIDE, f"{width}x{height}: shorter side {short} < {rules.min_side_px} px")
    if long / short > rules.max_aspect_ratio:
        return Rejection(Reason.ASPECT_RATIO, f"{width}x{height}: aspect {long / short:.2f} > {rules.max_aspect_ratio}")
    return None


def resized_size(width: int, height: int, side: int) -> tuple[int, int]:
    """Keep-ratio size whose shorter side is ``side``; the size itself when it is not larger (no upscaling)."""
    short = min(width, height)
    if side <= 0 or short <= side:
        return width, height
    scale = side / short
    return (side, max(1, round(height * scale))) if width == short else (max(1, round(width * scale)), side)


def sniff(data: bytes) -> str:
    """A name for bytes Pillow cannot identify, for the rejection detail."""
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "svg"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "html"
    if head.startswith(b"%pdf"):
        return "pdf"
    return "unidentified bytes"


def _open(data: bytes, rules: ImageRules) -> Image.Image | Rejection:
    if not data:
        return Rejection(Reason.NOT_DECODABLE, "empty body (0 bytes)")
    try:
        return Image.open(io.BytesIO(data), formats=list(rules.formats))
    except Image.DecompressionBombError as e:
        return Rejection(Reason.DECOMPRESSION_BOMB, str(e))
    except UnidentifiedImageError:
        kind = sniff(data)
        if kind == "svg":
            return Rejection(Reason.UNSUPPORTED_IMAGE, "svg: vector images are not supported")
        return Rejection(Reason.NOT_DECODABLE, f"not an image Pillow reads ({kind}, {len(data)} bytes)")
    except DECODE_ERRORS as e:
        return Rejection(Reason.NOT_DECODABLE, f"cannot open: {type(e).__name__}: {e}")


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(ORIENTATION_TAG, 1))
    except DECODE_ERRORS:  # a broken EXIF block is not worth dropping the image for
        return 1


def _to_rgb(img: Image.Image) -> Image.Image | Rejection:
    """RGB pixels: alpha composited on white, 16-bit scaled to 8, float rejected."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode.startswith("I;16") or mode == "I":
        values = np.asarray(img).astype(np.int64)
        # full-range 16-bit data is shifted to 8 bits; 8-bit data stored in 16 bits is kept as is
        values = values >> 8 if values.max(initial=0) > 255 else values
        img = Image.fromarray(values.clip(0, 255).astype(np.uint8), "L")
    elif mode == "F":
        return Rejection(Reason.UNSUPPORTED_IMAGE, "32-bit float pixels (mode F)")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return img.convert("RGB")
    except ValueError as e:
        return Rejection(Reason.UNSUPPORTED_IMAGE, f"mode {mode}: {e}")


def _encode(img: Image.Image, rules: ImageRules) -> bytes:
    out = io.BytesIO()
    img.save(out, ENCODERS[rules.encode_format], quality=rules.encode_quality)
    return out.getvalue()


def _measure(img: Image.Image, n_bytes: int, rules: ImageRules) -> tuple[int, int, int] | Rejection:
    """The header-only rules; (shown width, shown height, EXIF orientation) when they pass."""
    stored_w, stored_h = img.size
    if stored_w * stored_h > rules.max_pixels:
        return Rejection(Reason.DECOMPRESSION_BOMB, f"{stored_w}x{stored_h} pixels > max_pixels {rules.max_pixels}")
    if n_bytes < rules.min_bytes:
        return Rejection(Reason.TOO_SMALL_BYTES, f"{n_bytes} bytes < {rules.min_bytes}")
    if stored_w < 1 or stored_h < 1:
        return Rejection(Reason.NOT_DECODABLE, f"declared size {stored_w}x{stored_h}")
    orientation = _orientation(img)
    width, height = (stored_h, stored_w) if orientation in SWAPS_SIDES else (stored_w, stored_h)
    rejected = check_size(width, height, rules)
    if rejected:
        return rejected
    if getattr(img, "is_animated", False) and rules.animated == "reject":
        return Rejection(Reason.UNSUPPORTED_IMAGE, f"animated or multi-page ({img.n_frames} frames)")
    return width, height, orientation


def _render(img: Image.Image, shown: tuple[int, int], orientation: int, rules: ImageRules) -> bytes | Rejection:
    """Decode (reduced for JPEG), orient, convert to RGB, resize keep-ratio, encode."""
    target = resized_size(*shown, rules.resize_side_px)
    if img.format == "JPEG" and target != shown:
        # decode at the smallest power-of-two scale that is still >= the target (libjpeg DCT scaling)
        img.draft(None, (target[1], target[0]) if orientation in SWAPS_SIDES else target)
    try:
        img.load()
        rgb = _to_rgb(ImageOps.exif_transpose(img) if orientation != 1 else img)
        if isinstance(rgb, Rejection):
            return rgb
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        return _encode(rgb, rules)
    except Image.DecompressionBombError as e:
        return Rejection(Reason.DECOMPRESSION_BOMB, str(e))
    except DECODE_ERRORS as e:
        return Rejection(Reason.NOT_DECODABLE, f"cannot decode: {type(e).__name__}: {e}")


def process_image(data: bytes, rules: ImageRules) -> StoredImage | Rejection:
    """Apply every image rule to downloaded ``data``; return the image to store or why it is dropped."""
    if len(data) > rules.max_bytes:
        return Rejection(Reason.TOO_LARGE_BYTES, f"{len(data)} bytes > {rules.max_bytes}")
    img = _open(data, rules)
    if isinstance(img, Rejection):
        return img
    with img:
        measured = _measure(img, len(data), rules)
        if isinstance(measured, Rejection):
            return measured
        width, height, orientation = measured
        encoded = _render(img, (width, height), orientation, rules)
    if isinstance(encoded, Rejection):
        return encoded
    return StoredImage(width, height, encoded, rules.encode_format, len(data))
