"""Verification of near-duplicate candidate pairs with local features ([dedup.rules.links] verify).

A candidate pair (two rows whose keys came within a loose distance in the banded join) is the same
picture when enough of their ORB keypoints (curation.imagehash.keypoints) match and agree on one similarity
transform (rotation, uniform scale, translation: crops, resizes, letterbox bars, rotations by any
angle): descriptors matched both ways (mutual nearest neighbours, Hamming distance at most
``max_descriptor_distance``), then cv2.estimateAffinePartial2D with RANSAC; the pair is verified when
at least ``min_inliers`` matches agree within ``ransac_px`` pixels, the transform's scale is sane, and
the agreeing keypoints lie in at least ``min_cells`` of the 4x4 cells of *each* picture. The last rule
is what keeps two different photos under the same caption band or sticker apart: ORB finds its
strongest corners on text, so such a pair has many agreeing matches, all inside the band (bench, every
listed pair verified whatever its keys: 298 of the 4,803 same-template pairs have >= 10 inliers; with
the cells rule and the key gate below, 1 listed negative of 8,005 is linked).

A pair whose keypoints agree in too few places still verifies by its *pixels* (``photometric``): when at
least ``min_photometric_inliers`` matches agree on a sane transform, each picture's tiny grayscale copy
(curation.imagehash.keypoints) is warped onto the other's with that transform, and over the part both show,
cut into ``BLOCK`` x ``BLOCK`` pixel blocks, at least ``min_agreement`` of the textured blocks must
correlate (zero-mean normalised cross-correlation >= ``BLOCK_CORRELATION``), in both directions, over at
least ``min_overlap`` of each picture. Blocks flat in both pictures (bars, sky) say nothing and are left
out; a block flat in one and textured in the other disagrees. Two different photos under one caption
band or sticker agree on the band's blocks only, a zoomed crop or a rotated copy on nearly all.

Linking rule (bench/neardup_quality.py, ``verified``): a pair of rows is linked when their keys (with
windows) are within ``link_distance`` unverified, or within ``candidate_distance`` and verified (the
bench also verifies pairs whose occlusion windows meet, curation.imagehash.windows). ``link_distance`` stays
above 0 because ORB is not mirror-invariant: mirrored copies rely on the dihedral-invariant key.
Pure functions over numpy arrays; no Spark, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from curation.imagehash.keypoints import LocalFeatures

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


@dataclass(frozen=True)
class VerifyRules:
    link_distance: int = 2  # key distance linked without verification
    candidate_distance: int = 10  # key distance up to which a pair is verified
    min_inliers: int = 10
    min_cells: int = 7
    # cells over the part both pictures show instead of each whole picture (exploratory run on the bench set): crop_resize 0.42 -> 0.47
    # but exhaustive false links 65 -> 226 (same-template pairs), so off
    cells_in_overlap: bool = False
    # min_cells on one picture suffices (else on each; exploratory run on the bench set): recall 0.864 -> 0.873 but exhaustive false links
    # 65 -> 325, so off
    cells_on_either: bool = False
    max_descriptor_distance: int = 64  # of 256 bits
    ransac_px: float = 4.0
    max_scale_ratio: float = 8.0  # the transform's scale within 1/this .. this
    photometric: bool = True  # verify by the pixels when the keypoints' cells rule fails (module doc)
    min_photometric_inliers: int = 6
    min_agreement: float = 0.55  # of the textured blocks over the shared part, both directions (bench/neardup_quality.py's sweep)
    min_overlap: float = 0.1  # the shared part's share of each picture (in whole blocks)


@dataclass(frozen=True)
class Verdict:
    matches: int
    inliers: int
    scale: float
    angle: float  # degrees
    support: float = 0.0  # inliers over the keypoints that the transform puts inside the other picture (the fewer side)
    cells: int = 0  # cells of a CELL_GRID x CELL_GRID grid holding an inlier, the fewer of the two pictures
    agreement: float | None = None  # photometric: the smaller share of agreeing blocks of the two directions; None: not compared

    def verified(self, rules: VerifyRules) -> bool:
        if self.inliers >= rules.min_inliers and self.cells >= rules.min_cells:
            return True
        return rules.photometric and self.agreement is not None and self.agreement >= rules.min_agreement


NO_MATCH = Verdict(0, 0, 0.0, 0.0)


def descriptor_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances of (n, 32) uint8 descriptors."""
    x = a[:, None, :] ^ b[None, :, :]
    return _POPCOUNT[x].sum(axis=2, dtype=np.int32)


def mutual_matches(a: np.ndarray, b: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) of descriptor pairs that are each other's nearest neighbour within max_distance."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = descriptor_distances(a, b)
    best_b = d.argmin(axis=1)
    best_a = d.argmin(axis=0)
    ia = np.arange(len(a))
    keep = (best_a[best_b] == ia) & (d[ia, best_b] <= max_distance)
    return ia[keep], best_b[keep]


def _matches(a: np.ndarray, b: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """mutual_matches through OpenCV's brute-force matcher (cross check): same pairs, faster."""
    import cv2

    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    found = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a, b)
    kept = [(m.queryIdx, m.trainIdx) for m in found if m.distance <= max_distance]
    if not kept:
        return np.zeros(0, int), np.zeros(0, int)
    ia, ib = np.array(kept, int).T
    return ia, ib


CELL_GRID = 4


def _cells(xy: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Distinct cells of a CELL_GRID x CELL_GRID grid over the box (x0, y0, x1, y1) that hold one of the points."""
    x0, y0, x1, y1 = box
    if len(xy) == 0 or x1 <= x0 or y1 <= y0:
        return 0
    col = np.clip(((xy[:, 0] - x0) * CELL_GRID / (x1 - x0)).astype(int), 0, CELL_GRID - 1)
    row = np.clip(((xy[:, 1] - y0) * CELL_GRID / (y1 - y0)).astype(int), 0, CELL_GRID - 1)
    return len(set((row * CELL_GRID + col).tolist()))


def _overlap(size: tuple[int, int], other: tuple[int, int], to_self: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box, in a (w, h) picture, of the part the other picture maps onto (2x3 other -> self)."""
    ow, oh = other
    corners = np.array([[0, 0], [ow, 0], [0, oh], [ow, oh]], np.float64) @ to_self[:, :2].T + to_self[:, 2]
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return max(0.0, lo[0]), max(0.0, lo[1]), min(float(size[0]), hi[0]), min(float(size[1]), hi[1])


def _inside(xy: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> int:
    """How many points the 2x3 transform maps inside a (width, height) picture."""
    mapped = xy @ matrix[:, :2].T + matrix[:, 2]
    return int(((mapped[:, 0] >= 0) & (mapped[:, 0] < size[0]) & (mapped[:, 1] >= 0) & (mapped[:, 1] < size[1])).sum())


BLOCK = 8  # pixels of the tiny copies per block side
BLOCK_CORRELATION = 0.5
FLAT_STD = 3.0  # a block whose pixel standard deviation is under this is flat


def _scaled(matrix: np.ndarray, src: LocalFeatures, dst: LocalFeatures) -> np.ndarray:
    """The 2x3 map between small copies (src -> dst) as a map between their tiny copies."""
    (sh, sw), (dh, dw) = src.thumb.shape, dst.thumb.shape
    into = np.diag([dw / dst.size[0], dh / dst.size[1], 1.0])
    out_of = np.diag([src.size[0] / sw, src.size[1] / sh, 1.0])
    return (into @ np.vstack([matrix, [0.0, 0.0, 1.0]]) @ out_of)[:2]


def block_agreement(src: np.ndarray, dst: np.ndarray, to_dst: np.ndarray) -> tuple[float, float]:
    """(share of agreeing blocks, share of dst covered) when ``src`` (uint8 grayscale) is warped onto
    ``dst`` with the 2x3 map ``to_dst``: over the BLOCK x BLOCK blocks of dst that the warped src covers
    whole, leaving out the blocks flat in both, the share whose pixels correlate >= BLOCK_CORRELATION
    (a block flat in one picture only disagrees)."""
    import cv2

    h, w = dst.shape
    warped = cv2.warpAffine(src.astype(np.float32), to_dst, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(src.shape, np.uint8), to_dst, (w, h), flags=cv2.INTER_NEAREST)
    rows, cols = h // BLOCK, w // BLOCK
    if rows == 0 or cols == 0:
        return 0.0, 0.0

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2).reshape(rows * cols, BLOCK * BLOCK)

    covered = blocks(inside).min(axis=1) > 0
    p, q = blocks(warped)[covered], blocks(dst.astype(np.float32))[covered]
    p, q = p - p.mean(axis=1, keepdims=True), q - q.mean(axis=1, keepdims=True)
    sp, sq = np.sqrt((p * p).mean(axis=1)), np.sqrt((q * q).mean(axis=1))
    textured = (sp >= FLAT_STD) | (sq >= FLAT_STD)
    both = (sp >= FLAT_STD) & (sq >= FLAT_STD)
    corr = (p * q).mean(axis=1) / np.maximum(sp * sq, 1e-9)
    agree = int((both & (corr >= BLOCK_CORRELATION)).sum())
    return agree / max(1, int(textured.sum())), float(covered.sum()) / (rows * cols)


def photometric_agreement(fa: LocalFeatures, fb: LocalFeatures, matrix: np.ndarray, min_overlap: float) -> float | None:
    """The smaller block agreement of the two directions (a onto b, b onto a) under the 2x3 map a -> b
    (small copies' pixels); 0.0 when the shared part covers under ``min_overlap`` of either picture,
    None when either has no tiny copy."""
    import cv2

    if fa.thumb is None or fb.thumb is None or 0 in fa.thumb.shape or 0 in fb.thumb.shape:
        return None
    forward = block_agreement(fa.thumb, fb.thumb, _scaled(matrix, fa, fb))
    backward = block_agreement(fb.thumb, fa.thumb, _scaled(cv2.invertAffineTransform(matrix), fb, fa))
    if min(forward[1], backward[1]) < min_overlap:
        return 0.0
    return min(forward[0], backward[0])


def verify_pair(fa: LocalFeatures, fb: LocalFeatures, rules: VerifyRules = VerifyRules()) -> Verdict:
    """How well two images' keypoints agree on one similarity transform (see the module doc)."""
    import cv2

    ia, ib = _matches(fa.descriptors, fb.descriptors, rules.max_descriptor_distance)
    fewest = min(rules.min_inliers, rules.min_photometric_inliers) if rules.photometric else rules.min_inliers
    if len(ia) < max(3, fewest):
        return Verdict(len(ia), 0, 0.0, 0.0)
    src, dst = fa.xy[ia].reshape(-1, 1, 2), fb.xy[ib].reshape(-1, 1, 2)
    matrix, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=rules.ransac_px, maxIters=500, confidence=0.99, refineIters=0
    )
    if matrix is None or inliers is None:
        return Verdict(len(ia), 0, 0.0, 0.0)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    angle = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    if not (1 / rules.max_scale_ratio <= scale <= rules.max_scale_ratio):
        return Verdict(len(ia), 0, scale, angle)
    agree = inliers.ravel().astype(bool)
    inverse = cv2.invertAffineTransform(matrix)
    n_in = min(_inside(fa.xy, matrix, fb.size), _inside(fb.xy, inverse, fa.size))
    if rules.cells_in_overlap:  # a crop covers few cells of the whole original: count them over the shared part
        box_a, box_b = _overlap(fa.size, fb.size, inverse), _overlap(fb.size, fa.size, matrix)
    else:
        box_a, box_b = (0.0, 0.0, *map(float, fa.size)), (0.0, 0.0, *map(float, fb.size))
    per_side = (_cells(fa.xy[ia][agree], box_a), _cells(fb.xy[ib][agree], box_b))
    cells = max(per_side) if rules.cells_on_either else min(per_side)
    verdict = Verdict(len(ia), int(agree.sum()), scale, angle, float(agree.sum()) / max(1, n_in), cells)
    if rules.photometric and not verdict.verified(rules) and verdict.inliers >= rules.min_photometric_inliers:
        return replace(verdict, agreement=photometric_agreement(fa, fb, matrix, rules.min_overlap))
    return verdict


def linked(distance: int, verdict: Verdict | None, rules: VerifyRules = VerifyRules()) -> bool:
    """The linking rule: close keys alone, or candidate keys and a verified pair."""
    if distance <= rules.link_distance:
        return True
    return distance <= rules.candidate_distance and verdict is not None and verdict.verified(rules)
