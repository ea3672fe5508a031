"""The catalog reads YAML, puts the control arm first and rejects inconsistent configuration."""

from __future__ import annotations

import pytest

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError

SPEC = {
    "name": "t",
    "margin": 0.3,
    "offers": [{"id": "c5", "coupon_value": 5, "min_spend": 30}, {"id": "c10", "coupon_value": 10}],
    "channels": [{"id": "sms", "contact_cost": 0.05}, {"id": "push", "contact_cost": 0.0}],
}


def test_default_arms_are_every_offer_on_every_channel_control_first():
    cat = Catalog.from_dict(SPEC)
    assert cat.arm_ids == ["none", "c5@sms", "c5@push", "c10@sms", "c10@push"]
    assert cat.arm("c10@sms").coupon_value == 10 and cat.arm("c10@sms").contact_cost == 0.05
    assert cat.arm("none").is_control and cat.arm("none").redeem_cost == 0


def test_yaml_round_trip(tmp_path):
    cat = Catalog.from_dict(SPEC)
    cat.to_yaml(tmp_path / "c.yaml")
    again = Catalog.from_yaml(tmp_path / "c.yaml")
    assert again.arm_ids == cat.arm_ids
    assert again.arm("c5@push").offer == cat.arm("c5@push").offer


def test_unknown_arm_lookup_names_the_arm():
    with pytest.raises(ConfigError, match="'nope'"):
        Catalog.from_dict(SPEC).arm("nope")


def test_arm_naming_unknown_offer_is_rejected():
    spec = dict(SPEC, arms=[{"id": "x", "offer": "c99", "channel": "sms"}])
    with pytest.raises(ConfigError, match="c99"):
        Catalog.from_dict(spec)


def test_bad_margin_and_bad_offer_fields_are_rejected():
    with pytest.raises(ConfigError, match="margin"):
        Catalog.from_dict(dict(SPEC, margin=3))
    with pytest.raises(ConfigError, match="offers"):
        Catalog.from_dict(dict(SPEC, offers=[{"id": "c5", "colour": "red"}]))
