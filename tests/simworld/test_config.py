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


def _spec_file(tmp_path, world: dict) -> str:
    import yaml

    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    spec["world"] = {**spec["world"], **world}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize(
    ("world", "pattern"),
    [
        ({"population": {"base_sd": -1}}, r"world\.population\.base_sd: .*greater than or equal to 0 \(got -1\)"),
        (
            {"population": {"sensitivty": 1}},
            r"world\.population\.sensitivty: unknown key .*known keys are .*'sensitivity_sd'",
        ),
        ({"channels": {"sms": {"open_rate": 1.5}}}, r"world\.channels\.sms\.open_rate: .*less than 1 \(got 1\.5\)"),
        (
            {"shocks": [{"city": "wuhan", "start": 0, "end": 1, "metric": "mood"}]},
            r"world\.shocks\.0\.metric: .*'mood'",
        ),
        ({"shocks": [{"city": "atlantis", "start": 0, "end": 1}]}, r"unknown city 'atlantis'"),
        ({"abusers": {"ring_min": 9, "ring_max": 3}}, r"world\.abusers: ring_min 9 is above ring_max 3"),
        ({"window_hours": "a week"}, r"world\.window_hours: .*valid number.*\(got 'a week'\)"),
    ],
)
def test_bad_world_specs_name_the_file_the_field_and_the_value(tmp_path, world, pattern):
    path = _spec_file(tmp_path, world)
    with pytest.raises(ConfigError, match=pattern) as err:
        load_world_spec(path)
    assert "bad.yaml" in str(err.value)


def test_an_unreadable_or_malformed_file_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("catalog: [unclosed")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_world_spec(str(path))
    path.write_text("world: {}\n")
    with pytest.raises(ConfigError, match="'catalog' section"):
        load_world_spec(str(path))
