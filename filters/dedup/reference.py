"""The pure in-memory reference of the dedup decisions: every step on one Arrow table of KEYS rows.

The Spark job (``jobs/dedup/decide.py``) must equal it; both run :func:`filters.dedup.steps.run_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from filters.dedup.bands import as_links, blocklist_pairs, near_pairs, window_pairs
from filters.dedup.grouping import (
    as_decisions,
    closest_links,
    collapse_components,
    collapse_exact,
    components,
    eval_matches,
    reject_matching,
    with_links,
)
from filters.dedup.rules import DedupRules, uses_windows
from filters.dedup.steps import run_steps
from filters.dedup.tables import KEY_COLUMNS, KEYS_DECIDED, KEYS_SCHEMA
from filters.dedup.verify import occlusion_links, verify_links, with_features, with_occlusion


@dataclass
class InMemorySteps:
    """The steps on Arrow tables; ``dropped`` collects the KEYS_DECIDED rows each step rejects."""

    rules: DedupRules
    dropped: list[pa.Table] = field(default_factory=list)

    def without_blank(self, keys: pa.Table) -> pa.Table:
        return keys.filter(pc.invert(pc.fill_null(keys.column("blank"), False)))

    def reject_blocklisted(self, keys: pa.Table, blocklist: pa.Table) -> pa.Table:
        if not blocklist.num_rows:
            return keys
        listed = blocklist.column("hash").to_numpy()
        links = self.rules.links
        pairs = blocklist_pairs(keys.column("phash").to_numpy(), listed, links.max_distance, links.bands)
        keys, dropped = reject_matching(keys, eval_matches(pairs, blocklist))
        self.dropped.append(dropped)
        return keys

    def on_key(self, keys: pa.Table, swap: dict[str, str]) -> pa.Table:
        if not swap:
            return keys
        if keys.column("robust").null_count:
            raise ValueError("dedup key 'robust' but some non-blank rows have no robust key (a keys table hashed without robust keys)")
        return keys.select([swap.get(c, c) for c in KEY_COLUMNS]).rename_columns(list(KEY_COLUMNS))

    def collapse_exact(self, keys: pa.Table) -> pa.Table:
        keys, dropped = collapse_exact(keys, self.rules.links)
        self.dropped.append(dropped)
        return keys

    def near_links(self, keys: pa.Table) -> pa.Table:
        links = self.rules.links
        hashes = keys.column("phash").to_numpy()
        if uses_windows(self.rules):
            return window_pairs(hashes, keys.column("windows").to_pylist(), links.max_distance, links.bands)
        return as_links(near_pairs(hashes, links.max_distance, links.bands))

    def occlusion_links(self, keys: pa.Table, links: pa.Table) -> pa.Table:
        hashes = keys.column("phash").to_numpy()
        occluded = occlusion_links(hashes, keys.column("occlusion").to_pylist(), self.rules.links.occlusion_distance)  # bands by cost
        return with_occlusion(links, occluded)

    def verify_links(self, keys: pa.Table, links: pa.Table) -> pa.Table:
        return verify_links(with_features(links, keys), self.rules.links)

    def collapse_near(self, keys: pa.Table, links: pa.Table) -> None:
        if not keys.num_rows:
            return
        label = components(links.column("a").to_numpy(), links.column("b").to_numpy())
        labels = [label.get(h, h) for h in keys.column("phash").to_pylist()]
        grouped = keys.append_column("component", pa.array(labels, pa.int64()))
        grouped = with_links(grouped, closest_links(links))
        self.dropped.append(collapse_components(grouped, self.rules.keys.key))


def decide(keys: pa.Table, rules: DedupRules, blocklist: pa.Table | None = None) -> pa.Table:
    """Every step on one in-memory table of KEYS rows: the reference the Spark job must equal.
    Returns DECISIONS rows (the rejected rows only), sorted by (shard, row). Blank rows take no part;
    the blocklist is matched on pHash (hash lists are imagehash's), the other steps on ``rules.keys.key``."""
    engine = InMemorySteps(rules)
    run_steps(engine, keys.cast(KEYS_SCHEMA), rules, blocklist)
    return as_decisions(pa.concat_tables([KEYS_DECIDED.empty(), *engine.dropped])).sort_by([("shard", "ascending"), ("row", "ascending")])
