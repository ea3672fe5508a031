"""Allocation under a budget: the Lagrangian price of a whole population, with a greedy fill.

The policy picks ``argmax_a incr_a - price * cost_a`` (`offerlift.serving.policy.decide`). As the price rises from 0,
each exploit customer's choice walks down the upper envelope of its lines ``incr_a - price * cost_a``: to cheaper arms
and finally to no offer (or the fallback arm). `breakpoints` records every step of that walk: the price at which
it happens and the change of expected cost and of expected incremental profit. Holdout and explore customers do
not depend on the price; their spend is a fixed part of the total.

`PriceSolver` finds, from the breakpoints of the whole population, the smallest price whose total expected spend
is within the budget (an exact search over the breakpoints, not a bisection with a tolerance), then fills the
budget left over greedily (a multiple-choice knapsack step): the steps just below that price are undone in order
of their profit per unit of cost (the price at which they happen) while they fit. A customer whose step is undone
gets its own, lower price. The result never spends more than the budget (in expected cost) and reaches the
optimum up to the value of one customer's step.

Memory: the solver sees the breakpoints only through two queries, a histogram over prices and the breakpoints in
a price window, so they can live in files (`SpillStore`, one machine) or on a cluster's workers
(`offerlift.serving.batch_dask`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.errors import ConfigError, PolicyError
from offerlift.serving.policy import PolicyConfig, decide

log = logging.getLogger(__name__)

#: Breakpoints of one customer closer than this (relative) are merged into one step; prices are placed this far
#: (relative) from any breakpoint, so the floating-point rounding of ``incr - price * cost`` cannot flip a choice.
REL_GAP = 1e-9
#: Default price histogram: 0, log-spaced edges, infinity.
EDGES = np.concatenate([[0.0], np.logspace(-12, 12, 4097), [np.inf]])

Histogram = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Breakpoints:
    """Steps of the exploit customers' choices as the price rises (arrays of equal length).

    Attributes:
        row: global row index of the customer.
        lam: price at which the step happens (the choice changes for prices above it).
        d_cost: change of expected cost (usually negative).
        d_value: change of expected incremental profit (usually negative).
    """

    row: np.ndarray
    lam: np.ndarray
    d_cost: np.ndarray
    d_value: np.ndarray

    @classmethod
    def empty(cls) -> Breakpoints:
        """No breakpoints."""
        z = np.zeros(0)
        return cls(np.zeros(0, dtype=np.int64), z, z, z)

    @classmethod
    def concat(cls, parts: list[Breakpoints]) -> Breakpoints:
        """All the parts' breakpoints in one object."""
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("row", "lam", "d_cost", "d_value")))

    def __len__(self) -> int:
        return int(self.lam.size)

    def select(self, keep: np.ndarray) -> Breakpoints:
        """The breakpoints where `keep` is true."""
        return Breakpoints(self.row[keep], self.lam[keep], self.d_cost[keep], self.d_value[keep])

    def histogram(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per price bin ``[edges[i], edges[i + 1])``: count, sum of d_cost, sum of d_value."""
        idx = np.searchsorted(edges, self.lam, side="right") - 1
        nb = len(edges) - 1
        ok = (idx >= 0) & (idx < nb)
        idx = idx[ok]
        return (
            np.bincount(idx, minlength=nb).astype(np.int64),
            np.bincount(idx, self.d_cost[ok], minlength=nb),
            np.bincount(idx, self.d_value[ok], minlength=nb),
        )

    def window(self, lo: float, hi: float) -> Breakpoints:
        """The breakpoints with ``lo <= lam < hi``."""
        return self.select((self.lam >= lo) & (self.lam < hi))


@dataclass(frozen=True)
class Base:
    """Totals at price 0 over a population: spend, incremental profit, number of breakpoints."""

    cost: float = 0.0
    value: float = 0.0
    n: int = 0

    def __add__(self, other: Base) -> Base:
        return Base(self.cost + other.cost, self.value + other.value, self.n + other.n)


@dataclass(frozen=True)
class Allocation:
    """The price of a budget and the customers with their own (lower) price from the greedy fill.

    Attributes:
        price: the Lagrangian price applied to everyone else.
        rows: sorted global row indices of the customers with their own price.
        row_prices: their prices.
        spend: planned total expected cost (every customer, holdout and explore included).
        value: planned total expected incremental profit.
        budget: the budget.
        lagrangian_spend / lagrangian_value: the same at `price` before the fill.
    """

    price: float
    rows: np.ndarray
    row_prices: np.ndarray
    spend: float
    value: float
    budget: float
    lagrangian_spend: float
    lagrangian_value: float

    def prices(self, start: int, n: int) -> np.ndarray:
        """(n,) prices of the rows ``start .. start + n - 1``."""
        out = np.full(n, self.price)
        lo, hi = np.searchsorted(self.rows, [start, start + n])
        out[self.rows[lo:hi] - start] = self.row_prices[lo:hi]
        return out


def _envelope_step(v: np.ndarray, c: np.ndarray, cur: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Next breakpoint price and next arm (-1: to the end state, -2: none) of rows at arm `cur` since price `lam`."""
    rows = np.arange(cur.size)
    vc, cc = v[rows, cur], c[rows, cur]
    cheaper = c < cc[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = np.where(cheaper, (vc[:, None] - v) / (cc[:, None] - c), np.inf)
        cross = np.where(np.isnan(cross), np.inf, np.maximum(cross, lam[:, None]))
        zero = np.where(cc > 0, np.maximum(vc / cc, lam), np.inf)
    best = cross.min(axis=1)
    tied = cross <= best[:, None] * (1 + 1e-12)
    # among arms crossing at the same price, the cheapest is highest just above it (then the lowest index)
    nxt = np.argmin(np.where(tied, c, np.inf), axis=1)
    to_end = zero <= best
    lam_next = np.where(to_end, zero, best)
    arm = np.where(to_end, -1, nxt)
    return lam_next, np.where(np.isinf(lam_next), -2, arm)


def breakpoints(
    incr: np.ndarray,
    cost: np.ndarray,
    allowed: np.ndarray,
    first: np.ndarray,
    exploit: np.ndarray,
    fallback_arm: int = 0,
    start: int = 0,
) -> Breakpoints:
    """The envelope walk of every exploit row from its choice at price 0 (`first`, as `decide` made it).

    Args:
        incr, cost, allowed: (n, K) as given to `decide`.
        first: (n,) arm chosen at price 0.
        exploit: (n,) rows of the exploit group (the others do not depend on the price).
        fallback_arm: the policy's fallback arm.
        start: global row index of the first row.
    """
    allowed = np.array(allowed, dtype=bool)
    allowed[:, 0] = True
    v = np.where(allowed, incr, -np.inf)
    v[:, 0] = -np.inf  # the control arm is the end state, not a line
    c = np.where(allowed, cost, np.inf)
    c[:, 0] = np.inf
    end = np.where(allowed[:, fallback_arm], fallback_arm, 0)
    best = np.where(allowed[:, 1:], incr[:, 1:], -np.inf).max(axis=1, initial=-np.inf)
    active = np.flatnonzero(exploit & (best > 0))
    cur, lam = np.asarray(first)[active].astype(np.int64), np.zeros(active.size)
    out: list[tuple[np.ndarray, ...]] = []
    while active.size:
        lam_next, arm = _envelope_step(v[active], c[active], cur, lam)
        go = arm != -2
        active, cur, lam, lam_next, arm = active[go], cur[go], lam[go], lam_next[go], arm[go]
        new = np.where(arm == -1, end[active], arm)
        dc = cost[active, new] - cost[active, cur]
        dv = incr[active, new] - incr[active, cur]
        out.append((active + start, lam_next, dc, dv))
        keep = arm != -1
        active, cur, lam = active[keep], new[keep], lam_next[keep]
    if not out:
        return Breakpoints.empty()
    row, lam_b, dc, dv = (np.concatenate(x) for x in zip(*out, strict=True))
    order = np.lexsort((lam_b, row))
    return _merge_close(Breakpoints(row[order], lam_b[order], dc[order], dv[order]))


def _merge_close(bp: Breakpoints) -> Breakpoints:
    """Merge each customer's consecutive steps closer than REL_GAP into the first (rows sorted, prices ascending)."""
    if len(bp) < 2:
        return bp
    same = (bp.row[1:] == bp.row[:-1]) & (bp.lam[1:] <= bp.lam[:-1] * (1 + REL_GAP))
    if not same.any():
        return bp
    group = np.concatenate([[0], np.cumsum(~same)])
    heads = np.flatnonzero(np.concatenate([[True], ~same]))
    return Breakpoints(
        bp.row[heads],
        bp.lam[heads],
        np.bincount(group, bp.d_cost),
        np.bincount(group, bp.d_value),
    )


class PriceSolver:
    """Exact Lagrangian price and greedy fill over breakpoints reached through two queries.

    Args:
        base: totals at price 0 (every customer).
        histogram: ``edges -> (count, sum d_cost, sum d_value)`` per bin ``[edges[i], edges[i+1])``.
        window: ``(lo, hi) -> Breakpoints`` with ``lo <= lam < hi``.
        max_window: most breakpoints loaded at once.
    """

    def __init__(
        self,
        base: Base,
        histogram: Histogram,
        window: Callable[[float, float], Breakpoints],
        max_window: int = 2_000_000,
    ):
        self.base, self.histogram, self.window, self.max_window = base, histogram, window, max_window

    def solve(self, budget: float) -> Allocation:
        """The allocation of `budget`; PolicyError when even the highest price spends more."""
        if not np.isfinite(budget) or budget < 0:
            raise ConfigError(f"budget must be a finite amount >= 0, got {budget!r}")
        b = self.base
        if b.cost <= budget:
            return Allocation(0.0, np.zeros(0, np.int64), np.zeros(0), b.cost, b.value, budget, b.cost, b.value)
        count, dcost, dvalue = self.histogram(EDGES)
        floor = b.cost + dcost.sum()
        if floor > budget * (1 + 1e-12) + 1e-9:
            raise PolicyError(
                f"budget {budget:g} is below the spend that no price can avoid ({floor:g}: holdout, exploration "
                "and fallback arms); raise the budget or lower the exploration share"
            )
        lam_c, spend, value = self._crossing(budget, EDGES, count, dcost, dvalue)
        price = lam_c * (1 + REL_GAP / 2) if lam_c > 0 else self._above_zero(count)
        rows, prices, fill_cost, fill_value = self._fill(price, budget - spend, EDGES, count)
        return Allocation(price, rows, prices, spend + fill_cost, value + fill_value, budget, spend, value)

    def _crossing(
        self, budget: float, edges: np.ndarray, count: np.ndarray, dcost: np.ndarray, dvalue: np.ndarray
    ) -> tuple[float, float, float]:
        """The last price of the first cluster of steps after which spend <= budget; spend and value there."""
        s0, v0 = self.base.cost, self.base.value
        while True:
            fits = np.flatnonzero(s0 + np.cumsum(dcost) <= budget)
            k = int(fits[0]) if fits.size else int(np.flatnonzero(count)[-1])
            s0 += dcost[:k].sum()
            v0 += dvalue[:k].sum()
            lo, hi = edges[k], edges[k + 1]
            if count[k] <= self.max_window or not np.isfinite(hi) or hi <= lo * (1 + 1e-6):
                break
            edges = np.linspace(lo, hi, 4097)
            count, dcost, dvalue = self.histogram(edges)
        bp = self._cluster_window(lo, hi)
        order = np.argsort(bp.lam, kind="stable")
        lam, dc, dv = bp.lam[order], bp.d_cost[order], bp.d_value[order]
        last = np.concatenate([lam[1:] > lam[:-1] * (1 + REL_GAP), [True]])  # ends of clusters
        spend_after = s0 + np.cumsum(dc)
        ok = np.flatnonzero(last & (spend_after <= budget))
        j = int(ok[0]) if ok.size else lam.size - 1
        return float(lam[j]), float(spend_after[j]), float(v0 + dv[: j + 1].sum())

    def _cluster_window(self, lo: float, hi: float) -> Breakpoints:
        """The window [lo, hi) extended upwards until its top cluster (gaps <= REL_GAP) is complete."""
        bp = self.window(lo, hi)
        while len(bp):
            reach = np.nextafter(float(bp.lam.max()) * (1 + REL_GAP), np.inf)
            if reach <= hi:
                break
            more = self.window(hi, reach)
            if not len(more):
                break
            bp, hi = Breakpoints.concat([bp, more]), reach
        return bp

    def _above_zero(self, count: np.ndarray) -> float:
        """A price between 0 and the smallest positive breakpoint (its half; 1 when there is none)."""
        for k in np.flatnonzero(count):
            part = self.window(max(float(EDGES[k]), np.nextafter(0.0, 1.0)), float(EDGES[k + 1]))
            if len(part):
                return float(part.lam.min()) / 2
        return 1.0

    def _fill(
        self, price: float, left: float, edges: np.ndarray, count: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Undo steps below `price`, most profitable per unit of cost first, while they fit in `left`."""
        k = int(np.searchsorted(edges, price, side="right")) - 1
        total, lo = 0, price
        while k >= 0 and total + count[k] <= self.max_window:
            total += int(count[k])
            lo = float(edges[k])
            k -= 1
        cand = self.window(lo, price)
        order = np.lexsort((cand.row, -cand.lam))
        rows, chosen = _greedy(cand.row[order], -cand.d_cost[order], left)
        gain = -cand.d_value[order][chosen]
        cost = -cand.d_cost[order][chosen]
        lam = cand.lam[order][chosen]
        # a customer's own price sits just below its last undone step
        last: dict[int, float] = {}
        for r, lm in zip(rows.tolist(), lam.tolist(), strict=True):
            last[r] = lm
        out_rows = np.array(sorted(last), dtype=np.int64)
        out_prices = np.array([last[r] * (1 - REL_GAP / 2) for r in out_rows.tolist()])
        return out_rows, out_prices, float(cost.sum()), float(gain.sum())


def _greedy(rows: np.ndarray, costs: np.ndarray, left: float) -> tuple[np.ndarray, np.ndarray]:
    """Accept steps in the given order while they fit; a customer whose step is skipped takes no later one.

    Returns the accepted rows and a boolean mask over the input.
    """
    chosen = np.zeros(rows.size, dtype=bool)
    blocked: set[int] = set()
    eps = 1e-12 * max(1.0, abs(left))
    for i, (r, cst) in enumerate(zip(rows.tolist(), costs.tolist(), strict=True)):
        if r in blocked:
            continue
        if cst <= left - eps:
            chosen[i] = True
            left -= cst
        else:
            blocked.add(r)
    return rows[chosen], chosen


class SpillStore:
    """Breakpoints of a streamed population in files (one per chunk), with the queries of `PriceSolver`.

    Use as a context manager; the files are removed on exit.
    """

    def __init__(self, directory: str | Path | None = None):
        self._own = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="offerlift-budget-")) if directory is None else Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self.base = Base()

    def add(self, bp: Breakpoints, base: Base) -> None:
        """Append one chunk's breakpoints and its totals at price 0."""
        self.base = self.base + Base(base.cost, base.value, len(bp))
        if len(bp):
            path = self.directory / f"bp{len(self.files):06d}.npz"
            np.savez(path, row=bp.row, lam=bp.lam, d_cost=bp.d_cost, d_value=bp.d_value)
            self.files.append(path)

    def _parts(self) -> Any:
        for path in self.files:
            with np.load(path) as z:
                yield Breakpoints(z["row"], z["lam"], z["d_cost"], z["d_value"])

    def histogram(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Summed histogram over all chunks."""
        nb = len(edges) - 1
        acc = [np.zeros(nb, np.int64), np.zeros(nb), np.zeros(nb)]
        for part in self._parts():
            for a, h in zip(acc, part.histogram(edges), strict=True):
                a += h
        return acc[0], acc[1], acc[2]

    def window(self, lo: float, hi: float) -> Breakpoints:
        """Breakpoints of every chunk with ``lo <= lam < hi``."""
        return Breakpoints.concat([p.window(lo, hi) for p in self._parts()])

    def solver(self, max_window: int = 2_000_000) -> PriceSolver:
        """A PriceSolver over the stored breakpoints."""
        return PriceSolver(self.base, self.histogram, self.window, max_window)

    def __enter__(self) -> SpillStore:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._own:
            shutil.rmtree(self.directory, ignore_errors=True)


def chunk_breakpoints(
    incr: np.ndarray,
    cost: np.ndarray,
    allowed: np.ndarray,
    holdout_u: np.ndarray,
    u: np.ndarray,
    policy: PolicyConfig,
    start: int = 0,
) -> tuple[Breakpoints, Base]:
    """Breakpoints and price-0 totals of one chunk, with the same draws and policy as its decisions."""
    d0 = decide(incr, cost, allowed, holdout_u, u, policy, 0.0)
    exploit = d0.group == "exploit"
    bp = breakpoints(incr, cost, allowed, d0.arm, exploit, policy.fallback_arm, start)
    return bp, Base(float(d0.cost.sum()), float(d0.incr.sum()), len(bp))


def allocate(
    incr: np.ndarray,
    cost: np.ndarray,
    allowed: np.ndarray,
    budget: float,
    policy: PolicyConfig | None = None,
    holdout_u: np.ndarray | None = None,
    u: np.ndarray | None = None,
) -> tuple[Allocation, np.ndarray]:
    """In-memory allocation of a budget: the Allocation and the chosen arm of every row.

    Without a policy every customer is exploited (no holdout, no exploration); draws default to ones.
    """
    n = incr.shape[0]
    policy = policy or PolicyConfig(holdout=0.0, explore=0.0)
    holdout_u = np.ones(n) if holdout_u is None else holdout_u
    u = np.ones((n, 2)) if u is None else u
    bp, base = chunk_breakpoints(incr, cost, allowed, holdout_u, u, policy)
    alloc = PriceSolver(base, bp.histogram, bp.window).solve(budget)
    d = decide(incr, cost, allowed, holdout_u, u, policy, alloc.prices(0, n)[:, None])
    return alloc, d.arm


def spend_curve(base: Base, histogram: Histogram, edges: np.ndarray = EDGES) -> pd.DataFrame:
    """Expected incremental profit against expected spend as the price rises (one row per non-empty bin).

    Columns: price (upper edge of the bin), spend, incremental_profit; the first row is price 0.
    """
    count, dcost, dvalue = histogram(edges)
    keep = count > 0
    spend = base.cost + np.cumsum(dcost)
    value = base.value + np.cumsum(dvalue)
    return pd.DataFrame(
        {
            "price": np.concatenate([[0.0], edges[1:][keep]]),
            "spend": np.concatenate([[base.cost], spend[keep]]),
            "incremental_profit": np.concatenate([[base.value], value[keep]]),
        }
    )


def plot_spend_curve(curve: pd.DataFrame, allocation: Allocation | None = None, ax: Any = None) -> Any:
    """Matplotlib figure of incremental profit against spend, with the budget and the allocation marked.

    Built without pyplot (no global figure state; works on any backend); pass `ax` to draw into your own axes."""
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
    else:
        fig = ax.figure
    c = curve.sort_values("spend")
    ax.step(c["spend"], c["incremental_profit"], where="post", label="price sweep")
    if allocation is not None:
        ax.axvline(allocation.budget, color="grey", linestyle="--", label="budget")
        ax.plot(
            [allocation.spend], [allocation.value], "o", color="C3", label=f"allocation (price {allocation.price:.3g})"
        )
    ax.set_xlabel("expected spend")
    ax.set_ylabel("expected incremental profit")
    ax.set_title("Incremental profit against spend")
    ax.legend(loc="lower right")
    return fig
