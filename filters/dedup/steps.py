"""The order of the dedup steps and the key they compare, written once.

The in-memory reference (:mod:`filters.dedup.reference`) and the Spark job (``jobs/dedup/decide.py``)
both run :func:`run_steps` over their own engine: an object that applies one step to its kind of table
(an Arrow table, a Spark DataFrame) and keeps the rows each step rejects. The engines differ in how a
step is computed, never in which steps run, in what order, or on which key.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from filters.dedup.rules import DedupRules

T = TypeVar("T")


class Steps(Protocol[T]):
    """One engine's way of applying each step to KEYS rows; rejected rows are kept by the engine."""

    def without_blank(self, keys: T) -> T:
        """Blank images (kept when reject_blank is off) take part in no step."""
        ...

    def reject_blocklisted(self, keys: T, blocklist) -> T:
        """Step 1, eval_set_match: rows whose pHash is within max_distance of a listed hash."""
        ...

    def on_key(self, keys: T, swap: dict[str, str]) -> T:
        """The rows with each column read from ``swap.get(column, column)`` (see :func:`key_swap`)."""
        ...

    def collapse_exact(self, keys: T) -> T:
        """Steps 2 and 3, duplicate_pair then duplicate_phash; returns the rows still kept."""
        ...

    def near_links(self, keys: T) -> T:
        """Step 4a: LINKS of the rows whose keys (with windows) are within max_distance."""
        ...

    def occlusion_links(self, keys: T, links: T) -> T:
        """Step 4b (occlusion_windows): ``links`` with ``occluded``, plus the pairs only their occlusion windows link."""
        ...

    def verify_links(self, keys: T, links: T) -> T:
        """Step 4c (verify): VERIFIED_LINKS, the links that filters.dedup.verify.verify_links keeps."""
        ...

    def collapse_near(self, keys: T, links: T) -> None:
        """Step 4d, near_duplicate: one row kept per connected component of the links."""
        ...


def key_swap(rules: DedupRules) -> dict[str, str]:
    """KEYS column -> the column it is read from in the duplicate and near-duplicate steps. Those steps
    group on ``phash``; with ``[dedup.rules.keys] key = "robust"`` the two columns are swapped, so they run unchanged on
    either key (the blocklist step, before the swap, always compares imagehash pHashes)."""
    return {} if rules.keys.key == "phash" else {"phash": "robust", "robust": "phash"}


def run_steps(engine: Steps[T], keys: T, rules: DedupRules, blocklist=None) -> None:
    """Every step, in the order of filters.dedup's docstring, each on the rows the previous ones kept."""
    keys = engine.without_blank(keys)
    if blocklist is not None:
        keys = engine.reject_blocklisted(keys, blocklist)
    keys = engine.on_key(keys, key_swap(rules))
    if rules.links.pairs or rules.links.exact:
        keys = engine.collapse_exact(keys)
    if rules.links.max_distance > 0:
        links = engine.near_links(keys)
        if rules.keys.occlusion_windows:
            links = engine.occlusion_links(keys, links)
        if rules.links.verify:
            links = engine.verify_links(keys, links)
        engine.collapse_near(keys, links)
