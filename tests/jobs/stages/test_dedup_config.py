"""[dedup.rules] in TOML: mode, [dedup.rules.keys] and [dedup.rules.links] (jobs.stages.config)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from curation.errors import ConfigError
from jobs.stages.config import load_config

REPO = Path(__file__).resolve().parents[3]


def rules_of(tmp_path: Path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return load_config(str(path)).dedup.rules


def test_mode_verified_with_links_max_distance_8_is_verified_at_k_8(tmp_path):
    rules = rules_of(tmp_path, '[dedup.rules]\nmode = "verified"\n\n[dedup.rules.links]\nmax_distance = 8\n')
    assert rules.mode == "verified" and rules.links.max_distance == 8 and rules.links.verify
    assert rules.keys.key == "robust" and rules.keys.rotation_windows and rules.keys.deep_windows and rules.keys.occlusion_windows
    assert rules.keys.aspect_windows and rules.keys.trim_borders


def test_a_keys_value_overrides_the_mode_and_leaves_its_links(tmp_path):
    rules = rules_of(tmp_path, '[dedup.rules]\nmode = "robust"\n\n[dedup.rules.keys]\ntrim_borders = false\n')
    assert (rules.keys.key, rules.keys.aspect_windows, rules.keys.trim_borders) == ("robust", True, False)
    assert rules.links.max_distance == 4


def test_groups_without_a_mode_override_the_exact_mode(tmp_path):
    rules = rules_of(tmp_path, '[dedup.rules.keys]\nkey = "robust"\n\n[dedup.rules.links]\nmax_distance = 4\n')
    assert rules.mode == "exact"
    assert (rules.keys.key, rules.keys.aspect_windows, rules.links.max_distance) == ("robust", False, 4)


def test_the_sample_config_runs_the_robust_mode():
    rules = load_config(str(REPO / "configs" / "sample.toml")).dedup.rules
    assert rules.mode == "robust"
    assert (rules.keys.key, rules.keys.aspect_windows, rules.keys.trim_borders, rules.links.max_distance) == ("robust", True, True, 4)


def test_an_unknown_mode_in_toml_names_the_key_and_the_modes(tmp_path):
    with pytest.raises(ConfigError, match=r"\[dedup.rules\] mode must be one of \['exact', 'robust', 'verified'\], got 'fast'"):
        rules_of(tmp_path, '[dedup.rules]\nmode = "fast"\n')


def test_a_flat_key_under_dedup_rules_is_unknown_and_the_groups_are_listed(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['max_distance'\] in \[dedup.rules\]; known: \['keys', 'links', 'mode'\]"):
        rules_of(tmp_path, "[dedup.rules]\nmax_distance = 4\n")


def test_a_value_of_the_wrong_type_names_its_table(tmp_path):
    with pytest.raises(ConfigError, match=r"\[dedup.rules.links\] max_distance = 'x': expected an integer"):
        rules_of(tmp_path, '[dedup.rules.links]\nmax_distance = "x"\n')


def test_an_override_that_contradicts_the_mode_is_a_config_error_naming_the_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"\[dedup.rules.keys\] occlusion_windows needs \[dedup.rules.links\] verify = true"):
        rules_of(tmp_path, '[dedup.rules]\nmode = "verified"\n\n[dedup.rules.links]\nverify = false\n')


def test_command_line_values_replace_single_values_of_the_configured_mode(tmp_path):
    from jobs.cli.commands import _with_dedup_rules

    path = tmp_path / "run.toml"
    path.write_text('[dedup.rules]\nmode = "verified"\n')
    cfg = _with_dedup_rules(load_config(str(path)), keys={"phash_mode": "fast", "key": None}, links={"max_distance": 8})
    rules = cfg.dedup.rules
    assert (rules.keys.phash_mode, rules.keys.key, rules.links.max_distance, rules.links.verify) == ("fast", "robust", 8, True)


def test_the_config_records_the_mode_and_both_groups():
    rules = load_config(str(REPO / "configs" / "sample.toml")).to_dict()["dedup"]["rules"]
    assert sorted(rules) == ["keys", "links", "mode"] and rules["mode"] == "robust"
    assert dataclasses.is_dataclass(load_config().dedup.rules.keys)
