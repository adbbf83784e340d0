"""The named dedup modes and their two groups of rules (filters.dedup.rules), pinned value by value."""

from __future__ import annotations

import dataclasses

import pytest

from curation.errors import ConfigError
from filters.dedup import MODES, DedupConfigError, DedupRules, KeyRules, LinkRules

DEFAULT_KEYS = {
    "phash_mode": "exact", "hash_batch_rows": 256, "key": "phash", "reject_blank": True, "blank_std": 3.0,
    "blank_min_alpha": 0.05, "crop_windows": True, "aspect_windows": False, "trim_borders": False,
    "rotation_windows": False, "deep_windows": False, "occlusion_windows": False,
}
DEFAULT_LINKS = {
    "max_distance": 0, "exact": True, "pairs": True, "bands": 0, "verify": False, "occlusion_distance": 4,
    "verify_link_distance": 2, "verify_min_inliers": 10, "verify_min_cells": 7, "verify_photometric": True,
    "verify_min_agreement": 0.55,
}
ROBUST_KEYS = {**DEFAULT_KEYS, "key": "robust", "aspect_windows": True, "trim_borders": True}
VERIFIED_KEYS = {**ROBUST_KEYS, "rotation_windows": True, "deep_windows": True, "occlusion_windows": True}


def groups(rules: DedupRules) -> tuple[dict, dict]:
    return dataclasses.asdict(rules.keys), dataclasses.asdict(rules.links)


def test_the_exact_mode_is_the_default_and_collapses_identical_phashes_only():
    assert DedupRules().mode == "exact"
    assert groups(DedupRules()) == groups(DedupRules(mode="exact")) == (DEFAULT_KEYS, DEFAULT_LINKS)


def test_the_robust_mode_is_the_robust_key_with_aspect_windows_and_trimming_within_4_bits():
    assert groups(DedupRules(mode="robust")) == (ROBUST_KEYS, {**DEFAULT_LINKS, "max_distance": 4})


def test_the_verified_mode_adds_rotated_deep_and_occlusion_windows_and_verifies_candidates_within_10_bits():
    rules = DedupRules(mode="verified")
    assert groups(rules) == (VERIFIED_KEYS, {**DEFAULT_LINKS, "max_distance": 10, "verify": True})
    assert rules.keypoints


def test_only_the_verified_mode_keeps_keypoints():
    assert [DedupRules(mode=m).keypoints for m in MODES] == [False, False, True]


def test_a_group_given_explicitly_replaces_the_modes_group_and_the_other_stays():
    rules = DedupRules(mode="robust", links=LinkRules(max_distance=6))
    assert groups(rules) == (ROBUST_KEYS, {**DEFAULT_LINKS, "max_distance": 6})


def test_single_values_override_the_mode_and_keep_the_rest_of_it():
    rules = DedupRules.of_mode("verified", links={"max_distance": 8})
    assert rules.mode == "verified"
    assert groups(rules) == (VERIFIED_KEYS, {**DEFAULT_LINKS, "max_distance": 8, "verify": True})
    rules = DedupRules.of_mode("robust", keys={"trim_borders": False})
    assert groups(rules) == ({**ROBUST_KEYS, "trim_borders": False}, {**DEFAULT_LINKS, "max_distance": 4})


def test_an_unknown_mode_is_a_config_error_naming_the_modes():
    with pytest.raises(DedupConfigError, match=r"\[dedup.rules\] mode must be one of \['exact', 'robust', 'verified'\], got 'fast'"):
        DedupRules(mode="fast")
    assert issubclass(DedupConfigError, ConfigError)


def test_an_override_that_contradicts_the_mode_names_both_keys():
    with pytest.raises(DedupConfigError, match=r"\[dedup.rules.keys\] occlusion_windows needs \[dedup.rules.links\] verify = true"):
        DedupRules.of_mode("verified", links={"verify": False})
    with pytest.raises(DedupConfigError, match=r'\[dedup.rules.keys\] rotation_windows needs key = "robust"'):
        DedupRules.of_mode("verified", keys={"key": "phash"})


def test_each_group_names_its_own_table_in_errors():
    with pytest.raises(DedupConfigError, match=r"\[dedup.rules.keys\] phash_mode"):
        KeyRules(phash_mode="turbo")
    with pytest.raises(DedupConfigError, match=r"\[dedup.rules.links\] max_distance must be 0..16, got 40"):
        LinkRules(max_distance=40)


def test_a_group_given_with_default_values_is_kept_under_another_mode():
    rules = DedupRules(mode="robust", keys=KeyRules())
    assert groups(rules) == (DEFAULT_KEYS, {**DEFAULT_LINKS, "max_distance": 4})


def test_replacing_the_mode_of_default_rules_takes_the_new_modes_groups():
    assert groups(dataclasses.replace(DedupRules(), mode="verified")) == groups(DedupRules(mode="verified"))
