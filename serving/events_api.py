"""The service's event stream: ``POST /events`` feeds the real-time triggers, ``POST /events/flush`` fires due timers.

One :class:`TriggerService` per worker process wraps a `offerlift.serving.triggers.TriggerEngine` whose state is a
SQLite file shared by every worker (`offerlift.serving.trigger_state.SqliteState`), so an ``app_open`` and the order
that cancels it may reach different workers, and a restart loses no armed timer. A firing decides through the worker's
`offerlift.serving.decider.Decider` (the same path as ``/decide``: rules, consent, caps, budget, pacing and the decision
log; the trigger's channels and arms arrive as ``context["channels"]`` / ``context["arms"]``) and sends through
the configured channel adapter (a JSON-lines outbox by default).

Time (``triggers.clock``):

- ``server`` (default, production): event times are hours since the unix epoch (``unix seconds / 3600``). Each
  call fires the timers due before each event's time, and every worker runs a tick every ``tick_seconds`` that
  fires the timers due by the server's clock, so "no order within 5 minutes" fires about 5 minutes after the
  ``app_open`` even when no other event arrives. Events further than ``max_skew_hours`` from the server's clock
  are refused (a 400 naming the index), which catches times in another unit or epoch.
- ``events`` (simulations, replays of recorded streams): time moves only with the events; ``POST /events/flush``
  with ``until`` (default: the latest event's time) fires the timers due by then.

Events older than the stream's time (late or out-of-order deliveries) are applied without moving the clock (a late
order still cancels a timer that has not fired) and counted as ``late``. Delivery is at least once: a batch that
fails half-way is rolled back as a whole, and a retried batch after a crash may fire a timer again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Literal

from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel, ConfigDict, Field

from offerlift.features.build import EVENT_KINDS
from offerlift.serving.decider import Decider
from offerlift.serving.settings import ServeSettings
from offerlift.serving.trigger_channels import make_adapter
from offerlift.serving.trigger_state import SqliteState
from offerlift.serving.triggers import Firing, TriggerEngine

log = logging.getLogger(__name__)

KEEP_FIRINGS = 1000


class StreamEvent(BaseModel):
    """One event of the canonical stream (offerlift.features.build: the four behaviour kinds plus app_open and
    signup)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[str, Field(min_length=1, max_length=128)]
    time: float = Field(allow_inf_nan=False, description="hours since the epoch (the unix epoch with clock: server)")
    event: Literal[EVENT_KINDS]  # type: ignore[valid-type]
    amount: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    offer_id: Annotated[str, Field(max_length=64)] | None = None
    reward: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    channel: Annotated[str, Field(max_length=32)] | None = None


class TriggerFiring(BaseModel):
    """A trigger that fired: its decision (when one was made) and what happened to the message."""

    trigger: str
    customer_id: str
    time: float
    status: str
    decision_id: str | None
    arm: str | None
    channel: str | None
    offer_id: str | None
    detail: str


class EventsResponse(BaseModel):
    """Events accepted (and how many were late), the trigger firings of this call and their decision ids."""

    accepted: int
    late: int
    pending: int
    firings: list[TriggerFiring]
    decision_ids: list[str]


def hours_now() -> float:
    """The server's clock in hours since the unix epoch."""
    return time.time() / 3600.0


def response(accepted: int, late: int, pending: int, firings: Sequence[Firing]) -> EventsResponse:
    """The HTTP form of a batch's result."""
    out = [
        TriggerFiring(
            trigger=f.trigger,
            customer_id=f.customer_id,
            time=f.time,
            status=f.status,
            decision_id=f.decision_id,
            arm=f.arm,
            channel=f.channel,
            offer_id=f.offer_id,
            detail=f.detail,
        )
        for f in firings
    ]
    ids = [f.decision_id for f in firings if f.decision_id is not None]
    return EventsResponse(accepted=accepted, late=late, pending=pending, firings=out, decision_ids=ids)


class TriggerService:
    """The triggers of one worker (see the module doc).

    Args:
        settings: the service settings (section ``triggers``).
        decider: the worker's Decider (its ``decide`` makes the trigger's decisions, its store knows buyers).
        clock: hours since the unix epoch (tests may replace it).
    """

    def __init__(self, settings: ServeSettings, decider: Decider, clock: Callable[[], float] = hours_now):
        cfg = settings.triggers
        self.settings, self.clock = cfg, clock
        state_path, outbox = settings.trigger_paths()
        self.state = SqliteState(state_path, synchronous=settings.sqlite_synchronous)
        store = decider.store

        def has_bought(customer_id: str) -> bool:
            stored = store.get(customer_id) or {}
            return bool(stored.get("frequency") or 0)

        self.engine = TriggerEngine(
            cfg.trigger_rules(),
            decider.decide,
            make_adapter(cfg.adapter, outbox),
            cap_per_customer=cfg.cap_per_customer,
            cap_window_hours=cfg.cap_window_hours,
            state=self.state,
            has_bought=has_bought,
            keep=KEEP_FIRINGS,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_tick(self) -> None:
        """With the server clock: fire due timers every ``tick_seconds`` in a daemon thread."""
        if self.settings.clock != "server" or self.settings.tick_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._tick_loop, name="trigger-tick", daemon=True)
        self._thread.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.settings.tick_seconds):
            self.tick()

    def tick(self) -> list[Firing]:
        """Fire the timers due by the server's clock (errors are logged: the next tick tries again)."""
        try:
            return self.engine.advance(self.clock())
        except Exception as exc:
            log.warning("trigger tick failed: %s", exc)
            return []

    def post_events(self, events: Sequence[StreamEvent]) -> EventsResponse:
        """Feed a batch (see the module doc); InvalidArgument names the index of an event too far in time."""
        if self.settings.clock == "server":
            now, skew = self.clock(), self.settings.max_skew_hours
            for i, e in enumerate(events):
                if abs(e.time - now) > skew:
                    raise InvalidArgument(
                        f"events.{i}.time: {e.time} is {e.time - now:+.1f} hours from the server's clock "
                        f"({now:.4f}); with triggers.clock 'server' times are hours since the unix epoch "
                        f"(unix seconds / 3600), at most {skew} hours away"
                    )
        rows = ({"customer_id": e.customer_id, "time": e.time, "event": e.event} for e in events)
        result = self.engine.feed(rows, "apply")
        return response(result.accepted, result.late, self.engine.pending, result.firings)

    def flush(self, until: float | None) -> EventsResponse:
        """Fire the timers due at or before `until` (default: the server's clock, or the stream's time)."""
        if self.settings.clock == "server":
            now = self.clock()
            if until is not None and until > now + 1e-9:
                raise InvalidArgument(
                    f"until: {until} is ahead of the server's clock ({now:.4f} hours since the unix epoch); "
                    "timers would fire early"
                )
            until = now if until is None else until
        elif until is None:
            until = self.engine.now
        fired = self.engine.advance(until) if until > float("-inf") else []
        return response(0, 0, self.engine.pending, fired)

    def close(self) -> None:
        """Stop the tick and close the state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.state.close()
