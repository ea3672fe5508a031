"""Configuration of the simulated world: cities, channel behaviour, population, fatigue, abusers, shocks.

A world spec is a YAML file with two sections, ``catalog`` (read by
:meth:`offerlift.features.catalog.Catalog.from_dict`) and ``world`` (read by :meth:`WorldConfig.from_dict`); the
default is ``simworld/default.yaml``. Unknown keys are a :class:`offerlift.features.errors.ConfigError` that names
them, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent
DEFAULT_SPEC = PRESET_DIR / "default.yaml"
SHOCK_METRICS = ("buy_rate", "spend", "open_rate")


@dataclass(frozen=True)
class City:
    """A city: its share of customers and its multipliers of the buying rate and of the basket."""

    id: str
    weight: float = 1.0
    rate_mult: float = 1.0
    basket_mult: float = 1.0


@dataclass(frozen=True)
class Shock:
    """A scheduled drop: `metric` is multiplied by `factor` in `city` for decisions at times in [start, end)."""

    city: str
    start: float
    end: float
    factor: float = 0.5
    metric: str = "buy_rate"


@dataclass(frozen=True)
class ChannelBehaviour:
    """How customers respond to a channel: mean open rate, opt-in rate, and slopes per 15 years of age."""

    open_rate: float = 0.3
    consent_rate: float = 0.9
    open_age_slope: float = 0.0
    reach_age_slope: float = 0.0


@dataclass(frozen=True)
class Population:
    """Parameters of the hidden traits (see the comments in default.yaml)."""

    base_logit: float = -1.6
    base_tier_slope: float = 0.45
    base_sd: float = 0.7
    basket_median: float = 55.0
    basket_income_slope: float = 0.35
    basket_tier_slope: float = 0.12
    basket_sd: float = 0.45
    sensitivity_logit: float = 0.0
    sensitivity_income_slope: float = -0.8
    sensitivity_age_slope: float = 0.3
    sensitivity_sd: float = 1.2
    indifferent_share: float = 0.4
    value_scale: float = 0.2
    min_spend_aversion: float = 1.5
    redeem_affinity: float = 0.35
    browse_rate: float = 0.15
    click_rate: float = 0.3
    spend_noise_sd: float = 0.5
    household_share: float = 0.04


@dataclass(frozen=True)
class Fatigue:
    """Exposure is multiplied by exp(-rate_i * contacts in the last `window_hours`)."""

    window_hours: float = 168.0
    rate: float = 0.35


@dataclass(frozen=True)
class Abusers:
    """Coupon farmers: rings of accounts sharing a device and a payment id, redeeming without buying more."""

    share: float = 0.03
    ring_min: int = 3
    ring_max: int = 8
    redeem_rate: float = 0.95
    base_rate_min: float = 0.5
    base_rate_max: float = 0.85


@dataclass(frozen=True)
class History:
    """The pre-period: its length and the rate of past campaign contacts."""

    hours: float = 672.0
    contacts_per_week: float = 0.8


@dataclass(frozen=True)
class WorldConfig:
    """Everything about the world's customers that is not the catalog."""

    window_hours: float = 168.0
    cities: tuple[City, ...] = (City("city0"),)
    tiers: tuple[str, ...] = ("bronze", "silver", "gold", "platinum")
    tier_weights: tuple[float, ...] = (0.5, 0.3, 0.15, 0.05)
    channels: Mapping[str, ChannelBehaviour] = field(default_factory=dict)
    population: Population = Population()
    fatigue: Fatigue = Fatigue()
    abusers: Abusers = Abusers()
    history: History = History()
    shocks: tuple[Shock, ...] = ()

    def __post_init__(self) -> None:
        if self.window_hours <= 0:
            raise ConfigError(f"world: window_hours must be positive, got {self.window_hours!r}")
        if not self.cities:
            raise ConfigError("world: at least one city is needed")
        if len(self.tiers) != len(self.tier_weights) or min(self.tier_weights, default=0) < 0:
            raise ConfigError(f"world: tiers {self.tiers!r} and tier_weights {self.tier_weights!r} do not match")
        if not 0.0 <= self.abusers.share < 1.0:
            raise ConfigError(f"world: abusers.share must be in [0, 1), got {self.abusers.share!r}")
        if not 1 <= self.abusers.ring_min <= self.abusers.ring_max:
            raise ConfigError(f"world: bad abuser ring sizes {self.abusers.ring_min}..{self.abusers.ring_max}")
        cities = {c.id for c in self.cities}
        for s in self.shocks:
            if s.city not in cities:
                raise ConfigError(f"world: shock names unknown city {s.city!r}; cities are {sorted(cities)}")
            if s.metric not in SHOCK_METRICS:
                raise ConfigError(f"world: shock metric {s.metric!r} is not one of {SHOCK_METRICS}")
            if not s.start < s.end or s.factor < 0:
                raise ConfigError(f"world: bad shock {s!r} (need start < end and factor >= 0)")

    def channel(self, channel_id: str) -> ChannelBehaviour:
        """Behaviour of a channel (defaults when the config does not mention it)."""
        return self.channels.get(channel_id, ChannelBehaviour())

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None) -> WorldConfig:
        """Build from the ``world`` section of a spec; ConfigError names unknown or bad keys."""
        spec = dict(spec or {})
        _check_keys(spec, cls, "world")
        kw: dict[str, Any] = {k: v for k, v in spec.items() if k in ("window_hours",)}
        if "cities" in spec:
            kw["cities"] = tuple(_make(City, c, "world.cities") for c in spec["cities"])
        if "tiers" in spec:
            kw["tiers"] = tuple(str(t) for t in spec["tiers"])
        if "tier_weights" in spec:
            kw["tier_weights"] = tuple(float(w) for w in spec["tier_weights"])
        if "channels" in spec:
            kw["channels"] = {
                str(k): _make(ChannelBehaviour, v, f"world.channels.{k}") for k, v in spec["channels"].items()
            }
        for name, kind in (
            ("population", Population),
            ("fatigue", Fatigue),
            ("abusers", Abusers),
            ("history", History),
        ):
            if name in spec:
                kw[name] = _make(kind, spec[name], f"world.{name}")
        if "shocks" in spec:
            kw["shocks"] = tuple(_make(Shock, s, "world.shocks") for s in spec["shocks"] or [])
        return cls(**kw)


def _check_keys(spec: Mapping[str, Any], kind: type, where: str) -> None:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")


def _make(kind: type, spec: Any, where: str) -> Any:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {spec!r}")
    _check_keys(spec, kind, where)
    try:
        return kind(**spec)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad entry {dict(spec)!r} ({exc})") from exc


def presets() -> list[str]:
    """Names of the world presets shipped with offerlift (the ``*.yaml`` files next to this module)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_world(world: str | Path | None = None) -> Path:
    """The spec file of a world given as a preset name (``default``, ``low-signal``, ...) or a path to a file.

    None is the default preset. A name with no path separator and no ``.yaml``/``.yml`` suffix is a preset;
    anything else is a file. ConfigError names what was given and lists the presets.
    """
    if world is None:
        return DEFAULT_SPEC
    text = str(world)
    is_name = isinstance(world, str) and "/" not in text and not text.endswith((".yaml", ".yml"))
    if is_name:
        path = PRESET_DIR / f"{text}.yaml"
        if path.is_file():
            return path
        raise ConfigError(f"unknown world {text!r}: not a preset; the presets are {presets()} (or give a spec file)")
    path = Path(world)
    if not path.is_file():
        raise ConfigError(f"world spec file {text!r} does not exist; the presets are {presets()}")
    return path


def load_world_spec(path: str | Path | None = None) -> tuple[Catalog, WorldConfig]:
    """Read a world spec (a preset name or a file; default: simworld/default.yaml) into its catalog and config."""
    path = resolve_world(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read world spec {str(path)!r}: {exc}") from exc
    if not isinstance(spec, Mapping) or "catalog" not in spec:
        raise ConfigError(f"world spec {str(path)!r} must be a mapping with a 'catalog' section")
    return spec_to_world(spec)


def spec_to_world(spec: Mapping[str, Any]) -> tuple[Catalog, WorldConfig]:
    """Turn a spec dict (``catalog`` and ``world`` sections) into a catalog and a world config."""
    unknown = sorted(set(spec) - {"catalog", "world"})
    if unknown:
        raise ConfigError(f"world spec: unknown sections {unknown}; expected 'catalog' and 'world'")
    return Catalog.from_dict(spec["catalog"]), WorldConfig.from_dict(spec.get("world"))
