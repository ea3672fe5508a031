"""Settings of the decision service, validated once at start-up and passed down.

Sources, later ones win: the embedded default `serving/config.yaml`, a YAML file (``--config`` or
``$OFFERLIFT_CONFIG``), explicit overrides, then a few environment variables read here and only here:

- ``OFFERLIFT_API_KEY``: the API key (required unless insecure);
- ``OFFERLIFT_INSECURE=1``: run without a key (``--insecure``);
- ``OFFERLIFT_DECISION_LOG_URL``, ``OFFERLIFT_ONLINE_STORE``, ``OFFERLIFT_SQLITE_SYNCHRONOUS``;
- ``MLFLOW_TRACKING_URI`` (through `offerlift.models.registry.resolve_tracking_uri`);
- ``OFFERLIFT_HOME``: the folder whose ``outputs/serving/`` holds the default decision log, online store and trigger
  state (default: the current working directory; `offerlift.models.registry.offerlift_home`).

Relative paths (in a config file or the environment) are resolved against that home once, here, so that worker
processes started in another folder use the same files.

The service's worker processes get the validated settings as JSON in ``$OFFERLIFT_SETTINGS_JSON`` (set by
`offerlift.serving.cli_serve`); the API key never goes into that JSON, it stays in its own variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from offerlift.features.errors import ConfigError
from offerlift.models.registry import CHAMPION, MODEL_NAME, RegistrySettings, offerlift_home, resolve_tracking_uri
from offerlift.serving.pacing import PacingConfig
from offerlift.serving.rules import Rules
from offerlift.serving.trigger_rules import ACTIVE_NO_ORDER, NEW_NO_FIRST_ORDER, TriggerRule

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")
SETTINGS_ENV = "OFFERLIFT_SETTINGS_JSON"
API_KEY_ENV = "OFFERLIFT_API_KEY"


def state_dir() -> Path:
    """``outputs/serving/`` of the offerlift home (git-ignored in the repository): the default decision log, online
    store, trigger state and outbox."""
    return offerlift_home() / "outputs" / "serving"


def _at_home(path: Path | None) -> Path | None:
    """`path` made absolute against the offerlift home (None stays None)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else offerlift_home() / path


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicySection(_Section):
    """Shares of holdout and exploration, the exploration scheme, the holdout's salt, the fallback arm, the
    explanation's length, and the champion/challenger split.

    With ``challenger_share`` > 0 the service also loads the model behind the registry alias ``challenger`` and
    lets it decide for that share of the customers who are not in the holdout, drawn again every
    ``challenger_period_hours`` (a stable hash of customer, experiment, challenger version and period), so that the
    promotion gate can compare the two policies as served, on-policy (`offerlift.serving.policy`)."""

    holdout: float = Field(0.10, ge=0.0, lt=1.0)
    explore: float = Field(0.10, ge=0.0, le=1.0)
    explore_scheme: Literal["uniform", "softmax"] = "uniform"
    temperature: float = Field(1.0, gt=0.0)
    explore_floor: float = Field(0.2, gt=0.0, le=1.0)
    experiment: str = "default"
    fallback_arm: str | None = None
    explain_top: int = Field(3, ge=0, le=50)
    challenger_share: float = Field(0.0, ge=0.0, le=0.5)
    challenger_period_hours: float = Field(168.0, gt=0.0)


class CampaignSection(_Section):
    """The campaign whose budget the decisions are charged to.

    ``budget`` None means no budget. ``start`` (unix seconds) None means: keep the start already in the decision
    log, or now for a new campaign. The campaign ends ``duration_hours`` after its start.
    """

    name: str = Field("default", min_length=1, max_length=64)
    budget: float | None = Field(None, ge=0.0)
    start: float | None = None
    duration_hours: float = Field(24.0 * 30, gt=0.0)


class PacingSection(_Section):
    """Gains of the pacing price controller (see `offerlift.serving.pacing`)."""

    enabled: bool = True
    kp: float = Field(20.0, ge=0.0)
    ki: float = Field(10.0, ge=0.0)
    horizon_hours: float = Field(1.0, gt=0.0)
    max_price: float = Field(10.0, ge=0.0)

    def config(self) -> PacingConfig:
        """The controller's configuration."""
        return PacingConfig(kp=self.kp, ki=self.ki, horizon_hours=self.horizon_hours, max_price=self.max_price)


class RegistrySection(_Section):
    """Where the champion lives and how often to look for a new one (0 = never)."""

    tracking_uri: str | None = None
    model_name: str = MODEL_NAME
    alias: str = CHAMPION
    reload_interval_s: float = Field(30.0, ge=0.0)


class TuningSection(_Section):
    """Worker tuning against BentoML's overhead (switches exist so the benchmark can show what each one buys)."""

    gc_freeze: bool = True
    tcp_nodelay: bool = True
    inline_handler: bool = False
    trace_api: bool = False
    background_checkpoint: bool = True


def _default_trigger_rules() -> list[dict[str, Any]]:
    def plain(rule: TriggerRule) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in rule.__dict__.items()}

    return [plain(ACTIVE_NO_ORDER), plain(NEW_NO_FIRST_ORDER)]


class TriggersSection(_Section):
    """Real-time triggers behind ``POST /events`` (see `offerlift.serving.triggers` and docs/automation.md).

    ``state_path`` / ``outbox_path`` None: ``triggers.db`` / ``outbox.jsonl`` next to the online store. ``clock``:
    ``server`` (event times are hours since the unix epoch; a tick every ``tick_seconds`` fires the timers due by
    the server's clock; events more than ``max_skew_hours`` away from it are refused) or ``events`` (time moves
    only with the events and ``POST /events/flush``: simulations and replays). ``cap_per_customer`` None: only
    the rules' caps of the decision log apply (the trigger's decisions count as contacts there).
    """

    enabled: bool = True
    rules: list[dict[str, Any]] = Field(default_factory=_default_trigger_rules)
    clock: Literal["server", "events"] = "server"
    tick_seconds: float = Field(5.0, ge=0.0)
    max_skew_hours: float = Field(24.0, gt=0.0)
    adapter: Literal["file", "log"] = "file"
    outbox_path: Path | None = None
    state_path: Path | None = None
    cap_per_customer: int | None = Field(None, ge=0)
    cap_window_hours: float = Field(24.0, gt=0.0)

    @field_validator("outbox_path", "state_path")
    @classmethod
    def _absolute_path(cls, v: Path | None) -> Path | None:
        return _at_home(v)

    @field_validator("rules")
    @classmethod
    def _rules_valid(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            names = [TriggerRule.from_dict(r).name for r in v]
        except (ConfigError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        if len(set(names)) != len(names):
            raise ValueError(f"trigger names must be unique, got {names}")
        return v

    def trigger_rules(self) -> list[TriggerRule]:
        """The rules."""
        return [TriggerRule.from_dict(r) for r in self.rules]


class ServeSettings(_Section):
    """Everything the service needs, validated."""

    api_key: SecretStr | None = Field(None, exclude=True)
    insecure: bool = False
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=0, le=65535)
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(1, ge=1, le=64)
    decision_log_url: str = Field(default_factory=lambda: f"sqlite:///{state_dir() / 'decisions.db'}")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "NORMAL"
    online_store_path: Path = Field(default_factory=lambda: state_dir() / "online_store.db")
    use_context_time: bool = False
    #: Request context fields that may replace a value stored for the customer. By default a request's
    #: ``context.city`` only fills in a city the online store does not have: it never moves a known customer into
    #: another city's eligibility.
    context_overrides: list[Literal["city"]] = Field(default_factory=list)
    rules: dict[str, Any] = Field(default_factory=dict)
    policy: PolicySection = PolicySection()
    campaign: CampaignSection = CampaignSection()
    pacing: PacingSection = PacingSection()
    registry: RegistrySection = RegistrySection()
    tuning: TuningSection = TuningSection()
    triggers: TriggersSection = TriggersSection()

    @field_validator("rules")
    @classmethod
    def _rules_valid(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            Rules.from_dict(v)
        except (ConfigError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("decision_log_url")
    @classmethod
    def _absolute_sqlite(cls, v: str) -> str:
        prefix = "sqlite:///"
        if v.startswith(prefix) and v[len(prefix) :] not in ("", ":memory:") and not v[len(prefix) :].startswith("/"):
            return f"{prefix}{offerlift_home() / v[len(prefix) :]}"
        return v

    @field_validator("online_store_path")
    @classmethod
    def _absolute_path(cls, v: Path) -> Path:
        return _at_home(v)

    @model_validator(mode="after")
    def _key_or_insecure(self) -> ServeSettings:
        if self.api_key is None and not self.insecure:
            raise ValueError(f"the API key is not set: set ${API_KEY_ENV} or pass --insecure")
        if self.api_key is not None and len(self.api_key.get_secret_value()) < 8:
            raise ValueError(f"${API_KEY_ENV} is too short (at least 8 characters)")
        return self

    def rules_config(self) -> Rules:
        """The rule configuration."""
        return Rules.from_dict(self.rules)

    def trigger_paths(self) -> tuple[Path, Path]:
        """(trigger state database, outbox file): the configured ones, else next to the online store."""
        t, base = self.triggers, self.online_store_path.parent
        return t.state_path or base / "triggers.db", t.outbox_path or base / "outbox.jsonl"

    def registry_settings(self) -> RegistrySettings:
        """Tracking URI and model name for `offerlift.models.registry`."""
        base = resolve_tracking_uri(self.registry.tracking_uri)
        return RegistrySettings(base.tracking_uri, base.artifact_root, self.registry.model_name, base.experiment)

    def to_env(self) -> dict[str, str]:
        """Environment for the worker processes: the settings as JSON, the key in its own variable."""
        env = {SETTINGS_ENV: self.model_dump_json()}
        if self.api_key is not None:
            env[API_KEY_ENV] = self.api_key.get_secret_value()
        return env


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read service config {str(path)!r}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"service config {str(path)!r} must be a mapping at the top level")
    return dict(data)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = {
        "OFFERLIFT_DECISION_LOG_URL": "decision_log_url",
        "OFFERLIFT_ONLINE_STORE": "online_store_path",
        "OFFERLIFT_SQLITE_SYNCHRONOUS": "sqlite_synchronous",
    }
    for env, key in names.items():
        if environ.get(env):
            out[key] = environ[env]
    if environ.get("OFFERLIFT_INSECURE", "").lower() in ("1", "true", "yes"):
        out["insecure"] = True
    return out


def _validate(data: Mapping[str, Any], where: str) -> ServeSettings:
    try:
        return ServeSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid service settings ({where}): {problems}") from None


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServeSettings:
    """Validated settings from the default YAML, a config file, overrides and the environment.

    ConfigError names the bad field, e.g. ``policy.holdout: Input should be less than 1``.
    """
    environ = os.environ if environ is None else environ
    data = _read_yaml(DEFAULT_CONFIG)
    path = config_file or environ.get("OFFERLIFT_CONFIG")
    if path:
        data = _merge(data, _read_yaml(Path(path)))
    data = _merge(data, _env_values(environ))
    data = _merge(data, dict(overrides or {}))
    if environ.get(API_KEY_ENV):
        data["api_key"] = environ[API_KEY_ENV]
    return _validate(data, str(path or DEFAULT_CONFIG))


def settings_from_env(environ: Mapping[str, str] | None = None) -> ServeSettings:
    """The settings a worker process runs with: the JSON passed by `cli_serve`, else `load_settings`."""
    environ = os.environ if environ is None else environ
    raw = environ.get(SETTINGS_ENV)
    if not raw:
        return load_settings(environ=environ)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"${SETTINGS_ENV} is not valid JSON: {exc}") from None
    if environ.get(API_KEY_ENV):
        data["api_key"] = environ[API_KEY_ENV]
    return _validate(data, f"${SETTINGS_ENV}")
