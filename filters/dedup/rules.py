"""The dedup stage's rules ([dedup.rules]): a named mode, how the keys are computed and how links are decided.

``[dedup.rules] mode`` picks a whole setting; ``[dedup.rules.keys]`` (:class:`KeyRules`, read by the hash
step: which keys, windows and blank verdicts each image gets) and ``[dedup.rules.links]``
(:class:`LinkRules`, read by the decision steps: which steps run, the Hamming distances, the banded join
and the verification of candidate pairs) override single keys of it. The modes:

- ``exact``: identical pHashes and (pHash, text) pairs collapsed, no near duplicates (the defaults);
- ``robust``: the rotation/flip/EXIF/alpha-invariant key with crop and aspect windows and the trimmed key,
  near duplicates within 4 bits;
- ``verified``: ``robust`` plus rotated, deep and occlusion windows, candidates within 10 bits linked
  when their ORB keypoints (or pixels) agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from curation.errors import ConfigError
from curation.imagehash import PhashMode

MAX_DISTANCE_LIMIT = 16  # beyond this a 64-bit pHash says little and the banded join degenerates
DEDUP_KEYS = ("phash", "robust")


class DedupConfigError(ConfigError):
    """A [dedup.rules] value out of range, an unknown mode, or keys and links that do not fit together."""


@dataclass(frozen=True)
class KeyRules:
    """[dedup.rules.keys]: what the hash step computes for each image."""

    phash_mode: str = "exact"  # "exact" (= imagehash.phash bit for bit) or "fast" (JPEG draft decoding)
    hash_batch_rows: int = 256  # images decoded per vectorised DCT batch
    key: str = "phash"  # key of the duplicate and near-duplicate steps: "phash" or "robust" (see curation.imagehash)
    reject_blank: bool = True  # blank / low-information images rejected as blank_image (else kept, never deduped)
    blank_std: float = 3.0  # blank: std of the alpha-composited 32x32 grayscale below this (0..255 scale)
    blank_min_alpha: float = 0.05  # blank: fewer than this fraction of the pixels visible (alpha > 0)
    crop_windows: bool = True  # robust key: near duplicates also match crop windows (see filters.dedup)
    aspect_windows: bool = False  # with crop_windows: also the 36 aspect windows (one-side strips, other aspect ratios)
    trim_borders: bool = False  # with crop_windows: also the key of the picture inside letterbox / pillarbox bars
    rotation_windows: bool = False  # with crop_windows: also the 40 rotated window keys (turns of 3..30 degrees)
    deep_windows: bool = False  # with crop_windows: also the deep aspect window keys (crops to common aspect ratios, ~100)
    occlusion_windows: bool = False  # with [dedup.rules.links] verify: 15 occlusion window keys, matched window against window

    def __post_init__(self) -> None:
        if self.key not in DEDUP_KEYS:
            raise DedupConfigError(f"[dedup.rules.keys] key must be one of {list(DEDUP_KEYS)}, got {self.key!r}")
        if self.blank_std < 0 or not 0.0 <= self.blank_min_alpha <= 1.0:
            raise DedupConfigError("[dedup.rules.keys] blank_std must be >= 0 and blank_min_alpha in 0..1")
        if self.phash_mode not in PhashMode.__members__.values():
            raise DedupConfigError(
                f"[dedup.rules.keys] phash_mode must be one of {[m.value for m in PhashMode]}, got {self.phash_mode!r}"
            )
        if self.hash_batch_rows < 1:
            raise DedupConfigError("[dedup.rules.keys] hash_batch_rows must be >= 1")
        for name in ("rotation_windows", "deep_windows"):
            if getattr(self, name) and not (self.key == "robust" and self.crop_windows):
                raise DedupConfigError(f'[dedup.rules.keys] {name} needs key = "robust" and crop_windows = true')


@dataclass(frozen=True)
class LinkRules:
    """[dedup.rules.links]: which decision steps run and how two rows' keys become a link."""

    max_distance: int = 0  # Hamming k for near duplicates and blocklist matches; 0 = near-dup off
    exact: bool = True  # collapse identical keys (duplicate_phash)
    pairs: bool = True  # collapse identical (key, normalised text) (duplicate_pair)
    bands: int = 0  # blocks of the banded join; 0 = choose by estimated cost (see filters.dedup)
    verify: bool = False  # max_distance is the candidate distance: pairs beyond verify_link_distance linked only when verified
    occlusion_distance: int = 4  # window-against-window distance of occlusion candidates
    verify_link_distance: int = 2  # key distance linked without verification (ORB is not mirror-invariant)
    verify_min_inliers: int = 10  # keypoint matches that agree on one similarity transform
    verify_min_cells: int = 7  # of the 4x4 cells of each picture, those holding an agreeing keypoint
    verify_photometric: bool = True  # with verify: a pair failing the cells rule verifies by its pixels (tiny copies)
    verify_min_agreement: float = 0.55  # of the textured pixel blocks over the shared part, both directions

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= MAX_DISTANCE_LIMIT:
            raise DedupConfigError(f"[dedup.rules.links] max_distance must be 0..{MAX_DISTANCE_LIMIT}, got {self.max_distance}")
        if self.bands and not self.max_distance < self.bands <= 64:
            raise DedupConfigError(f"[dedup.rules.links] bands must be 0 (auto) or max_distance+1..64, got {self.bands}")
        if not 1 <= self.occlusion_distance <= MAX_DISTANCE_LIMIT:
            raise DedupConfigError(
                f"[dedup.rules.links] occlusion_distance must be 1..{MAX_DISTANCE_LIMIT}, got {self.occlusion_distance}"
            )
        self._check_verification()

    def _check_verification(self) -> None:
        """The verify switch and the thresholds of verify_pair."""
        if self.verify and not self.exact:
            raise DedupConfigError("[dedup.rules.links] verify needs exact = true (keypoints are joined on by key: one row per key)")
        if self.verify and self.max_distance == 0:
            raise DedupConfigError(
                "[dedup.rules.links] verify needs max_distance > 0 (with verify it is the candidate distance, e.g. 10)"
            )
        if self.verify and not 0 <= self.verify_link_distance <= self.max_distance:
            raise DedupConfigError(
                f"[dedup.rules.links] verify_link_distance must be 0..max_distance ({self.max_distance}), "
                f"got {self.verify_link_distance}"
            )
        if self.verify_min_inliers < 3:
            raise DedupConfigError(
                f"[dedup.rules.links] verify_min_inliers must be >= 3 (a similarity transform), got {self.verify_min_inliers}"
            )
        if not 1 <= self.verify_min_cells <= 16:
            raise DedupConfigError(
                f"[dedup.rules.links] verify_min_cells must be 1..16 (cells of a 4x4 grid), got {self.verify_min_cells}"
            )
        if not 0.0 < self.verify_min_agreement <= 1.0:
            raise DedupConfigError(f"[dedup.rules.links] verify_min_agreement must be in (0, 1], got {self.verify_min_agreement}")


# The exact mode's groups, and the defaults of DedupRules' groups: a group that is one of these objects
# follows the mode (DedupRules.__post_init__ compares by identity, so a group given equal values stays).
_MODE_KEYS = KeyRules()
_MODE_LINKS = LinkRules()
_ROBUST_KEYS = KeyRules(key="robust", aspect_windows=True, trim_borders=True)

MODES: dict[str, tuple[KeyRules, LinkRules]] = {
    "exact": (_MODE_KEYS, _MODE_LINKS),
    "robust": (_ROBUST_KEYS, LinkRules(max_distance=4)),
    "verified": (
        replace(_ROBUST_KEYS, rotation_windows=True, deep_windows=True, occlusion_windows=True),
        LinkRules(max_distance=10, verify=True),
    ),
}


@dataclass(frozen=True)
class DedupRules:
    """[dedup.rules]: ``mode`` names a setting of both groups; a group not given is the mode's.
    In TOML, keys given under [dedup.rules.keys] / [dedup.rules.links] replace single values of the
    mode's groups (jobs.stages.config builds the groups on the mode's); in Python, pass whole groups
    (``DedupRules("verified", links=replace(MODES["verified"][1], max_distance=8))``) or use :meth:`of_mode`."""

    mode: str = "exact"  # "exact", "robust" or "verified": a whole setting of keys and links (docs/stages/dedup.md)
    keys: KeyRules = _MODE_KEYS  # [dedup.rules.keys]: how each image's keys are computed (not given: the mode's)
    links: LinkRules = _MODE_LINKS  # [dedup.rules.links]: how rows are linked and collapsed (not given: the mode's)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DedupConfigError(f"[dedup.rules] mode must be one of {list(MODES)}, got {self.mode!r}")
        keys, links = MODES[self.mode]
        if self.keys is _MODE_KEYS:
            object.__setattr__(self, "keys", keys)
        if self.links is _MODE_LINKS:
            object.__setattr__(self, "links", links)
        self._check_keys_fit_links()

    @classmethod
    def of_mode(cls, mode: str = "exact", keys: dict | None = None, links: dict | None = None) -> DedupRules:
        """The mode's rules with single keys and links replaced (what a TOML [dedup.rules] table gives)."""
        base = cls(mode=mode)
        return cls(mode=mode, keys=replace(base.keys, **(keys or {})), links=replace(base.links, **(links or {})))

    @property
    def keypoints(self) -> bool:
        """Whether the hash step keeps each image's ORB keypoints and 64 px copy: exactly when links are verified."""
        return self.links.verify

    def _check_keys_fit_links(self) -> None:
        """Settings of one group that need a setting of the other."""
        if self.links.verify and self.keys.key != "robust":
            raise DedupConfigError(
                '[dedup.rules.links] verify needs [dedup.rules.keys] key = "robust" (keypoints are matched on the robust key\'s pairs)'
            )
        if self.keys.occlusion_windows and not self.links.verify:
            raise DedupConfigError(
                "[dedup.rules.keys] occlusion_windows needs [dedup.rules.links] verify = true "
                "(occlusion candidates are only linked verified)"
            )


def uses_windows(rules: DedupRules) -> bool:
    """Whether the near-duplicate step joins row keys against window keys."""
    return rules.keys.key == "robust" and rules.keys.crop_windows and rules.links.max_distance > 0
