"""The BentoML 1.4 decision service: ``POST /decide``, ``POST /outcomes``, ``POST /events``, ``POST /events/flush``,
``/livez``, ``/readyz``, ``/docs``.

Run it with ``offerlift serve`` (see `offerlift.serving.cli_serve`) or ``bentoml serve
offerlift.serving.service:OfferLift``. Each worker process builds one `offerlift.serving.decider.Decider` (the
champion is loaded once per worker and hot-swapped in the background). Settings come from
`offerlift.serving.settings.settings_from_env`.

What keeps BentoML's own overhead low (see benchmarks/results/serve.md):
- handlers return pydantic models (a ``dict`` return makes BentoML rebuild a JSON schema for every response);
- ``gc.freeze()`` after start-up, so the collector stops re-scanning the start-up heap (long pauses otherwise);
- TCP_NODELAY on the listening socket that BentoML hands to each worker (accepted sockets inherit it);
- metrics and access logs off; the API key and the content type are checked by a small ASGI middleware;
- BentoML's OpenTelemetry middleware skips the API and health routes (``tracing.excluded_urls``): with no
  exporter configured it still cost about 0.25 ms of CPU per request, a third of BentoML's own cost;
- ``/decide`` runs in one handler thread per worker, so the event loop keeps reading requests while a decision
  waits for the writer lock; ``tuning.inline_handler: true`` runs it on the loop instead (same CPU, worse tail
  latency in the interleaved benchmark). ``/outcomes`` always runs in BentoML's handler thread.

``/events`` feeds the real-time triggers (`offerlift.serving.events_api`): their state is shared by the workers in
SQLite, their decisions go through the same `Decider` as ``/decide``; nothing of it runs inside a ``/decide`` request.

Customer ids never reach the logs in plain text: our own logs hash them, and a log filter removes the request
body from BentoML's log of validation errors.
"""

from __future__ import annotations

import gc
import logging
import socket
import sys
from datetime import datetime
from typing import Annotated, Any

import anyio
import anyio.to_thread
import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound, ServiceUnavailable
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offerlift.features.errors import DataError, ModelError, OfferliftError
from offerlift.serving.decider import Decider, Decision
from offerlift.serving.events_api import EventsResponse, StreamEvent, TriggerService
from offerlift.serving.http_edge import EdgeMiddleware, declare_channels
from offerlift.serving.preflight import preflight
from offerlift.serving.settings import settings_from_env

log = logging.getLogger(__name__)

# see `tuning.trace_api`
UNTRACED = ("/decide", "/outcomes", "/events", "/events/flush", "/livez", "/readyz", "/healthz")
Scalar = float | int | str | bool | None


class DecideContext(BaseModel):
    """Optional context of a decision request."""

    model_config = ConfigDict(extra="forbid")

    city: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    timestamp: datetime | None = Field(None, description="ISO 8601 or unix seconds")
    channels: Annotated[list[Annotated[str, Field(max_length=32)]], Field(max_length=16)] | None = Field(
        None, description="channels available now (others are not used); omitted: all"
    )
    features: Annotated[dict[Annotated[str, Field(max_length=64)], Scalar], Field(max_length=256)] | None = Field(
        None, description="feature values that override the online store's"
    )


class ArmScore(BaseModel):
    """One arm of the explanation."""

    arm: str
    expected_incremental_profit: float


class DecideResponse(BaseModel):
    """A logged decision."""

    decision_id: str
    arm: str
    offer_id: str | None
    coupon_value: float
    channel: str | None
    propensity: float
    group: str
    model_version: str
    expected_incremental_profit: float
    expected_cost: float
    price: float
    cold_start: bool
    explanation: list[ArmScore]


class OutcomeEvent(BaseModel):
    """One outcome event in the canonical schema."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[str, Field(min_length=1, max_length=128)]
    ts: float = Field(allow_inf_nan=False)
    visit: float = Field(ge=0.0, le=1.0)
    buy: float = Field(ge=0.0, le=1.0)
    spend: float = Field(ge=0.0, allow_inf_nan=False)
    redeem: float = Field(ge=0.0, le=1.0)
    event_id: Annotated[str, Field(min_length=1, max_length=64)]
    decision_id: Annotated[str, Field(max_length=36)] | None = None


class OutcomesResponse(BaseModel):
    """How many events arrived and how many were new (event ids make them idempotent)."""

    received: int
    new: int


def to_response(d: Decision) -> DecideResponse:
    """The HTTP form of a decision."""
    return DecideResponse(
        decision_id=d.decision_id,
        arm=d.arm,
        offer_id=d.offer_id,
        coupon_value=d.coupon_value,
        channel=d.channel,
        propensity=d.propensity,
        group=d.group,
        model_version=d.model_version,
        expected_incremental_profit=d.expected_incremental_profit,
        expected_cost=d.expected_cost,
        price=d.price,
        cold_start=d.cold_start,
        explanation=[ArmScore.model_validate(e) for e in d.explanation],
    )


class _NoRequestBodies(logging.Filter):
    """Log client errors as one line: a validation error's traceback quotes the request body (customer ids)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False))
            summary = f"invalid request fields: {fields}"
        elif isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
            summary = f"client error {int(exc.error_code)}: {exc}"
        else:
            return True
        record.msg = f"{record.getMessage()}: {summary}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _set_listen_nodelay(argv: list[str]) -> bool:
    """Set TCP_NODELAY on the listening socket passed to this worker as ``--fd N`` (accepted sockets inherit it)."""
    if "--fd" not in argv:
        return False
    try:
        fd = int(argv[argv.index("--fd") + 1])
        sock = socket.socket(fileno=fd)
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return True
            return False
        finally:
            sock.detach()  # the fd belongs to uvicorn
    except (ValueError, IndexError, OSError) as exc:
        log.warning("could not set TCP_NODELAY on the listening socket: %s", exc)
        return False


@bentoml.service(
    name="OfferLift",
    workers=2,
    threads=1,
    traffic={"timeout": 30},
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": list(UNTRACED)},
    envs=[{"name": "OMP_NUM_THREADS", "value": "1"}],
)
class OfferLift:
    """Real-time offer decisions; one instance per worker process."""

    @bentoml.on_deployment
    def _preflight() -> None:
        """Once, before any worker starts (also under ``bentoml serve TAG``): the folders, the decision log and the
        champion; a broken setting ends the server with one line and exit code 2 instead of dying workers."""
        try:
            preflight(settings_from_env())
        except OfferliftError as exc:
            sys.stderr.write(f"error: {exc}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None

    def __init__(self) -> None:
        logging.getLogger("offerlift").setLevel(logging.INFO)  # BentoML leaves the root logger at WARNING
        self.settings = settings_from_env()
        self.decider = Decider(self.settings)
        champion = self.decider.load_champion()
        declare_channels([c.id for c in champion.scorer.catalog.channels])
        self.decider.start_background()
        self.triggers: TriggerService | None = None
        if self.settings.triggers.enabled:
            self.triggers = TriggerService(self.settings, self.decider)
            self.triggers.start_tick()
        self._limiter: anyio.CapacityLimiter | None = None

    @bentoml.on_startup
    def _tune_worker(self) -> None:
        """After start-up: TCP_NODELAY on the listening socket, hide request bodies in logs, freeze the GC."""
        tuning = self.settings.tuning
        nodelay = tuning.tcp_nodelay and _set_listen_nodelay(sys.argv)
        for name in ("bentoml._internal.server.http_app", "bentoml.serve", "_bentoml_impl.server.app"):
            logging.getLogger(name).addFilter(_NoRequestBodies())
        if tuning.gc_freeze:
            gc.collect()
            gc.freeze()
        log.info(
            "worker ready: champion %s, TCP_NODELAY %s, gc frozen %s",
            self.decider.champion.version,
            nodelay,
            tuning.gc_freeze,
        )

    def __is_ready__(self) -> bool:
        """Ready once a champion is loaded."""
        return self.decider.ready

    @bentoml.api(route="/decide")
    async def decide(
        self,
        customer_id: Annotated[str, Field(min_length=1, max_length=128)],
        context: DecideContext | None = None,
    ) -> DecideResponse:
        """Choose the arm (offer and channel, or no offer) for one customer, log it, and return it."""
        ctx = None if context is None else context.model_dump(exclude_none=True)
        if self.settings.tuning.inline_handler:
            return self._decide(customer_id, ctx)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.settings.threads)
        return await anyio.to_thread.run_sync(self._decide, customer_id, ctx, limiter=self._limiter)

    def _decide(self, customer_id: str, ctx: dict[str, Any] | None) -> DecideResponse:
        if ctx:
            ctx = self._checked_context(customer_id, ctx)
        try:
            return to_response(self.decider.decide(customer_id, ctx))
        except ModelError as exc:
            if not self.decider.ready:
                raise ServiceUnavailable("no champion model is loaded") from None
            raise InvalidArgument(f"context.features: {exc}") from None

    def _checked_context(self, customer_id: str, ctx: dict[str, Any]) -> dict[str, Any]:
        """Unknown channels are refused (400 naming them); a stored city wins over ``context.city`` unless
        ``context_overrides`` lists it."""
        champ = self.decider.champion
        if ctx.get("channels") is not None and champ is not None:
            known = {c.id for c in champ.scorer.catalog.channels}
            unknown = sorted(set(ctx["channels"]) - known)
            if unknown:
                raise InvalidArgument(f"context.channels: unknown channel(s) {unknown}; known: {sorted(known)}")
        if ctx.get("city") is not None and "city" not in self.settings.context_overrides:
            stored = self.decider.store.get(customer_id)
            if stored is not None and stored.get("city") is not None:
                ctx = {k: v for k, v in ctx.items() if k != "city"}
        return ctx

    @bentoml.api(route="/outcomes")
    def outcomes(self, events: Annotated[list[OutcomeEvent], Field(max_length=10_000)]) -> OutcomesResponse:
        """Store outcome events (idempotent on event_id)."""
        try:
            new = self.decider.record_outcomes([e.model_dump() for e in events])
        except DataError as exc:
            raise InvalidArgument(f"events: {exc}") from None
        return OutcomesResponse(received=len(events), new=new)

    @bentoml.api(route="/events")
    def events(self, events: Annotated[list[StreamEvent], Field(max_length=10_000)]) -> EventsResponse:
        """Feed events (canonical schema, app_open and signup included) to the real-time triggers; returns how
        many were accepted (and late), the triggers that fired and the ids of the decisions they made."""
        return self._trigger_service().post_events(events)

    @bentoml.api(route="/events/flush")
    def flush_events(self, until: Annotated[float, Field(allow_inf_nan=False)] | None = None) -> EventsResponse:
        """Fire the trigger timers due at or before `until` (hours; default: the server's clock, or with
        ``triggers.clock: events`` the latest event's time)."""
        return self._trigger_service().flush(until)

    def _trigger_service(self) -> TriggerService:
        if self.triggers is None:
            raise NotFound("the real-time triggers are disabled (settings: triggers.enabled)")
        return self.triggers


OfferLift.add_asgi_middleware(EdgeMiddleware)
