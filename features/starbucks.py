"""The Starbucks rewards-app capstone data as an 11-arm randomized experiment.

Each (member, wave) is one unit, for the 6 offer waves at hours 0, 168, 336, 408, 504 and 576: its arm is the
offer the member received at the wave's hour, or the control arm ``none`` when no offer came then. Arm ids are
readable, ``<offer_type>_<reward>_<difficulty>_<duration days>`` (e.g. ``bogo_10_10_7``); the channel set of an
offer is part of the offer (kept in ``meta["offer_channels"]``), so arms have no Channel.

Outcomes are counted in the window ``[t, t + window_hours)`` after the wave hour t:
``spend`` (sum of transactions), ``transactions`` (count), ``buy`` (any transaction), ``visit`` (any transaction
or any offer view), ``viewed`` (a view of the wave's offer), ``redeem`` (a completion of the wave's offer),
``reward_cost`` (reward paid on those completions); ``time`` = t + window_hours. The control arm has viewed,
redeem and reward_cost 0. When a member got the same offer in an earlier wave too, a view or completion of that
offer in the window is counted for the current wave (the transcript does not say which copy was used).

Features come from :func:`offerlift.features.build.build_features` at the wave hour: only events strictly before it.
Propensities are measured per wave: the share of that wave's units in each arm (the design is ~25% control and
~7.5% for each of the 10 offers). Quirks handled: ``offer id`` vs ``offer_id`` in the value dict, age 118 = unknown.
The transcript is shipped as ``transcript.7z``: it is unpacked into the cache folder once (its sha256 checked),
and the parsed events are cached as Parquet keyed by the source's sha256.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time as clock
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerlift.features.build import EventIndex, build_features, event_indexes
from offerlift.features.catalog import CONTROL_ARM, Arm, Catalog, Offer
from offerlift.features.errors import ConfigError, DataError, DataNotFoundError, SchemaError
from offerlift.features.experiment import Experiment
from offerlift.features.locate import cache_dir, find_dataset, sha256_of

log = logging.getLogger(__name__)

NAME = "starbucks-capstone"
TRANSCRIPT_SHA256 = "a975793c58e206168af7624497c8879c45d84968249947ddc4f2c38ef86a7006"
WAVES = (0.0, 168.0, 336.0, 408.0, 504.0, 576.0)
EVENT_NAMES = {
    "transaction": "transaction",
    "offer received": "offer_received",
    "offer viewed": "offer_viewed",
    "offer completed": "offer_completed",
}
PARSER_VERSION = 1
TABLE = "transcript.json"
ROWS_NOTE = "rows are 0-based line numbers of transcript.json"


def offer_key(value: dict[str, Any]) -> str | None:
    """The offer id of a transcript value dict, whichever spelling it uses (``offer id`` or ``offer_id``)."""
    a, b = value.get("offer id"), value.get("offer_id")
    if a is not None and b is not None and a != b:
        raise DataError(f"value dict names two different offers: {value!r}")
    return a if a is not None else b


def locate_starbucks(path: str | Path | None = None) -> Path:
    """The folder with portfolio.json, profile.json and transcript.json or transcript.7z."""
    folder = find_dataset(NAME, ["portfolio.json", "profile.json"], explicit=path, download=None)
    if not (folder / "transcript.json").exists() and not (folder / "transcript.7z").exists():
        raise DataNotFoundError(NAME, [f"{folder} (has portfolio and profile but no transcript.json or .7z)"])
    return folder


def _atomic_target(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def transcript_file(folder: Path) -> Path:
    """transcript.json of the folder, or the one unpacked from transcript.7z into the cache (sha256 checked)."""
    if (folder / "transcript.json").exists():
        return folder / "transcript.json"
    archive = folder / "transcript.7z"
    target = cache_dir() / NAME / f"transcript-{sha256_of(archive)[:16]}.json"
    if target.exists() and sha256_of(target) == TRANSCRIPT_SHA256:
        return target
    import py7zr

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            with py7zr.SevenZipFile(archive) as z:
                z.extract(path=tmp, targets=["transcript.json"])
        except (py7zr.exceptions.Bad7zFile, OSError) as exc:
            raise DataError(f"cannot unpack {archive}: {exc}") from exc
        unpacked = Path(tmp) / "transcript.json"
        if not unpacked.exists():
            raise DataError(f"{archive} holds no transcript.json")
        digest = sha256_of(unpacked)
        if digest != TRANSCRIPT_SHA256:
            raise DataError(f"{archive}: transcript.json has sha256 {digest}, expected {TRANSCRIPT_SHA256}")
        os.replace(unpacked, target)
    log.info("unpacked %s into %s", archive, target)
    return target


def _bad(table: str, column: str, problem: str, mask: np.ndarray, rows: np.ndarray) -> None:
    if mask.any():
        raise SchemaError(table, column, f"{problem} ({ROWS_NOTE})", list(rows[mask][:5]))


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_transcript(path: Path) -> pd.DataFrame:
    """Read transcript.json (JSON lines) into canonical events with the raw offer ids.

    Errors name the column and the 0-based line numbers: DataError for a line that is not JSON, SchemaError
    for a missing or bad person, event, time or value.
    """
    recs: list[dict[str, Any]] = []
    lines: list[int] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {i} (0-based) is not JSON: {exc}") from exc
            if not isinstance(rec, dict):
                raise SchemaError(TABLE, None, f"expected a JSON object ({ROWS_NOTE})", [i])
            recs.append(rec)
            lines.append(i)
    rows = np.asarray(lines, dtype=np.int64)
    person = [r.get("person") for r in recs]
    _bad(TABLE, "person", "missing or not text", np.array([not isinstance(p, str) for p in person], bool), rows)
    raw_event = [r.get("event") for r in recs]
    event = np.array([EVENT_NAMES.get(e) if isinstance(e, str) else None for e in raw_event], dtype=object)
    _bad(TABLE, "event", f"missing or unknown event; expected one of {list(EVENT_NAMES)}", pd.isna(event), rows)
    t = [r.get("time") for r in recs]
    ok = np.array([_is_number(v) and v >= 0 for v in t], dtype=bool)
    _bad(TABLE, "time", "missing, not a number or negative", ~ok, rows)
    values = [r.get("value") for r in recs]
    _bad(TABLE, "value", "missing or not an object", np.array([not isinstance(v, dict) for v in values]), rows)
    try:
        offer = np.array([offer_key(v) for v in values], dtype=object)
    except DataError as exc:
        raise SchemaError(TABLE, "value.offer id", str(exc)) from None
    amount = np.array([v.get("amount") for v in values], dtype=object)
    reward = np.array([v.get("reward") for v in values], dtype=object)
    is_tx, is_done = event == "transaction", event == "offer_completed"
    _bad(TABLE, "value.offer id", "offer event without an offer id", ~is_tx & pd.isna(offer), rows)
    bad_amount = is_tx & ~np.array([_is_number(a) and a >= 0 for a in amount], dtype=bool)
    _bad(TABLE, "value.amount", "transaction without a non-negative amount", bad_amount, rows)
    bad_reward = is_done & ~np.array([_is_number(r) and r >= 0 for r in reward], dtype=bool)
    _bad(TABLE, "value.reward", "completion without a non-negative reward", bad_reward, rows)
    return pd.DataFrame(
        {
            "customer_id": np.asarray(person, dtype=object),
            "time": np.asarray(t, dtype=float),
            "event": event,
            "amount": np.where(is_tx, amount, 0.0).astype(float),
            "offer_id": np.where(is_tx, None, offer),
            "reward": np.where(is_done, reward, 0.0).astype(float),
            "channel": None,
        },
        index=pd.Index(rows, name="line"),
    )


def read_transcript(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Parsed transcript events, from the Parquet cache when the source's sha256 was parsed before."""
    source = folder / "transcript.json"
    if not source.exists():
        source = folder / "transcript.7z"
    digest = sha256_of(source)
    cached = cache_dir() / NAME / f"events-{digest[:16]}-v{PARSER_VERSION}.parquet"
    info = {"transcript_source": str(source), "transcript_source_sha256": digest, "events_cache": str(cached)}
    if cached.exists():
        try:
            return pd.read_parquet(cached), info
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache %s: %s", cached, exc)
    json_file = transcript_file(folder)
    info["transcript_json_sha256"] = sha256_of(json_file)
    if info["transcript_json_sha256"] != TRANSCRIPT_SHA256:
        log.warning("%s is not the published transcript (sha256 %s)", json_file, info["transcript_json_sha256"])
    events = parse_transcript(json_file)
    tmp = _atomic_target(cached)
    try:
        events.to_parquet(tmp, index=True)
        os.replace(tmp, cached)
    except (OSError, ValueError) as exc:
        log.warning("could not cache parsed transcript at %s: %s", cached, exc)
        tmp.unlink(missing_ok=True)
    return events, info


def _num(x: float) -> str:
    return f"{x:g}"


def read_portfolio(path: Path) -> tuple[Catalog, dict[str, str], dict[str, list[str]]]:
    """The catalog (control first, then offers by id), raw offer id -> arm id, and each arm's channel set."""
    df = pd.read_json(path, lines=True)
    for col in ("id", "offer_type", "reward", "difficulty", "duration", "channels"):
        if col not in df.columns:
            raise SchemaError("portfolio.json", col, f"missing column; the file has {list(df.columns)}")
        bad = df[col].isna().to_numpy()
        if bad.any():
            raise SchemaError("portfolio.json", col, "missing values", list(df.index[bad]))
    ids = [f"{r.offer_type}_{_num(r.reward)}_{_num(r.difficulty)}_{_num(r.duration)}" for r in df.itertuples()]
    ids = [a if ids.count(a) == 1 else f"{a}_{raw[:6]}" for a, raw in zip(ids, df["id"], strict=True)]
    offers = [
        Offer(
            id=a,
            coupon_value=float(r.reward),
            min_spend=float(r.difficulty),
            days_valid=float(r.duration),
            redeem_cost=float(r.reward),
            kind=str(r.offer_type),
        )
        for a, r in zip(ids, df.itertuples(), strict=True)
    ]
    offers.sort(key=lambda o: o.id)
    catalog = Catalog("starbucks", (Arm(CONTROL_ARM), *(Arm(o.id, o) for o in offers)), tuple(offers))
    channels = {a: sorted(c) for a, c in zip(ids, df["channels"], strict=True)}
    return catalog, dict(zip(df["id"].astype(str), ids, strict=True)), channels


def read_profile(path: Path) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Customers: id, signup_time (hours, from an assumed epoch), age (118 -> NaN), income, gender."""
    df = pd.read_json(path, lines=True, dtype={"id": str, "became_member_on": str})
    for col in ("id", "age", "income", "gender", "became_member_on"):
        if col not in df.columns:
            raise SchemaError("profile.json", col, f"missing column; the file has {list(df.columns)}")
    signup = pd.to_datetime(df["became_member_on"].astype(str), format="%Y%m%d", errors="coerce")
    bad = signup.isna().to_numpy()
    if bad.any():
        raise SchemaError("profile.json", "became_member_on", "not a YYYYMMDD date", list(df.index[bad]))
    epoch = signup.max().normalize() + pd.Timedelta(days=1)
    age = pd.to_numeric(df["age"], errors="coerce").astype(float)
    customers = pd.DataFrame(
        {
            "customer_id": df["id"].astype(str).to_numpy(dtype=object),
            "signup_time": ((signup - epoch) / pd.Timedelta(hours=1)).to_numpy(dtype=float),
            "age": age.where(age != 118.0).to_numpy(),
            "income": pd.to_numeric(df["income"], errors="coerce").astype(float).to_numpy(),
            "gender": pd.Categorical(df["gender"].to_numpy(dtype=object)),
        }
    )
    return customers, epoch


def _link_events(events: pd.DataFrame, offer_ids: dict[str, str], customers: pd.DataFrame) -> pd.DataFrame:
    rows = events.index.to_numpy()
    is_offer = events["offer_id"].notna().to_numpy()
    mapped = events["offer_id"].map(offer_ids)
    _bad(TABLE, "value.offer id", "offer id not in portfolio.json", is_offer & mapped.isna().to_numpy(), rows)
    _bad(
        TABLE,
        "person",
        "member not in profile.json",
        ~events["customer_id"].isin(customers["customer_id"]).to_numpy(),
        rows,
    )
    return events.assign(offer_id=mapped.where(is_offer, None))


def _units(events: pd.DataFrame, customers: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per (member, wave) with its arm and propensity; units with two offers at a wave are left out."""
    rec = events[events["event"] == "offer_received"]
    at_wave = rec["time"].isin(WAVES).to_numpy()
    n_per = rec[at_wave].groupby(["customer_id", "time"]).size()
    offer = rec[at_wave].drop_duplicates(["customer_id", "time"]).set_index(["customer_id", "time"])["offer_id"]
    ids = customers["customer_id"].to_numpy(dtype=object)
    grid = pd.MultiIndex.from_product([WAVES, ids], names=["time", "customer_id"]).swaplevel()
    units = pd.DataFrame(
        {
            "customer_id": grid.get_level_values("customer_id"),
            "time": grid.get_level_values("time").astype(float),
            "wave": np.repeat(np.arange(len(WAVES)), len(ids)),
            "arm": offer.reindex(grid).fillna(CONTROL_ARM).to_numpy(dtype=object),
        }
    )
    double = n_per.reindex(grid).fillna(0).to_numpy() > 1
    excluded = {"two_offers_at_one_wave": int(double.sum()), "offers_received_outside_waves": int((~at_wave).sum())}
    units = units.loc[~double].reset_index(drop=True)
    units.insert(0, "unit_id", [f"{c}@{int(t)}" for c, t in zip(units["customer_id"], units["time"], strict=True)])
    share = units.groupby(["wave", "arm"])["unit_id"].transform("size") / units.groupby("wave")["unit_id"].transform(
        "size"
    )
    units["propensity"] = share.to_numpy(dtype=float)
    units["group"] = "experiment"
    return units, excluded


def _outcomes(events: pd.DataFrame, units: pd.DataFrame, idx: dict[str, EventIndex], window: float) -> pd.DataFrame:
    """Window outcomes per unit in [t, t + window)."""
    cust = units["customer_id"].to_numpy(dtype=object)
    lo = units["time"].to_numpy(dtype=float)
    hi = lo + window
    tx, views = idx["transaction"], idx["offer_viewed"]
    c_tx = tx.codes(cust)
    n_tx = tx.count_between(c_tx, lo, hi)
    n_views = views.count_between(views.codes(cust), lo, hi)
    key = cust + "|" + units["arm"].to_numpy(dtype=object)
    by_offer = {}
    for kind in ("offer_viewed", "offer_completed"):
        sub = events[events["event"] == kind]
        entity = sub["customer_id"].to_numpy(dtype=object) + "|" + sub["offer_id"].to_numpy(dtype=object)
        by_offer[kind] = EventIndex(entity, sub["time"].to_numpy(float), {"reward": sub["reward"].to_numpy(float)})
    seen, done = by_offer["offer_viewed"], by_offer["offer_completed"]
    treated = units["arm"].to_numpy() != CONTROL_ARM
    n_done = np.where(treated, done.count_between(done.codes(key), lo, hi), 0)
    return pd.DataFrame(
        {
            "unit_id": units["unit_id"].to_numpy(),
            "customer_id": cust,
            "time": hi,
            "visit": ((n_tx > 0) | (n_views > 0)).astype(np.int64),
            "buy": (n_tx > 0).astype(np.int64),
            "spend": tx.sum_between("amount", c_tx, lo, hi),
            "redeem": (n_done > 0).astype(np.int64),
            "transactions": n_tx,
            "viewed": (treated & (seen.count_between(seen.codes(key), lo, hi) > 0)).astype(np.int64),
            "reward_cost": np.where(treated, done.sum_between("reward", done.codes(key), lo, hi), 0.0),
        }
    )


def load_starbucks_events(path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The canonical events (offer ids are arm ids) and customers of the Starbucks data, e.g. for a feature store."""
    folder = locate_starbucks(path)
    _, offer_ids, _ = read_portfolio(folder / "portfolio.json")
    customers, _ = read_profile(folder / "profile.json")
    return _link_events(read_transcript(folder)[0], offer_ids, customers), customers


def load_starbucks(path: str | Path | None = None, window_hours: float = 72.0) -> Experiment:
    """Load the Starbucks capstone as an 11-arm experiment (102,000 units); see the module doc for definitions.

    `path`: the data folder (or a file in it); otherwise $OFFERLIFT_DATA_DIR, then ../shared/data.
    """
    if not (isinstance(window_hours, int | float) and math.isfinite(window_hours) and window_hours > 0):
        raise ConfigError(f"window_hours must be a positive number of hours, got {window_hours!r}")
    start = clock.perf_counter()
    folder = locate_starbucks(path)
    catalog, offer_ids, channels = read_portfolio(folder / "portfolio.json")
    customers, epoch = read_profile(folder / "profile.json")
    raw, info = read_transcript(folder)
    events = _link_events(raw, offer_ids, customers)
    units, excluded = _units(events, customers)
    idx = event_indexes(events)
    outcomes = _outcomes(events, units, idx, float(window_hours))
    features = build_features(events, customers, units[["unit_id", "customer_id", "time"]], indexes=idx)
    meta = {
        "source": str(folder),
        **info,
        "window_hours": float(window_hours),
        "waves": list(WAVES),
        "offer_channels": channels,
        "offer_ids": offer_ids,
        "epoch": f"{epoch.date()} (assumed: the day after the last became_member_on)",
        "propensity": "measured per wave: share of the wave's units in the arm",
    }
    exp = Experiment(
        name="starbucks",
        catalog=catalog,
        customers=customers,
        assignments=units[["unit_id", "customer_id", "time", "arm", "propensity", "group", "wave"]],
        outcomes=outcomes,
        features=features,
        main_outcome="spend",
        excluded=excluded,
        meta=meta,
    ).validate()
    exp.meta["load_seconds"] = round(clock.perf_counter() - start, 3)
    log.info("loaded starbucks: %d units in %.2fs from %s", len(units), exp.meta["load_seconds"], folder)
    return exp
