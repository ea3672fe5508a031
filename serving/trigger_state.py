"""Where the trigger engine keeps its state: armed timers, known buyers, last firings, sent messages, its clock.

:class:`MemoryState` (the default; replays and tests) keeps it in dicts and a heap. :class:`SqliteState` keeps
it in a SQLite file, so that every worker process of the service shares one set of timers (an ``app_open`` on one
worker and the order that cancels it on another meet in the same table), a restart loses no armed timer, and a
due timer fires exactly once whichever worker's call or tick finds it. Its `transaction` takes an ``flock`` on a
file next to the database (writers queue in the kernel instead of SQLite's sleeping busy handler) and wraps the
calls in ``BEGIN IMMEDIATE`` ... ``COMMIT``; an error rolls the whole call back.

Both order the due timers by (due time, arming order). Timers are keyed by (rule name, customer id).
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import math
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Timer:
    """An armed timer that came due."""

    due: float
    rule: str
    customer_id: str
    armed_at: float


class TriggerState(Protocol):
    """The state a :class:`offerlift.serving.triggers.TriggerEngine` reads and writes (calls happen inside
    `transaction`)."""

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def get_now(self) -> float: ...

    def set_now(self, now: float) -> None: ...

    def arm(self, rule: str, customer_id: str, due: float, armed_at: float, restart: bool) -> None: ...

    def disarm(self, rule: str, customer_id: str) -> None: ...

    def pop_due(self, t: float, inclusive: bool) -> list[Timer]: ...

    def next_due(self) -> float: ...

    def is_buyer(self, customer_id: str) -> bool: ...

    def add_buyers(self, customer_ids: Iterable[str]) -> None: ...

    def last_fired(self, rule: str, customer_id: str) -> float | None: ...

    def set_fired(self, rule: str, customer_id: str, t: float) -> None: ...

    def sent_since(self, customer_id: str, since: float) -> list[tuple[float, str]]: ...

    def add_sent(self, customer_id: str, t: float, channel: str) -> None: ...

    def pending(self) -> int: ...


@dataclass
class MemoryState:
    """The state in memory: a heap of timers (stale entries skipped), dicts and sets."""

    timers: list[tuple[float, int, str, str]] = field(default_factory=list)
    armed: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # -> (due, armed_at)
    buyers: set[str] = field(default_factory=set)
    fired: dict[tuple[str, str], float] = field(default_factory=dict)
    sent: dict[str, deque[tuple[float, str]]] = field(default_factory=dict)
    now: float = -math.inf
    seq: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """The state's lock (re-entrant)."""
        return self.lock  # type: ignore[return-value]

    def get_now(self) -> float:
        """The stream's time (-inf before the first event)."""
        return self.now

    def set_now(self, now: float) -> None:
        """Move the stream's time."""
        self.now = now

    def arm(self, rule: str, customer_id: str, due: float, armed_at: float, restart: bool) -> None:
        """Arm (or with `restart`, re-arm) the customer's timer of the rule."""
        key = (rule, customer_id)
        if key in self.armed and not restart:
            return
        self.armed[key] = (due, armed_at)
        self.seq += 1
        heapq.heappush(self.timers, (due, self.seq, rule, customer_id))

    def disarm(self, rule: str, customer_id: str) -> None:
        """Cancel the customer's timer of the rule, if armed."""
        self.armed.pop((rule, customer_id), None)

    def pop_due(self, t: float, inclusive: bool) -> list[Timer]:
        """Remove and return the timers due before `t` (at or before with `inclusive`), in order."""
        out = []
        while self.timers and (self.timers[0][0] < t or (inclusive and self.timers[0][0] <= t)):
            due, _, rule, cid = heapq.heappop(self.timers)
            armed = self.armed.get((rule, cid))
            if armed is None or armed[0] != due:
                continue  # cancelled or restarted
            del self.armed[(rule, cid)]
            out.append(Timer(due, rule, cid, armed[1]))
        return out

    def next_due(self) -> float:
        """The due time of the earliest armed timer (inf when none)."""
        while self.timers:
            due, _, rule, cid = self.timers[0]
            armed = self.armed.get((rule, cid))
            if armed is not None and armed[0] == due:
                return due
            heapq.heappop(self.timers)
        return math.inf

    def is_buyer(self, customer_id: str) -> bool:
        """Whether a transaction of the customer was seen."""
        return customer_id in self.buyers

    def add_buyers(self, customer_ids: Iterable[str]) -> None:
        """Remember customers who bought."""
        self.buyers.update(customer_ids)

    def last_fired(self, rule: str, customer_id: str) -> float | None:
        """When the rule last fired for the customer."""
        return self.fired.get((rule, customer_id))

    def set_fired(self, rule: str, customer_id: str, t: float) -> None:
        """Record a firing."""
        self.fired[(rule, customer_id)] = t

    def sent_since(self, customer_id: str, since: float) -> list[tuple[float, str]]:
        """(time, channel) of the customer's messages after `since` (older ones are forgotten)."""
        sent = self.sent.get(customer_id)
        if not sent:
            return []
        while sent and sent[0][0] <= since:
            sent.popleft()
        return list(sent)

    def add_sent(self, customer_id: str, t: float, channel: str) -> None:
        """Record a sent message."""
        self.sent.setdefault(customer_id, deque()).append((t, channel))

    def pending(self) -> int:
        """Armed timers."""
        return len(self.armed)


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS timers (seq INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, "
    "customer_id TEXT NOT NULL, due REAL NOT NULL, armed_at REAL NOT NULL, UNIQUE (rule, customer_id))",
    "CREATE INDEX IF NOT EXISTS timers_due ON timers (due, seq)",
    "CREATE TABLE IF NOT EXISTS buyers (customer_id TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS fired (rule TEXT NOT NULL, customer_id TEXT NOT NULL, time REAL NOT NULL, "
    "PRIMARY KEY (rule, customer_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS sent (customer_id TEXT NOT NULL, time REAL NOT NULL, channel TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sent_customer ON sent (customer_id, time)",
    "CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 0), now REAL)",
)


class SqliteState:
    """The state in a SQLite file shared by processes (see the module doc).

    Args:
        path: the database file (created with its folder).
        synchronous: SQLite's ``synchronous`` pragma (NORMAL: a committed call survives a crash of the process).
    """

    def __init__(self, path: str | Path, synchronous: str = "NORMAL"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._fd: int | None = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        self._lock = threading.RLock()
        self._depth = 0
        with self.transaction():
            for stmt in SCHEMA:
                self._conn.execute(stmt)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction across threads and processes (re-entrant: the outermost one commits)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            if self._fd is None:
                raise sqlite3.ProgrammingError(f"trigger state {self.path} is closed")
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._depth = 1
                try:
                    yield
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                else:
                    self._conn.execute("COMMIT")
                finally:
                    self._depth = 0
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _one(self, sql: str, args: tuple = ()) -> tuple | None:
        return self._conn.execute(sql, args).fetchone()

    def get_now(self) -> float:
        """The stream's time (-inf before the first event)."""
        row = self._one("SELECT now FROM clock WHERE id = 0")
        return -math.inf if row is None or row[0] is None else float(row[0])

    def set_now(self, now: float) -> None:
        """Move the stream's time."""
        self._conn.execute("INSERT OR REPLACE INTO clock (id, now) VALUES (0, ?)", (float(now),))

    def arm(self, rule: str, customer_id: str, due: float, armed_at: float, restart: bool) -> None:
        """Arm (or with `restart`, re-arm) the customer's timer of the rule."""
        verb = "INSERT OR REPLACE" if restart else "INSERT OR IGNORE"
        self._conn.execute(
            f"{verb} INTO timers (rule, customer_id, due, armed_at) VALUES (?, ?, ?, ?)",
            (rule, customer_id, float(due), float(armed_at)),
        )

    def disarm(self, rule: str, customer_id: str) -> None:
        """Cancel the customer's timer of the rule, if armed."""
        self._conn.execute("DELETE FROM timers WHERE rule = ? AND customer_id = ?", (rule, customer_id))

    def pop_due(self, t: float, inclusive: bool) -> list[Timer]:
        """Remove and return the timers due before `t` (at or before with `inclusive`), in order."""
        op = "<=" if inclusive else "<"
        rows = self._conn.execute(
            f"SELECT due, rule, customer_id, armed_at FROM timers WHERE due {op} ? ORDER BY due, seq", (float(t),)
        ).fetchall()
        if rows:
            self._conn.execute(f"DELETE FROM timers WHERE due {op} ?", (float(t),))
        return [Timer(float(d), str(r), str(c), float(a)) for d, r, c, a in rows]

    def next_due(self) -> float:
        """The due time of the earliest armed timer (inf when none)."""
        row = self._one("SELECT MIN(due) FROM timers")
        return math.inf if row is None or row[0] is None else float(row[0])

    def is_buyer(self, customer_id: str) -> bool:
        """Whether a transaction of the customer was seen."""
        return self._one("SELECT 1 FROM buyers WHERE customer_id = ?", (customer_id,)) is not None

    def add_buyers(self, customer_ids: Iterable[str]) -> None:
        """Remember customers who bought."""
        with self.transaction():
            self._conn.executemany("INSERT OR IGNORE INTO buyers VALUES (?)", ((str(c),) for c in customer_ids))

    def last_fired(self, rule: str, customer_id: str) -> float | None:
        """When the rule last fired for the customer."""
        row = self._one("SELECT time FROM fired WHERE rule = ? AND customer_id = ?", (rule, customer_id))
        return None if row is None else float(row[0])

    def set_fired(self, rule: str, customer_id: str, t: float) -> None:
        """Record a firing."""
        self._conn.execute("INSERT OR REPLACE INTO fired VALUES (?, ?, ?)", (rule, customer_id, float(t)))

    def sent_since(self, customer_id: str, since: float) -> list[tuple[float, str]]:
        """(time, channel) of the customer's messages after `since` (older ones are deleted)."""
        self._conn.execute("DELETE FROM sent WHERE customer_id = ? AND time <= ?", (customer_id, float(since)))
        rows = self._conn.execute(
            "SELECT time, channel FROM sent WHERE customer_id = ? ORDER BY time, rowid", (customer_id,)
        ).fetchall()
        return [(float(t), str(ch)) for t, ch in rows]

    def add_sent(self, customer_id: str, t: float, channel: str) -> None:
        """Record a sent message."""
        self._conn.execute("INSERT INTO sent VALUES (?, ?, ?)", (customer_id, float(t), channel))

    def pending(self) -> int:
        """Armed timers."""
        row = self._one("SELECT COUNT(*) FROM timers")
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the connection and the lock file."""
        with self._lock:
            self._conn.close()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
