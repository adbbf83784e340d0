"""Compact local features of an image for near-duplicate verification.

A 64-bit perceptual key sees the whole picture: a copy cropped to another aspect, rotated by a few
degrees or with a sticker over a fifth of it lands too far from the original's key (or any of its
window keys) for a banded join at small k. Local features see parts: ORB keypoints (FAST corners with
a rotation-compensated 256-bit BRIEF descriptor, OpenCV) of a small grayscale copy, kept per row, let a
candidate pair be *verified*: descriptors matched both ways, then a similarity transform (rotation,
uniform scale, translation: what crops, resizes, bars and rotations do) fitted with RANSAC; the pair is
the same picture when enough matches agree with it (filters/dedup/pair_verify.py).

Keypoints are found on a small copy (``FEATURES_SIDE`` pixels on the longer side, area averaging), so the
cost does not grow with the image, and spread over a 4x4 grid (the strongest few per cell) so that a
caption or a sticker, whose corners are the strongest in the picture, cannot hold most of them.

Each row also keeps a tiny grayscale copy (``THUMB_SIDE`` pixels on the longer side, from the same small
copy): once the keypoints have proposed a transform, the verification compares the two pictures' pixels
over the part they share (filters/dedup/pair_verify.py), which holds where keypoints are too few to agree
in enough places (strong zoom, a copy shrunk onto a filled canvas, an overlay over a quarter of it).

Per row: ``FEATURES_MAX`` keypoints at most, each (x, y) in 1/8 pixels of the small copy as uint16 and
32 descriptor bytes: 36 bytes a keypoint, and the tiny copy (at most ``THUMB_SIDE ** 2`` bytes)
(``pack_features``: a header, the records, the tiny copy's pixels). ORB is not mirror-invariant:
mirrored copies are left to the 64-bit key (dihedral-invariant), which links them at small distance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

FEATURES_SIDE = 256  # longer side of the grayscale copy the keypoints are found on
FEATURES_MAX = 96  # keypoints kept per image (strongest FAST response first)
DESCRIPTOR_BYTES = 32
RECORD_BYTES = 4 + DESCRIPTOR_BYTES  # x, y as uint16 + the descriptor
THUMB_SIDE = 64  # longer side of the tiny grayscale copy kept for the pixel comparison
PACK_MAGIC = b"LF2"  # pack_features' header: magic, small copy (w, h), keypoints n, tiny copy (w, h)
_HEADER = np.dtype([("w", "<u2"), ("h", "<u2"), ("n", "<u2"), ("tw", "u1"), ("th", "u1")])
_START = len(PACK_MAGIC) + _HEADER.itemsize  # where the keypoint records begin
PACKED_MAX = _START + FEATURES_MAX * RECORD_BYTES + THUMB_SIDE**2  # bytes of pack_features at most


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one image: ``xy`` (n, 2) float32 in the small copy's pixels, ``descriptors`` (n, 32)
    uint8, ``size`` the small copy's (width, height)."""

    xy: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int] = (0, 0)  # (width, height) of the small copy the keypoints are in
    thumb: np.ndarray | None = None  # (th, tw) uint8: the small copy at THUMB_SIDE on its longer side

    def __len__(self) -> int:
        return len(self.xy)


EMPTY = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8))


@dataclass(frozen=True)
class FeatureParams:
    side: int = FEATURES_SIDE
    max_features: int = FEATURES_MAX
    fast_threshold: int = 12
    edge_threshold: int = 15
    scale_factor: float = 1.3
    levels: int = 4
    grid: int = 4  # keypoints spread over grid x grid cells, max_features / grid**2 strongest per cell
    detect: int = 400  # keypoints detected before the spread selection
    # a low-texture picture (a micrograph, a flat illustration) gives few FAST corners at fast_threshold:
    # with fewer than retry_below of them, detect again at retry_fast_threshold (0: never)
    retry_below: int = 48
    retry_fast_threshold: int = 4


def small_gray(gray: np.ndarray, side: int = FEATURES_SIDE) -> np.ndarray:
    """The grayscale picture with its longer side at most ``side`` pixels, by area averaging in two steps:
    Pillow's ``reduce`` by the whole factor (a box average, fast at any size), then OpenCV's INTER_AREA for
    the rest (< 2x). One INTER_AREA at a fractional factor of a large picture cost ~3 ms of a 0.8 MP
    photo, more than its keypoints (bench/dedup_cost.py); the two steps ~1 ms, within ~3 gray levels on
    average, and the same verification figures on bench/neardup_quality.py."""
    import cv2
    from PIL import Image

    h, w = gray.shape
    scale = side / max(h, w)
    pixels = np.ascontiguousarray(gray, np.uint8)
    if scale >= 1.0 or min(h, w) == 0:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    factor = int(1.0 / scale)
    if factor >= 2 and min(h, w) >= 8 * factor:  # (a sliver's partial last block would weigh too much)
        pixels = np.asarray(Image.fromarray(pixels).reduce(factor))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


_ORB: dict[FeatureParams, object] = {}


def _orb(params: FeatureParams):
    import cv2

    if params not in _ORB:
        _ORB[params] = cv2.ORB_create(
            nfeatures=params.detect,
            scaleFactor=params.scale_factor,
            nlevels=params.levels,
            edgeThreshold=params.edge_threshold,
            patchSize=params.edge_threshold * 2 + 1,
            fastThreshold=params.fast_threshold,
        )
    return _ORB[params]


def features_from_gray(gray: np.ndarray, params: FeatureParams = FeatureParams()) -> LocalFeatures:
    """ORB keypoints and descriptors of a uint8 grayscale picture (any size; it is shrunk first)."""
    import cv2

    small = small_gray(gray, params.side)
    if min(small.shape) < 2 * params.edge_threshold + 2:
        return EMPTY
    orb = _orb(params)
    found = orb.detect(small, None)
    if len(found) < params.retry_below:
        params = replace(params, fast_threshold=params.retry_fast_threshold, retry_below=0)
        orb = _orb(params)
        found = orb.detect(small, None)
    if not found:
        return EMPTY
    chosen = spread(found, small.shape, params.grid, params.max_features)
    keypoints, descriptors = orb.compute(small, chosen)
    if descriptors is None or not keypoints:
        return EMPTY
    xy = cv2.KeyPoint_convert(keypoints).astype(np.float32).reshape(-1, 2)
    size = (small.shape[1], small.shape[0])
    return LocalFeatures(xy, np.ascontiguousarray(descriptors, np.uint8), size, small_gray(small, THUMB_SIDE))


def spread(keypoints, shape: tuple[int, int], grid: int, total: int) -> list:
    """The strongest keypoints of each of grid x grid cells (total / grid**2 each; cells with fewer
    leave their share to the strongest of the rest), so that no one textured region (a caption, a
    sticker) holds most of them. Chosen first by response (strongest first, ties in detection order),
    then the strongest of the rest."""
    if not keypoints:
        return []
    import cv2

    h, w = shape
    per_cell = max(1, total // (grid * grid))
    order = np.argsort(-np.array([k.response for k in keypoints], np.float64), kind="stable")
    pt = cv2.KeyPoint_convert(keypoints).astype(np.float64)[order]  # (n, 2) x, y
    cell = np.minimum(grid - 1, (pt[:, 1] * grid / h).astype(np.int64)) * grid + np.minimum(grid - 1, (pt[:, 0] * grid / w).astype(np.int64))
    # rank of each keypoint among the stronger ones of its cell: position in a stable sort by cell
    by_cell = np.argsort(cell, kind="stable")
    starts = np.searchsorted(cell[by_cell], cell[by_cell], side="left")
    rank = np.empty(len(cell), np.int64)
    rank[by_cell] = np.arange(len(cell)) - starts
    first = rank < per_cell
    rest = order[~first]
    chosen = np.concatenate([order[first], rest[: max(0, total - int(first.sum()))]])
    return [keypoints[i] for i in chosen.tolist()]


def pack_features(f: LocalFeatures) -> bytes:
    """Row storage (a binary column): ``PACK_MAGIC``, a header (small copy's width, height, keypoints n as
    little-endian uint16, the tiny copy's width, height as uint8), per keypoint x, y in 1/8 pixels as
    little-endian uint16 and its 32 descriptor bytes, then the tiny copy's pixels row by row."""
    xy = np.clip(np.rint(f.xy * 8), 0, 65535).astype("<u2")
    records = np.concatenate([xy.view(np.uint8).reshape(-1, 4), f.descriptors.reshape(-1, DESCRIPTOR_BYTES)], axis=1)
    thumb = np.zeros((0, 0), np.uint8) if f.thumb is None else np.ascontiguousarray(f.thumb, np.uint8)
    header = np.array([(f.size[0], f.size[1], len(f.xy), thumb.shape[1], thumb.shape[0])], _HEADER)
    return PACK_MAGIC + header.tobytes() + records.tobytes() + thumb.tobytes()


def unpack_features(blob: bytes | None) -> LocalFeatures:
    """pack_features' inverse; a blob of the short layout (no magic: size, then records; no tiny copy) unpacks
    without ``thumb``, and such a pair is verified by its keypoints alone."""
    if not blob or len(blob) < 4:
        return EMPTY
    if blob.startswith(PACK_MAGIC) and len(blob) >= _START:
        head = np.frombuffer(blob[len(PACK_MAGIC) : _START], _HEADER)[0]
        n, tw, th = int(head["n"]), int(head["tw"]), int(head["th"])
        start = _START
        if len(blob) == start + n * RECORD_BYTES + tw * th:
            rec = np.frombuffer(blob[start : start + n * RECORD_BYTES], np.uint8).reshape(-1, RECORD_BYTES)
            pixels = np.frombuffer(blob[start + n * RECORD_BYTES :], np.uint8).reshape(th, tw) if tw * th else None
            return _records(rec, (int(head["w"]), int(head["h"])), pixels)
    if (len(blob) - 4) % RECORD_BYTES:
        raise ValueError(f"not packed local features ({len(blob)} bytes)")
    size = tuple(int(v) for v in np.frombuffer(blob[:4], "<u2"))
    return _records(np.frombuffer(blob[4:], np.uint8).reshape(-1, RECORD_BYTES), (size[0], size[1]), None)


def _records(rec: np.ndarray, size: tuple[int, int], thumb: np.ndarray | None) -> LocalFeatures:
    xy = np.ascontiguousarray(rec[:, :4]).view("<u2").reshape(-1, 2).astype(np.float32) / 8
    return LocalFeatures(xy, np.ascontiguousarray(rec[:, 4:]), size, thumb)
