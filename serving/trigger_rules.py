"""Trigger rules: which events arm a customer's timer, how long it waits, what cancels it, where it may send.

A :class:`TriggerRule` arms a timer for a customer on a *start* event and fires it ``wait_hours`` later unless a
*cancel* event (by default a transaction) came first. The two rules of the field ship as constants:

- "active in the app and no order within 5 minutes": start ``app_open``, wait 5/60 h (:data:`ACTIVE_NO_ORDER`);
- "new customer with no first order after 3 days": start ``signup``, wait 72 h, only for customers who never
  bought (:data:`NEW_NO_FIRST_ORDER`).

Rules come from YAML (a ``triggers:`` list, :func:`load_trigger_rules`, or the service's ``triggers.rules``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offerlift.features.errors import ConfigError


@dataclass(frozen=True)
class TriggerRule:
    """An event rule (see the module doc).

    Attributes:
        start: event kinds that arm the timer.
        wait_hours: the timer fires this long after the start unless cancelled.
        cancel: event kinds that disarm the customer's timer.
        first_order_only: only customers with no transaction seen so far (the "new customer" rules).
        restart: a start event while armed restarts the wait (default: the first start counts).
        cooldown_hours: at most one firing per customer and rule in this time.
        channels: channels the rule may send on (empty: any); passed to the decision as ``context["channels"]``.
        arms: arms the rule may send (empty: any); passed as ``context["arms"]``.
    """

    name: str
    start: tuple[str, ...]
    wait_hours: float
    cancel: tuple[str, ...] = ("transaction",)
    first_order_only: bool = False
    restart: bool = False
    cooldown_hours: float = 24.0
    channels: tuple[str, ...] = ()
    arms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.start or self.wait_hours < 0 or self.cooldown_hours < 0:
            raise ConfigError(f"trigger {self.name!r}: needs start events, wait_hours >= 0 and cooldown_hours >= 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TriggerRule:
        """Build from YAML; ``wait_minutes`` may replace ``wait_hours``; ConfigError names unknown keys."""
        d = dict(d)
        if "wait_minutes" in d:
            d["wait_hours"] = float(d.pop("wait_minutes")) / 60.0
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"trigger: unknown keys {unknown}; known keys are {sorted(cls.__dataclass_fields__)}")
        for key in ("start", "cancel", "channels", "arms"):
            if key in d:
                d[key] = (d[key],) if isinstance(d[key], str) else tuple(d[key] or ())
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"trigger {d!r}: {exc}") from None


ACTIVE_NO_ORDER = TriggerRule("active_no_order", start=("app_open",), wait_hours=5 / 60, channels=("push", "sms"))
NEW_NO_FIRST_ORDER = TriggerRule(
    "new_no_first_order", start=("signup",), wait_hours=72.0, first_order_only=True, cooldown_hours=24.0 * 365
)


def load_trigger_rules(path: str | Path) -> list[TriggerRule]:
    """Rules from a YAML file with a ``triggers:`` list."""
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read trigger rules {str(path)!r}: {exc}") from exc
    if not isinstance(spec, Mapping) or not isinstance(spec.get("triggers"), list):
        raise ConfigError(f"trigger rules {str(path)!r}: expected a mapping with a 'triggers' list")
    return [TriggerRule.from_dict(r) for r in spec["triggers"]]
