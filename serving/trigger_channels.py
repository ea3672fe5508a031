"""Channel adapters of the real-time triggers: what a trigger sends, and where it goes.

A :class:`ChannelAdapter` sends one :class:`Message` and answers a :class:`SendResult`. :class:`FileAdapter` (the
embedded default: a JSON-lines outbox another system reads) and :class:`LogAdapter` (a dry run) ship with the
project; :class:`RoutingAdapter` sends each channel with its own adapter. A real SMS or push gateway is one more
class with a ``send`` method. :func:`make_adapter` builds the one the service's settings name.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from offerlift.features.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """What a channel adapter sends."""

    customer_id: str
    channel: str
    arm: str
    offer_id: str | None
    decision_id: str | None
    trigger: str
    time: float


@dataclass(frozen=True)
class SendResult:
    """The adapter's answer: ``sent`` or ``failed`` and a detail."""

    status: str
    detail: str = ""


class ChannelAdapter(Protocol):
    """Sends one message on its channel."""

    def send(self, message: Message) -> SendResult: ...


class FileAdapter:
    """Appends each message as one JSON line to a file (the embedded default: an outbox another system reads).

    Each line is written with one ``write`` on a file opened for appending, so several processes may share the
    outbox (the service's workers do).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def send(self, message: Message) -> SendResult:
        """Append the message; an OSError becomes a ``failed`` result."""
        line = json.dumps(asdict(message)) + "\n"
        try:
            with self._lock, self.path.open("a") as fh:
                fh.write(line)
        except OSError as exc:
            log.warning("outbox %s: cannot write: %s", self.path, exc)
            return SendResult("failed", str(exc))
        return SendResult("sent", str(self.path))


class LogAdapter:
    """Logs each message (a dry run)."""

    def send(self, message: Message) -> SendResult:
        """Log the message; always ``sent``."""
        log.info("trigger %s -> %s on %s (%s)", message.trigger, message.arm, message.channel, message.decision_id)
        return SendResult("sent", "log")


class RoutingAdapter:
    """Sends each message with the adapter of its channel, else with the default adapter."""

    def __init__(self, by_channel: Mapping[str, ChannelAdapter], default: ChannelAdapter | None = None):
        self.by_channel = dict(by_channel)
        self.default = default or LogAdapter()

    def send(self, message: Message) -> SendResult:
        """Send with the channel's adapter."""
        return self.by_channel.get(message.channel, self.default).send(message)


def make_adapter(kind: str, outbox: str | Path | None = None) -> ChannelAdapter:
    """``file`` (a :class:`FileAdapter` on `outbox`) or ``log`` (a :class:`LogAdapter`)."""
    if kind == "file":
        if outbox is None:
            raise ConfigError("the file channel adapter needs an outbox path")
        return FileAdapter(outbox)
    if kind == "log":
        return LogAdapter()
    raise ConfigError(f"unknown channel adapter {kind!r}; use 'file' or 'log'")
