"""World presets: names and files resolve to spec files; unknown names fail with the list of presets."""

from __future__ import annotations

import pytest

from offerlift.features.errors import ConfigError
from offerlift.simworld.config import DEFAULT_SPEC, PRESET_DIR, load_world_spec, presets, resolve_world


def test_presets_are_the_yaml_files_next_to_the_module():
    assert {"default", "low-signal"} <= set(presets())
    assert resolve_world(None) == DEFAULT_SPEC == resolve_world("default")
    assert resolve_world("low-signal") == PRESET_DIR / "low-signal.yaml"


def test_a_path_is_a_file_and_a_bare_word_is_a_preset(tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text(DEFAULT_SPEC.read_text())
    assert resolve_world(str(spec)) == spec and resolve_world(spec) == spec
    assert load_world_spec(str(spec))[0].arm_ids == load_world_spec("default")[0].arm_ids
    with pytest.raises(ConfigError, match=r"unknown world 'nope'.*'default'.*'low-signal'"):
        resolve_world("nope")
    with pytest.raises(ConfigError, match=r"does not exist.*presets"):
        resolve_world(str(tmp_path / "missing.yaml"))
