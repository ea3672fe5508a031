"""The catalog of offers, channels and arms (configuration, not code).

An *arm* is one (offer, channel) pair, or the control arm "no offer". A catalog is read from YAML::

    name: simulated
    control_arm: none
    margin: 0.3                # share of spend that is profit
    offers:
      - {id: c5, coupon_value: 5, min_spend: 30, days_valid: 7, redeem_cost: 5}
    channels:
      - {id: sms, contact_cost: 0.05, reach: 0.95, consent: sms_opt_in}
    arms:                      # optional: default is every offer on every channel
      - {id: c5@sms, offer: c5, channel: sms}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from offerlift.features.errors import ConfigError

CONTROL_ARM = "none"


@dataclass(frozen=True)
class Offer:
    """A coupon: face value, minimum spend, validity and the cost to the business when redeemed."""

    id: str
    coupon_value: float = 0.0
    min_spend: float = 0.0
    days_valid: float = 7.0
    redeem_cost: float | None = None
    kind: str = "discount"

    @property
    def cost_when_redeemed(self) -> float:
        """The cost of one redemption (defaults to the face value)."""
        return self.coupon_value if self.redeem_cost is None else self.redeem_cost


@dataclass(frozen=True)
class Channel:
    """A way to reach a customer, its cost per contact, its reach and the consent flag it needs."""

    id: str
    contact_cost: float = 0.0
    reach: float = 1.0
    consent: str | None = None


@dataclass(frozen=True)
class Arm:
    """One (offer, channel) pair, or the control arm (offer and channel both None)."""

    id: str
    offer: Offer | None = None
    channel: Channel | None = None

    @property
    def is_control(self) -> bool:
        """True for the "no offer" arm."""
        return self.offer is None

    @property
    def coupon_value(self) -> float:
        """Face value of the coupon (0 for no offer)."""
        return 0.0 if self.offer is None else float(self.offer.coupon_value)

    @property
    def redeem_cost(self) -> float:
        """Cost to the business if the coupon is redeemed."""
        return 0.0 if self.offer is None else float(self.offer.cost_when_redeemed)

    @property
    def contact_cost(self) -> float:
        """Cost of contacting the customer on this arm's channel."""
        return 0.0 if self.channel is None else float(self.channel.contact_cost)


@dataclass(frozen=True)
class Catalog:
    """Offers, channels and the arms built from them; the control arm is always first."""

    name: str
    arms: tuple[Arm, ...]
    offers: tuple[Offer, ...] = ()
    channels: tuple[Channel, ...] = ()
    margin: float = 0.3
    control_arm: str = CONTROL_ARM
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ids = [a.id for a in self.arms]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(f"catalog {self.name!r}: duplicate arm ids {dupes}")
        if self.control_arm not in ids:
            raise ConfigError(f"catalog {self.name!r}: control arm {self.control_arm!r} is not among the arms")
        if not 0.0 <= self.margin <= 1.0:
            raise ConfigError(f"catalog {self.name!r}: margin must be in [0, 1], got {self.margin!r}")
        self._index.update({a: i for i, a in enumerate(ids)})

    @property
    def arm_ids(self) -> list[str]:
        """All arm ids, control first."""
        return [a.id for a in self.arms]

    @property
    def treatment_arms(self) -> list[str]:
        """Arm ids other than the control."""
        return [a.id for a in self.arms if a.id != self.control_arm]

    def arm(self, arm_id: str) -> Arm:
        """The arm with this id; ConfigError names the unknown id."""
        try:
            return self.arms[self._index[arm_id]]
        except KeyError:
            raise ConfigError(f"unknown arm {arm_id!r}; the catalog has {self.arm_ids}") from None

    def index(self, arm_id: str) -> int:
        """Position of an arm in `arm_ids`."""
        self.arm(arm_id)
        return self._index[arm_id]

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that `Catalog.from_dict` reads back (the YAML form)."""
        return {
            "name": self.name,
            "control_arm": self.control_arm,
            "margin": self.margin,
            "offers": [asdict(o) for o in self.offers],
            "channels": [asdict(c) for c in self.channels],
            "arms": [
                {
                    "id": a.id,
                    "offer": None if a.offer is None else a.offer.id,
                    "channel": None if a.channel is None else a.channel.id,
                }
                for a in self.arms
                if a.id != self.control_arm
            ],
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Catalog:
        """Build a catalog from its dict (YAML) form; ConfigError names the bad entry."""
        name = str(spec.get("name", "catalog"))
        offers = tuple(_build(Offer, o, name, "offers") for o in spec.get("offers") or [])
        channels = tuple(_build(Channel, c, name, "channels") for c in spec.get("channels") or [])
        control = str(spec.get("control_arm", CONTROL_ARM))
        by_offer = {o.id: o for o in offers}
        by_channel = {c.id: c for c in channels}
        arm_specs = spec.get("arms")
        if arm_specs is None:
            arm_specs = _default_arms(offers, channels)
        arms = [Arm(control)]
        for a in arm_specs:
            offer_id, channel_id = a.get("offer"), a.get("channel")
            if offer_id not in by_offer:
                raise ConfigError(f"catalog {name!r}: arm {a.get('id')!r} names unknown offer {offer_id!r}")
            if channel_id is not None and channel_id not in by_channel:
                raise ConfigError(f"catalog {name!r}: arm {a.get('id')!r} names unknown channel {channel_id!r}")
            arm_id = a.get("id") or (offer_id if channel_id is None else f"{offer_id}@{channel_id}")
            arms.append(Arm(str(arm_id), by_offer[offer_id], by_channel.get(channel_id)))
        return cls(
            name=name,
            arms=tuple(arms),
            offers=offers,
            channels=channels,
            margin=float(spec.get("margin", 0.3)),
            control_arm=control,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Catalog:
        """Read a catalog from a YAML file."""
        path = Path(path)
        try:
            spec = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read catalog {str(path)!r}: {exc}") from exc
        if not isinstance(spec, Mapping):
            raise ConfigError(f"catalog {str(path)!r} must be a mapping at the top level")
        return cls.from_dict(spec)

    def to_yaml(self, path: str | Path) -> None:
        """Write the catalog as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _build(kind: type, spec: Mapping[str, Any], catalog: str, section: str) -> Any:
    try:
        return kind(**spec)
    except TypeError as exc:
        raise ConfigError(f"catalog {catalog!r}: bad entry in {section!r}: {spec!r} ({exc})") from exc


def _default_arms(offers: Iterable[Offer], channels: Iterable[Channel]) -> list[dict[str, Any]]:
    channels = list(channels)
    if not channels:
        return [{"id": o.id, "offer": o.id, "channel": None} for o in offers]
    return [{"offer": o.id, "channel": c.id} for o in offers for c in channels]
