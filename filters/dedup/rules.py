"""The dedup stage's rules ([dedup.rules]) and the key its duplicate steps compare."""

from __future__ import annotations

from dataclasses import dataclass

from curation.errors import CurationError
from curation.imagehash import PhashMode

MAX_DISTANCE_LIMIT = 16  # beyond this a 64-bit pHash says little and the banded join degenerates
DEDUP_KEYS = ("phash", "robust")


class DedupConfigError(CurationError, ValueError):
    pass

@dataclass(frozen=True)
class DedupRules:
    phash_mode: str = "exact"  # "exact" (= imagehash.phash bit for bit) or "fast" (JPEG draft decoding)
    max_distance: int = 0  # Hamming k for near duplicates and blocklist matches; 0 = near-dup off
    exact: bool = True  # collapse identical pHashes (duplicate_phash)
    pairs: bool = True  # collapse identical (pHash, normalised text) (duplicate_pair)
    bands: int = 0  # blocks of the banded join; 0 = choose by estimated cost (see module doc)
    hash_batch_rows: int = 256  # images decoded per vectorised DCT batch
    key: str = "phash"  # key of the duplicate and near-duplicate steps: "phash" or "robust" (see hashing)
    reject_blank: bool = True  # blank / low-information images rejected as blank_image (else kept, never deduped)
    blank_std: float = 3.0  # blank: std of the alpha-composited 32x32 grayscale below this (0..255 scale)
    blank_min_alpha: float = 0.05  # blank: fewer than this fraction of the pixels visible (alpha > 0)
    crop_windows: bool = True  # robust key: near duplicates also match crop windows (see module doc)
    aspect_windows: bool = False  # with crop_windows: also the 36 aspect windows (one-side strips, other aspect ratios)
    trim_borders: bool = False  # with crop_windows: also the key of the picture inside letterbox / pillarbox bars
    # issue 19 (see filters.dedup's docstring and README): more window keys, and candidate pairs verified with ORB keypoints
    rotation_windows: bool = False  # with crop_windows: also the 40 rotated window keys (turns of 3..30 degrees)
    deep_windows: bool = False  # with crop_windows: also the deep aspect window keys (crops to common aspect ratios, ~100)
    verify: bool = False  # pairs within verify_link_distance linked as before; those within max_distance only when verified
    occlusion_windows: bool = False  # with verify: pairs whose occlusion window keys are within occlusion_distance are verified too
    occlusion_distance: int = 4  # window-against-window distance of occlusion candidates
    verify_link_distance: int = 2  # key distance linked without verification (ORB is not mirror-invariant)
    verify_min_inliers: int = 10  # keypoint matches that agree on one similarity transform
    verify_min_cells: int = 7  # of the 4x4 cells of each picture, those holding an agreeing keypoint
    verify_photometric: bool = True  # with verify: a pair failing the cells rule verifies by its pixels (tiny copies)
    verify_min_agreement: float = 0.55  # of the textured pixel blocks over the shared part, both directions

    def __post_init__(self) -> None:
        if self.key not in DEDUP_KEYS:
            raise DedupConfigError(f"[dedup.rules] key must be one of {list(DEDUP_KEYS)}, got {self.key!r}")
        if self.blank_std < 0 or not 0.0 <= self.blank_min_alpha <= 1.0:
            raise DedupConfigError("[dedup.rules] blank_std must be >= 0 and blank_min_alpha in 0..1")
        if self.phash_mode not in PhashMode.__members__.values():
            raise DedupConfigError(f"[dedup.rules] phash_mode must be one of {[m.value for m in PhashMode]}, got {self.phash_mode!r}")
        if not 0 <= self.max_distance <= MAX_DISTANCE_LIMIT:
            raise DedupConfigError(f"[dedup.rules] max_distance must be 0..{MAX_DISTANCE_LIMIT}, got {self.max_distance}")
        if self.bands and not self.max_distance < self.bands <= 64:
            raise DedupConfigError(f"[dedup.rules] bands must be 0 (auto) or max_distance+1..64, got {self.bands}")
        if self.hash_batch_rows < 1:
            raise DedupConfigError("[dedup.rules] hash_batch_rows must be >= 1")
        self._check_issue19()

    def _check_issue19(self) -> None:
        for name in ("rotation_windows", "deep_windows"):
            if getattr(self, name) and not (self.key == "robust" and self.crop_windows):
                raise DedupConfigError(f"[dedup.rules] {name} needs key = \"robust\" and crop_windows = true")
        if self.verify and self.key != "robust":
            raise DedupConfigError('[dedup.rules] verify needs key = "robust" (the keypoints are matched on the robust key\'s pairs)')
        if self.verify and not self.exact:
            raise DedupConfigError("[dedup.rules] verify needs exact = true (keypoints are joined on by key: one row per key)")
        if self.verify and self.max_distance == 0:
            raise DedupConfigError("[dedup.rules] verify needs max_distance > 0 (with verify it is the candidate distance, e.g. 10)")
        if self.occlusion_windows and not self.verify:
            raise DedupConfigError("[dedup.rules] occlusion_windows needs verify = true (occlusion candidates are only linked verified)")
        if self.verify and not 0 <= self.verify_link_distance <= self.max_distance:
            raise DedupConfigError(
                f"[dedup.rules] verify_link_distance must be 0..max_distance ({self.max_distance}), got {self.verify_link_distance}"
            )
        if not 1 <= self.occlusion_distance <= MAX_DISTANCE_LIMIT:
            raise DedupConfigError(f"[dedup.rules] occlusion_distance must be 1..{MAX_DISTANCE_LIMIT}, got {self.occlusion_distance}")
        if self.verify_min_inliers < 3:
            raise DedupConfigError(f"[dedup.rules] verify_min_inliers must be >= 3 (a similarity transform), got {self.verify_min_inliers}")
        if not 1 <= self.verify_min_cells <= 16:
            raise DedupConfigError(f"[dedup.rules] verify_min_cells must be 1..16 (cells of a 4x4 grid), got {self.verify_min_cells}")
        if not 0.0 < self.verify_min_agreement <= 1.0:
            raise DedupConfigError(f"[dedup.rules] verify_min_agreement must be in (0, 1], got {self.verify_min_agreement}")

def uses_windows(rules: DedupRules) -> bool:
    return rules.key == "robust" and rules.crop_windows and rules.max_distance > 0
