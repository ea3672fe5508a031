"""Configuration of the simulated world: cities, channel behaviour, population, fatigue, abusers, shocks.

A world spec is a YAML file with two sections, ``catalog`` (read by
:meth:`offerlift.features.catalog.Catalog.from_dict`) and ``world`` (validated by :class:`WorldConfig`, a
pydantic model); the presets are the ``*.yaml`` files next to this module (``default``, ``low-signal``, ...).
Unknown keys and bad values are a :class:`offerlift.features.errors.ConfigError` that names the file, the field
path and the bad value (e.g. ``world.population.base_sd: Input should be greater than or equal to 0 (got -1)``), so
a typo never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from offerlift.features.catalog import Catalog
from offerlift.features.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent
DEFAULT_SPEC = PRESET_DIR / "default.yaml"
SHOCK_METRICS = ("buy_rate", "spend", "open_rate")


class _Section(BaseModel):
    """A frozen section of the world config that refuses unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class City(_Section):
    """A city: its share of customers and its multipliers of the buying rate and of the basket."""

    id: str
    weight: float = Field(1.0, ge=0.0)
    rate_mult: float = Field(1.0, gt=0.0)
    basket_mult: float = Field(1.0, gt=0.0)


class Shock(_Section):
    """A scheduled drop: `metric` is multiplied by `factor` in `city` for decisions at times in [start, end)."""

    city: str
    start: float
    end: float
    factor: float = Field(0.5, ge=0.0)
    metric: Literal["buy_rate", "spend", "open_rate"] = "buy_rate"

    @model_validator(mode="after")
    def _ordered(self) -> Shock:
        if not self.start < self.end:
            raise ValueError(f"a shock needs start < end, got start={self.start!r}, end={self.end!r}")
        return self


class ChannelBehaviour(_Section):
    """How customers respond to a channel: mean open rate, opt-in rate, and slopes per 15 years of age."""

    open_rate: float = Field(0.3, gt=0.0, lt=1.0)
    consent_rate: float = Field(0.9, ge=0.0, le=1.0)
    open_age_slope: float = 0.0
    reach_age_slope: float = 0.0


class Population(_Section):
    """Parameters of the hidden traits (see the comments in default.yaml)."""

    base_logit: float = -1.6
    base_tier_slope: float = 0.45
    base_sd: float = Field(0.7, ge=0.0)
    basket_median: float = Field(55.0, gt=0.0)
    basket_income_slope: float = 0.35
    basket_tier_slope: float = 0.12
    basket_sd: float = Field(0.45, ge=0.0)
    sensitivity_logit: float = 0.0
    sensitivity_income_slope: float = -0.8
    sensitivity_age_slope: float = 0.3
    sensitivity_sd: float = Field(1.2, ge=0.0)
    indifferent_share: float = Field(0.4, ge=0.0, le=1.0)
    value_scale: float = Field(0.2, gt=0.0)
    min_spend_aversion: float = Field(1.5, ge=0.0)
    redeem_affinity: float = Field(0.35, ge=0.0, le=1.0)
    browse_rate: float = Field(0.15, ge=0.0, le=1.0)
    click_rate: float = Field(0.3, ge=0.0, le=1.0)
    spend_noise_sd: float = Field(0.5, ge=0.0)
    household_share: float = Field(0.04, ge=0.0, lt=1.0)


class Fatigue(_Section):
    """Exposure is multiplied by exp(-rate_i * contacts in the last `window_hours`)."""

    window_hours: float = Field(168.0, gt=0.0)
    rate: float = Field(0.35, ge=0.0)


class Abusers(_Section):
    """Coupon farmers: rings of accounts sharing a device and a payment id, redeeming without buying more."""

    share: float = Field(0.03, ge=0.0, lt=1.0)
    ring_min: int = Field(3, ge=1)
    ring_max: int = Field(8, ge=1)
    redeem_rate: float = Field(0.95, ge=0.0, le=1.0)
    base_rate_min: float = Field(0.5, ge=0.0, le=1.0)
    base_rate_max: float = Field(0.85, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Abusers:
        if self.ring_min > self.ring_max:
            raise ValueError(f"ring_min {self.ring_min} is above ring_max {self.ring_max}")
        if self.base_rate_min > self.base_rate_max:
            raise ValueError(f"base_rate_min {self.base_rate_min} is above base_rate_max {self.base_rate_max}")
        return self


class History(_Section):
    """The pre-period: its length and the rate of past campaign contacts."""

    hours: float = Field(672.0, ge=0.0)
    contacts_per_week: float = Field(0.8, ge=0.0)


class WorldConfig(_Section):
    """Everything about the world's customers that is not the catalog (the ``world`` section of a spec)."""

    window_hours: float = Field(168.0, gt=0.0)
    cities: tuple[City, ...] = Field((City(id="city0"),), min_length=1)
    tiers: tuple[str, ...] = ("bronze", "silver", "gold", "platinum")
    tier_weights: tuple[float, ...] = (0.5, 0.3, 0.15, 0.05)
    channels: dict[str, ChannelBehaviour] = Field(default_factory=dict)
    population: Population = Population()
    fatigue: Fatigue = Fatigue()
    abusers: Abusers = Abusers()
    history: History = History()
    shocks: tuple[Shock, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "shocks" in data and data["shocks"] is None:
            return {**data, "shocks": ()}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> WorldConfig:
        if len(self.tiers) != len(self.tier_weights) or min(self.tier_weights, default=0) < 0:
            raise ValueError(f"tiers {list(self.tiers)} and tier_weights {list(self.tier_weights)} do not match")
        cities = {c.id for c in self.cities}
        for s in self.shocks:
            if s.city not in cities:
                raise ValueError(f"a shock names unknown city {s.city!r}; the cities are {sorted(cities)}")
        return self

    def channel(self, channel_id: str) -> ChannelBehaviour:
        """Behaviour of a channel (defaults when the config does not mention it)."""
        return self.channels.get(channel_id, ChannelBehaviour())

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None, source: str = "world spec") -> WorldConfig:
        """Validate the ``world`` section of a spec; ConfigError names `source`, each bad field and its value."""
        try:
            return cls.model_validate(dict(spec or {}))
        except ValidationError as exc:
            raise ConfigError(f"invalid {source}: {_problems(exc)}") from None


def _field_model(kind: Any) -> type[BaseModel] | None:
    """The model inside a field type (a model, a tuple of models or a dict of models), else None."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return kind
    if get_origin(kind) in (tuple, dict):
        return next((m for m in map(_field_model, get_args(kind)) if m is not None), None)
    return None


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where an unknown key `loc` was found."""
    model: type[BaseModel] | None = WorldConfig
    for part in loc[:-1]:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            model = _field_model(model.model_fields[part].annotation)
    return sorted(model.model_fields) if model is not None else []


def _problems(exc: ValidationError) -> str:
    """Each error as ``world.<path>: <message> (got <value>)``."""
    out = []
    for e in exc.errors(include_url=False):
        where = ".".join(["world", *(str(p) for p in e["loc"])])
        if e["type"] == "extra_forbidden":
            out.append(f"{where}: unknown key (got {e['input']!r}); known keys are {_known_keys(e['loc'])}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = "" if isinstance(e["input"], Mapping) and e["type"] == "value_error" else f" (got {e['input']!r})"
            out.append(f"{where}: {msg}{got}")
    return "; ".join(out)


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


def world_label(path: str | Path) -> str:
    """How to name a world spec file: its preset name when it is one of the presets, else the path."""
    path = Path(path)
    return path.stem if path.resolve().parent == PRESET_DIR and path.suffix == ".yaml" else str(path)


def load_world_spec(path: str | Path | None = None) -> tuple[Catalog, WorldConfig]:
    """Read a world spec (a preset name or a file; default: simworld/default.yaml) into its catalog and config."""
    path = resolve_world(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read world spec {str(path)!r}: {exc}") from exc
    if not isinstance(spec, Mapping) or "catalog" not in spec:
        raise ConfigError(f"world spec {str(path)!r} must be a mapping with a 'catalog' section")
    return spec_to_world(spec, source=f"world spec {str(path)!r}")


def spec_to_world(spec: Mapping[str, Any], source: str = "world spec") -> tuple[Catalog, WorldConfig]:
    """Turn a spec dict (``catalog`` and ``world`` sections) into a catalog and a world config; ConfigError names
    `source` (the file), the field path and the bad value."""
    unknown = sorted(set(spec) - {"catalog", "world"})
    if unknown:
        raise ConfigError(f"{source}: unknown sections {unknown}; expected 'catalog' and 'world'")
    try:
        catalog = Catalog.from_dict(spec["catalog"])
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    world = spec.get("world")
    if world is not None and not isinstance(world, Mapping):
        raise ConfigError(f"{source}: the 'world' section must be a mapping, got {world!r}")
    return catalog, WorldConfig.from_dict(world, source=source)
