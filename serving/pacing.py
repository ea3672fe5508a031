"""The pacing price: a PI controller that spreads a budget over its period.

The policy picks ``argmax_a incr_a - price * cost_a`` (DESIGN.md's Lagrangian). `update_price` moves the price from
the gap between the money committed and the time-proportional target ``total * elapsed``:

- ``error = committed / total - elapsed`` (the share of the budget spent ahead of schedule; negative when behind);
- ``integral += ki * error * dt / horizon`` (``dt`` in hours since the last update, capped at one horizon),
  clipped to ``[0, max_price]`` so it never winds up;
- ``price = clip(integral + kp * error, 0, max_price)``.

The integral moves with elapsed time, not with the number of calls, so the price does not depend on the request
rate; each worker process keeps its own state but reads the same shared ledger, so the workers agree. The budget
itself is enforced elsewhere (`offerlift.serving.rules.allowed_arms`): the price only decides how fast it is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from offerlift.features.errors import ConfigError


@dataclass(frozen=True)
class PacingConfig:
    """Gains and bounds of the controller.

    Attributes:
        kp: price per unit of error (share of the budget ahead of schedule).
        ki: integral gain, price per unit of error per `horizon_hours`.
        horizon_hours: the time scale of the integral.
        max_price: upper bound of the price (and of the integral).
    """

    kp: float = 20.0
    ki: float = 10.0
    horizon_hours: float = 1.0
    max_price: float = 10.0

    def __post_init__(self) -> None:
        if self.kp < 0 or self.ki < 0 or self.max_price < 0:
            raise ConfigError(f"pacing gains and max_price must be >= 0, got {self}")
        if self.horizon_hours <= 0:
            raise ConfigError(f"pacing horizon_hours must be positive, got {self.horizon_hours!r}")


@dataclass(frozen=True)
class PacingState:
    """The controller's memory: the integral term, the current price and the time of the last update (unix s)."""

    integral: float = 0.0
    price: float = 0.0
    ts: float | None = None


def spend_error(committed: float, total: float, elapsed: float) -> float:
    """Share of the budget committed ahead of the time-proportional target (negative: behind schedule)."""
    if total <= 0.0:
        return 1.0 - elapsed
    return committed / total - min(1.0, max(0.0, elapsed))


def update_price(
    state: PacingState,
    committed: float,
    total: float,
    elapsed: float,
    now: float,
    config: PacingConfig,
) -> PacingState:
    """The next controller state after observing the spend at time `now` (unix seconds).

    Args:
        state: the previous state (`PacingState()` at start).
        committed: money committed so far.
        total: the budget.
        elapsed: share of the budget period elapsed, in [0, 1].
        now: the time of this update; an update earlier than the last one counts as no time passed.
        config: gains and bounds.
    """
    error = spend_error(committed, total, elapsed)
    dt_hours = 0.0 if state.ts is None else max(0.0, now - state.ts) / 3600.0
    step = min(dt_hours / config.horizon_hours, 1.0)
    integral = _clip(state.integral + config.ki * error * step, config.max_price)
    price = _clip(integral + config.kp * error, config.max_price)
    return PacingState(integral=integral, price=price, ts=now if state.ts is None else max(now, state.ts))


def _clip(x: float, hi: float) -> float:
    return min(max(x, 0.0), hi)
