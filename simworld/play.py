"""Sampling what customers do after a decision, consistently with the truth, and writing it as events.

Given the response components of each decision's customer (see `offerlift.simworld.truth`) and the chosen arm,
one draw per decision: viewed ~ Bern(E); bought anyway ~ Bern(p0); a viewer who would not have bought buys
(and redeems) with P = lift; a viewer who buys anyway redeems with P = q * f; visit = buy, or a browse (more
likely after viewing). Spend: B x noise for an ordinary purchase, a value with mean M = max(B, min_spend) and
at least the minimum spend for a redeemed one (noise lognormal with mean 1). The means are those of the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from offerlift.simworld.truth import ArmTable, Parts

EVENT_COLUMNS = ("customer_id", "time", "event", "amount", "offer_id", "reward", "channel")


@dataclass(frozen=True)
class Draws:
    """One sampled outcome per decision (arrays of length n)."""

    delivered: np.ndarray
    viewed: np.ndarray
    visit: np.ndarray
    buy: np.ndarray
    spend: np.ndarray
    redeem: np.ndarray
    view_delay: np.ndarray
    buy_delay: np.ndarray


def _mean_one_noise(rng: np.random.Generator, sd: float, n: int) -> np.ndarray:
    return np.exp(sd * rng.standard_normal(n) - 0.5 * sd * sd)


def sample_draws(
    parts: Parts,
    arms: ArmTable,
    arm_idx: np.ndarray,
    browse: np.ndarray,
    click_rate: float,
    spend_sd: float,
    window: float,
    rng: np.random.Generator,
) -> Draws:
    """Sample one outcome per row of `parts` for the chosen arms (`arm_idx`, 0 = control)."""
    n = arm_idx.size
    i = np.arange(n)
    treated = arm_idx > 0
    o = np.where(treated, arms.offer_idx[arm_idx], 0)
    c = np.where(treated, arms.channel_idx[arm_idx], 0)
    expo = np.where(treated, parts.exposure[i, c], 0.0)
    lift = parts.lift[i, o]
    q = parts.redeem_if_base[i, o]
    big_m = parts.spend_if_redeem[i, o].astype(np.float64)
    low = np.minimum(arms.offer_min_spend[o], big_m)
    u = rng.random((5, n))
    viewed = u[0] < expo
    base = u[1] < parts.p0
    incremental = viewed & ~base & (u[2] < lift)
    redeem = (viewed & base & (u[3] < q)) | incremental
    buy = base | incremental
    noise = _mean_one_noise(rng, spend_sd, n)
    basket = parts.basket.astype(np.float64)
    spend = np.where(redeem, low + (big_m - low) * noise, np.where(buy, basket * noise, 0.0))
    visit = buy | (u[4] < browse + (1.0 - browse) * click_rate * viewed)
    view_delay = rng.uniform(0.0, 0.25 * window, n)
    buy_delay = np.where(redeem, view_delay + rng.random(n) * (window - view_delay), rng.random(n) * window)
    delivered = treated & parts.deliverable[i, np.where(treated, c, 0)]
    return Draws(delivered, viewed, visit, buy, spend, redeem, view_delay, buy_delay)


def event_frame(customer_id: np.ndarray, time: np.ndarray, event: str, **cols: object) -> pd.DataFrame:
    n = customer_id.size
    data = {
        "customer_id": customer_id,
        "time": time.astype(float),
        "event": np.full(n, event, dtype=object),
        "amount": np.zeros(n),
        "offer_id": np.full(n, None, dtype=object),
        "reward": np.zeros(n),
        "channel": np.full(n, None, dtype=object),
    }
    data.update(cols)
    return pd.DataFrame(data, columns=list(EVENT_COLUMNS))


def empty_events() -> pd.DataFrame:
    """An events frame with the canonical columns and no rows."""
    return event_frame(np.array([], dtype=object), np.array([], dtype=float), "transaction")


def draws_to_events(
    draws: Draws,
    customer_id: np.ndarray,
    time: np.ndarray,
    arm_idx: np.ndarray,
    offer_ids: np.ndarray,
    channel_ids: np.ndarray,
    redeem_cost: np.ndarray,
    all_transactions: bool = True,
) -> pd.DataFrame:
    """Canonical events of the draws (received, viewed, completed, transaction); unsorted.

    `offer_ids`, `channel_ids` and `redeem_cost` are per arm (index 0 = control). With `all_transactions`
    False only the purchases that redeemed a coupon are written (the pre-period, whose other purchases come
    from the background process).
    """
    d = draws
    got = d.delivered
    seen = got & d.viewed
    tx = d.buy if all_transactions else d.redeem
    red = d.redeem
    received = event_frame(
        customer_id[got],
        time[got],
        "offer_received",
        offer_id=offer_ids[arm_idx[got]],
        channel=channel_ids[arm_idx[got]],
    )
    viewed = event_frame(
        customer_id[seen], time[seen] + d.view_delay[seen], "offer_viewed", offer_id=offer_ids[arm_idx[seen]]
    )
    bought = event_frame(customer_id[tx], time[tx] + d.buy_delay[tx], "transaction", amount=d.spend[tx])
    completed = event_frame(
        customer_id[red],
        time[red] + d.buy_delay[red],
        "offer_completed",
        offer_id=offer_ids[arm_idx[red]],
        reward=redeem_cost[arm_idx[red]].astype(float),
    )
    parts = [received, viewed, bought, completed]
    return pd.concat([p for p in parts if len(p)] or [empty_events()], ignore_index=True)


def sort_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events in time order (transactions before the completion they carry), index reset."""
    rank = events["event"].map({"offer_received": 0, "offer_viewed": 1, "transaction": 2, "offer_completed": 3})
    order = np.lexsort((rank.to_numpy(), events["customer_id"].to_numpy(dtype=str), events["time"].to_numpy()))
    return events.iloc[order].reset_index(drop=True)


def background_transactions(
    customer_id: np.ndarray,
    rate_per_hour: np.ndarray,
    basket: np.ndarray,
    start: float,
    end: float,
    spend_sd: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson purchases in [start, end): (row index, time, amount) arrays (shocks are applied by the caller)."""
    counts = rng.poisson(rate_per_hour * (end - start))
    rows = np.repeat(np.arange(customer_id.size), counts)
    times = rng.uniform(start, end, rows.size)
    amounts = basket[rows].astype(np.float64) * _mean_one_noise(rng, spend_sd, rows.size)
    return rows, times, amounts
