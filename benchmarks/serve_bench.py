"""Load benchmark of the decision service (`POST /decide`, 20 arms, decision log on), loopback only, bounded in time.

    .venv/bin/python benchmarks/serve_bench.py            # full run (about 5 minutes), writes results/serve.md
    .venv/bin/python benchmarks/serve_bench.py --quick    # shorter phases, no ablations
    .venv/bin/python benchmarks/serve_bench.py --no-postgres   # without the PostgreSQL variant

What it measures, in one run on one machine:
- the floors: the bare in-process model call for one customer and 20 arms (+ control), and the in-process
  `Decider.decide` (features, rules, policy, pacing, decision log commit), both with p50/p99;
- the real service (``offerlift serve``'s command, 2 workers) under an open-loop load: requests leave on a fixed
  schedule whatever the answers do, and each latency counts from its scheduled time (no coordinated omission):
  p50/p99 at 200 requests/s, then rising rates until p99 passes 50 ms or requests fail or fall behind;
- the same with SQLite ``synchronous=FULL`` instead of NORMAL, with the decision log on a real PostgreSQL server
  (a throwaway cluster on a free loopback port, on the same 2 cores; every decision takes ``LOCK TABLE budgets IN
  EXCLUSIVE MODE``), as ratios to SQLite in the same run, and ablations at the fixed rate: without
  gc.freeze, without TCP_NODELAY, with the handler inline on the event loop instead of in a thread, with
  BentoML's OpenTelemetry middleware on the API routes, with SQLite's own WAL checkpoints (inside requests).

The model is a realistic S-learner: spend 300 trees x 63 leaves and redeem 100 trees x 31 leaves on 33 features,
scored on 21 stacked rows per request. Everything lives in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before LightGBM loads OpenMP: one thread per process

import argparse
import asyncio
import datetime as dt
import json
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from offerlift.features.store import OnlineStore  # noqa: E402
from offerlift.models.registry import CHAMPION, MODEL_NAME, activate, resolve_tracking_uri, set_alias  # noqa: E402
from offerlift.models.scoring import FORMAT, ArmScorer, FeatureSpec, stack_arms  # noqa: E402
from offerlift.serving.cli_serve import command, environment  # noqa: E402
from offerlift.serving.decider import Decider  # noqa: E402
from offerlift.serving.settings import load_settings  # noqa: E402
from offerlift.simworld.config import load_world_spec  # noqa: E402

KEY = "bench-key-0123456789"
N_CUSTOMERS = 20_000
N_NUMERIC = 31
CITIES = ("shanghai", "beijing", "guangzhou", "chengdu", "wuhan")
TIERS = ("bronze", "silver", "gold", "platinum")
CHANNELS = ("sms", "push", "wechat", "email")
P99_LIMIT_MS = 50.0
PG_VARIANT = "PostgreSQL decision log"
PG_FLOOR = "Decider.decide, PostgreSQL"
SQLITE_VARIANT = "defaults (synchronous=NORMAL)"


# -- the model and the data ----------------------------------------------------------------------------------


def customers(n: int, seed: int = 0) -> pd.DataFrame:
    """Store features: 31 numbers, city, tier, consent and reach flags (index = customer_id)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, N_NUMERIC)), columns=[f"f{j}" for j in range(N_NUMERIC)])
    frame["city"] = pd.Categorical(rng.choice(CITIES, n), categories=CITIES)
    frame["tier"] = pd.Categorical(rng.choice(TIERS, n), categories=TIERS)
    for ch in CHANNELS:
        frame[f"consent_{ch}"] = (rng.random(n) < 0.85).astype(float)
        frame[f"reach_{ch}"] = (rng.random(n) < 0.9).astype(float)
    frame.index = pd.Index([f"c{i:06d}" for i in range(n)], name="customer_id")
    return frame


def s_learner_spec(seed: int = 0, rows_per_arm: int = 800) -> dict[str, Any]:
    """A 21-arm S-learner spec (spend: 300 trees x 63 leaves; redeem: 100 x 31) on 33 features."""
    cat = load_world_spec()[0]
    arms = [cat.arm(a) for a in cat.arm_ids]
    table = np.array(
        [[a.coupon_value, a.contact_cost] + [float(a.channel is not None and a.channel.id == c) for c in CHANNELS]
         for a in arms]
    )  # fmt: skip
    frame = customers(rows_per_arm, seed + 1)
    X = frame[[f"f{j}" for j in range(N_NUMERIC)] + ["city", "tier"]]
    fspec = FeatureSpec.from_frame(X)
    Xs = stack_arms(fspec.encode(X), table)
    rng = np.random.default_rng(seed)
    arm = np.repeat(np.arange(len(arms)), rows_per_arm)
    value = table[arm, 0]
    spend = 40 + 8 * np.tanh(Xs[:, 0]) + value * (0.3 + 0.5 * (Xs[:, 1] > 0)) + rng.normal(0, 5, len(arm))
    redeem = (rng.random(len(arm)) < np.where(arm > 0, 0.2 + 0.1 * (Xs[:, 2] > 0), 0.0)).astype(float)
    params = {"verbose": -1, "num_threads": 2, "min_data_in_leaf": 20, "learning_rate": 0.05}
    b_spend = lgb.train({**params, "objective": "regression", "num_leaves": 63}, lgb.Dataset(Xs, spend), 300)
    b_redeem = lgb.train({**params, "objective": "regression", "num_leaves": 31}, lgb.Dataset(Xs, redeem), 100)
    outcome = {"kind": "s", "arm_table": table.tolist()}
    return {
        "format": FORMAT,
        "arms": cat.arm_ids,
        "catalog": cat.to_dict(),
        "feature_spec": fspec.to_dict(),
        "outcomes": {
            "spend": {**outcome, "boosters": [b_spend.model_to_string()]},
            "redeem": {**outcome, "boosters": [b_redeem.model_to_string()]},
        },
        "value_outcome": "spend",
        "metadata": {"bench": True},
    }


def register(spec: dict[str, Any], root: Path) -> str:
    """Log the spec in a temporary MLflow store, make it the champion; returns the tracking URI."""
    import mlflow

    from offerlift.models.model_io import log_scorer_model

    reg = resolve_tracking_uri(root=root / "mlruns")
    activate(reg)
    with mlflow.start_run():
        info = log_scorer_model(spec, root / "model", MODEL_NAME)
    set_alias(reg, CHAMPION, str(info.registered_model_version))
    return reg.tracking_uri


# -- floors --------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, in the values' unit."""
    return float(np.quantile(np.asarray(values), q)) if values else float("nan")


def time_calls(fn: Any, n: int) -> list[float]:
    """Milliseconds of n calls of fn(i)."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def floors(
    settings_data: dict[str, Any], store: pd.DataFrame, n: int, pg_url: str | None = None
) -> dict[str, dict[str, float]]:
    """p50/p99 of the bare model call and of the in-process Decider.decide (same settings as the service), also
    with the decision log on PostgreSQL when `pg_url` is given."""
    settings = load_settings(overrides=settings_data, environ={"OFFERLIFT_API_KEY": KEY})
    decider = Decider(settings)
    champ = decider.load_champion()
    decider.start_background()  # as in the service: champion polling and the WAL checkpointer
    scorer: ArmScorer = champ.scorer
    ids = list(store.index)
    records = [OnlineStore(settings.online_store_path).get(ids[i]) for i in range(200)]
    rows = [scorer.features.encode_records([r]) for r in records]
    time_calls(lambda i: scorer.predict(rows[i % 200]), 200)  # warm up
    out = {"model call (21 arms)": summary(time_calls(lambda i: scorer.predict(rows[i % 200]), n))}
    out["encode + model call"] = summary(
        time_calls(lambda i: scorer.predict(scorer.features.encode_records([records[i % 200]])), n)
    )
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(ids), n)
    ctx = {"city": "shanghai"}
    out["Decider.decide (in-process)"] = summary(time_calls(lambda i: decider.decide(ids[picks[i]], ctx), n))
    decider.close()
    full_data = {**settings_data, "sqlite_synchronous": "FULL"}
    full_data["decision_log_url"] = settings_data["decision_log_url"].replace(".db", "-full.db")
    full = Decider(load_settings(overrides=full_data, environ={"OFFERLIFT_API_KEY": KEY}))
    full.load_champion()
    full.start_background()
    m = n // 3
    out["Decider.decide, synchronous=FULL"] = summary(time_calls(lambda i: full.decide(ids[picks[i]], ctx), m))
    full.close()
    if pg_url is not None:
        pg = Decider(
            load_settings(overrides={**settings_data, "decision_log_url": pg_url}, environ={"OFFERLIFT_API_KEY": KEY})
        )
        pg.load_champion()
        pg.start_background()
        time_calls(lambda i: pg.decide(ids[picks[i]], ctx), 100)  # warm up the connection pool
        out[PG_FLOOR] = summary(time_calls(lambda i: pg.decide(ids[picks[i]], ctx), m))
        pg.close()
    return out


def summary(ms: list[float]) -> dict[str, float]:
    """p50, p99 and mean of a list of milliseconds."""
    return {"p50": pct(ms, 0.5), "p99": pct(ms, 0.99), "mean": statistics.fmean(ms), "n": len(ms)}


# -- the open-loop load generator ----------------------------------------------------------------------------


@dataclass
class Phase:
    """Results of one constant-rate phase."""

    rate: float
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    wall: float = 0.0

    def row(self) -> dict[str, float]:
        """The phase as numbers: offered and achieved rate, p50/p99/max in ms, failures."""
        n = int(self.rate * self.seconds)
        ok = self.statuses.get(200, 0)
        return {
            "offered": self.rate,
            "achieved": ok / self.wall if self.wall else 0.0,
            "p50": pct(self.latencies, 0.5),
            "p99": pct(self.latencies, 0.99),
            "max": max(self.latencies) if self.latencies else float("nan"),
            "failed": n - ok,
        }

    def sustained(self) -> bool:
        """p99 under the limit, nothing failed, and the answers kept up with the schedule."""
        r = self.row()
        return r["failed"] == 0 and r["p99"] < P99_LIMIT_MS and r["achieved"] >= 0.97 * self.rate


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def run_phase(port: int, bodies: list[bytes], rate: float, seconds: float, max_conns: int = 64) -> Phase:
    """Send ``rate * seconds`` requests on a fixed schedule over keep-alive connections; latency from schedule."""
    phase = Phase(rate, seconds)
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    slots = asyncio.Semaphore(max_conns)
    head = f"POST /decide HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
    head += "Content-Type: application/json\r\nContent-Length: "

    async def one(body: bytes, scheduled: float) -> None:
        async with slots:
            conn = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
            try:
                conn[1].write(f"{head}{len(body)}\r\n\r\n".encode() + body)
                status = await asyncio.wait_for(_read_response(conn[0]), 30)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                phase.errors += 1
                conn[1].close()
                return
            phase.latencies.append((loop.time() - scheduled) * 1e3)
            phase.statuses[status] = phase.statuses.get(status, 0) + 1
            idle.append(conn)

    n = int(rate * seconds)
    start = loop.time() + 0.05
    tasks = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(bodies[i % len(bodies)], scheduled)))
    await asyncio.gather(*tasks)
    phase.wall = loop.time() - start
    for _, writer in idle:
        writer.close()
    return phase


# -- the service ---------------------------------------------------------------------------------------------


class Service:
    """The service started with the same command and environment as `offerlift serve`."""

    def __init__(self, settings_data: dict[str, Any], port: int, log: Path):
        env = {**os.environ, "OFFERLIFT_API_KEY": KEY}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.settings = load_settings(overrides={**settings_data, "port": port}, environ=env)
        self.port, self.log = port, log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                command(self.settings),
                cwd=REPO,
                env=environment(self.settings, env),
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll /readyz."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("service not ready in time")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the arbiter and its workers."""
        import psutil

        total = 0.0
        for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total

    def stop(self) -> None:
        """SIGTERM the arbiter (it stops its workers, which run in sessions of their own); SIGKILL leftovers."""
        import psutil

        if self.proc.poll() is not None:
            return
        procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        os.kill(self.proc.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            p.kill()
        self.proc.wait(10)


def free_port() -> int:
    """A free loopback port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_services(variants: list[tuple[str, dict[str, Any]]], tmp: Path) -> dict[str, Service]:
    """Start every variant at once (an idle service costs no CPU), each on its own port and decision log."""
    services = {}
    for i, (name, data) in enumerate(variants):
        url = data.get("decision_log_url") or f"sqlite:///{tmp / f'log{i}.db'}"
        services[name] = Service({**data, "decision_log_url": url}, free_port(), tmp / f"v{i}.log")
    for svc in services.values():
        svc.wait_ready()
    return services


def interleaved(services: dict[str, Service], bodies: list[bytes], args: Any) -> dict[str, Any]:
    """The fixed rate in short slices, variant after variant, round after round: every variant sees the same
    background load from the neighbours, so their differences are theirs. Also the CPU time per request."""
    phases = {name: Phase(args.rate, 0.0) for name in services}
    cpu = {name: {"server": 0.0, "client": 0.0} for name in services}
    slice_p99: dict[str, list[float]] = {name: [] for name in services}
    for svc in services.values():
        asyncio.run(run_phase(svc.port, bodies, 100, 2))  # warm-up, discarded
    names = list(services)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            svc = services[name]
            server0, client0 = svc.cpu_seconds(), time.process_time()
            part = asyncio.run(run_phase(svc.port, bodies, args.rate, args.slice_seconds))
            cpu[name]["server"] += svc.cpu_seconds() - server0
            cpu[name]["client"] += time.process_time() - client0
            slice_p99[name].append(part.row()["p99"])
            merged = phases[name]
            merged.seconds += part.seconds
            merged.wall += part.wall
            merged.errors += part.errors
            merged.latencies += part.latencies
            for status, k in part.statuses.items():
                merged.statuses[status] = merged.statuses.get(status, 0) + k
            print(f"[{name}] round {r + 1}: {fmt(part.row())}", flush=True)
    out = {}
    for name, phase in phases.items():
        n = max(1, sum(phase.statuses.values()))
        out[name] = {
            "fixed": {**phase.row(), "slice_p99": statistics.median(slice_p99[name])},
            "cpu": {k: v / n * 1e3 for k, v in cpu[name].items()},
            "ramp": [],
            "best": None,
        }
    return out


def ramp(svc: Service, bodies: list[bytes], args: Any, name: str) -> list[Phase]:
    """Rising rates until one is not sustained (each failing step is tried twice)."""
    phases = []
    for rate in args.rates:
        phase = asyncio.run(run_phase(svc.port, bodies, rate, args.step_seconds))
        print(f"[{name}] {rate:.0f}/s: {fmt(phase.row())}", flush=True)
        if not phase.sustained():  # one more try: a neighbour's burst on the shared cores is not the limit
            phase = asyncio.run(run_phase(svc.port, bodies, rate, args.step_seconds))
            print(f"[{name}] {rate:.0f}/s again: {fmt(phase.row())}", flush=True)
        phases.append(phase)
        if not phase.sustained():
            break
    return phases


def fmt(r: dict[str, float]) -> str:
    """One line of a phase."""
    return (
        f"achieved {r['achieved']:.0f}/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms "
        f"max {r['max']:.1f} ms failed {r['failed']:.0f}"
    )


# -- the report ----------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """CPU, cores, memory, load, versions, date and commit."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    mem = next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    pkgs = ("bentoml", "uvicorn", "starlette", "pydantic", "lightgbm", "numpy", "sqlalchemy", "mlflow")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores, {int(mem) / 2**20:.1f} GiB RAM",
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": ", ".join(f"{p} {version(p)}" for p in pkgs) + f", SQLite {sqlite3.sqlite_version}",
        "commit": commit.stdout.strip(),
        "load": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def report(info: dict[str, str], floor: dict[str, dict[str, float]], runs: dict[str, Any], args: Any) -> str:
    """The results page (markdown)."""
    model = floor["model call (21 arms)"]
    lines = [
        "# Decision service load benchmark",
        "",
        f"`benchmarks/serve_bench.py{' --quick' if args.quick else ''}`, {info['date']}, commit {info['commit']}.",
        f"Machine: {info['cpu']}; {info['os']}; Python {info['python']}.",
        f"Versions: {info['versions']}.",
        f"Load average (1/5/15 min) at the start: {info['load_start']}; at the end: {info['load']}. The machine "
        "is shared with other jobs: absolute times move with their load, the ratios to the floors less so.",
        "",
        "Setup: `POST /decide` over HTTP/1.1 keep-alive on 127.0.0.1, 20 arms + no offer, S-learner champion "
        "(spend 300 trees x 63 leaves, redeem 100 x 31, 33 features), online store of 20,000 customers (5% of "
        "requests are unknown customers), every decision committed to the SQLite decision log (WAL) with its "
        "budget charge before the answer, 2 BentoML workers, OMP_NUM_THREADS=1. Open-loop load from one "
        "asyncio process on the same 2 cores: requests leave on a fixed schedule and latency counts from the "
        "scheduled send time. 'Sustained' = no failed request, p99 < 50 ms and answers keeping up with the "
        "offered rate (a failing step is tried twice). The fixed rate runs in slices of a few seconds, variant "
        "after variant, round after round, so that the neighbours' bursts hit every variant alike; p99 is given "
        "over all slices and for the median slice (a burst next door spoils one slice, not the variant).",
        "",
        "## Floors (in-process, same run)",
        "",
        "| call | p50 ms | p99 ms | mean ms |",
        "|---|---|---|---|",
    ]
    for name, s in floor.items():
        lines.append(f"| {name} | {s['p50']:.3f} | {s['p99']:.3f} | {s['mean']:.3f} |")
    lines += [
        "",
        f"## The service at a fixed {args.rate:.0f} requests/s, and the highest rate sustained",
        "",
        "| variant | p50 ms | p99 ms (all / median slice) | max ms | failed | p50 / model call | p99 / model call "
        "| p50 / in-process decide | CPU ms per request: service + load generator | highest sustained rate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        f = r["fixed"]
        dec = floor[
            "Decider.decide, synchronous=FULL" if "FULL" in name else PG_FLOOR if name == PG_VARIANT
            else "Decider.decide (in-process)"
        ]  # fmt: skip
        lines.append(
            f"| {name} | {f['p50']:.2f} | {f['p99']:.2f} / {f['slice_p99']:.2f} | {f['max']:.1f} | {f['failed']:.0f} | "
            f"{f['p50'] / model['p50']:.1f}x | {f['p99'] / model['p99']:.1f}x | {f['p50'] / dec['p50']:.1f}x | "
            f"{r['cpu']['server']:.2f} + {r['cpu']['client']:.2f} | {_best_text(r)} |"
        )
    lines += ["", *_targets(runs, args), *_capacity(runs, floor), *_postgres(runs, floor, info)]
    lines += ["", "Rising rates (offered -> answered, p50 / p99 / max ms):", ""]
    for name, r in runs.items():
        for p in r["ramp"]:
            lines.append(
                f"- {name}: {p['offered']:.0f}/s -> {p['achieved']:.0f}/s, {p['p50']:.2f} / {p['p99']:.2f} / "
                f"{p['max']:.1f}, failed {p['failed']:.0f}"
            )
    return "\n".join(lines) + "\n"


def _best_text(run: dict[str, Any]) -> str:
    if not run["ramp"]:
        return "not measured"
    best = run.get("best")
    text = f"{best['offered']:.0f}/s (p99 {best['p99']:.1f} ms)" if best else "none"
    last = run["ramp"][-1]
    if not (last["failed"] == 0 and last["p99"] < P99_LIMIT_MS and last["achieved"] >= 0.97 * last["offered"]):
        text += f"; at {last['offered']:.0f}/s: p99 {last['p99']:.0f} ms, {last['achieved']:.0f}/s answered"
    return text


def _capacity(runs: dict[str, Any], floor: dict[str, dict[str, float]]) -> list[str]:
    name = next(iter(runs), None)
    if name is None:
        return []
    cpu = runs[name]["cpu"]
    per = cpu["server"] + cpu["client"]
    return [
        "",
        f"CPU cost ({name}): {cpu['server']:.2f} ms of service CPU per decision (all processes; the in-process "
        f"Decider.decide mean is {floor['Decider.decide (in-process)']['mean']:.2f} ms of wall time) and "
        f"{cpu['client']:.2f} ms in the load generator. On two otherwise idle cores that is a ceiling of about "
        f"{2000 / per:.0f} decisions/s with the generator on the same machine ({2000 / cpu['server']:.0f}/s "
        "without it); CPU time depends much less than latency on the neighbours' load.",
    ]


def _postgres(runs: dict[str, Any], floor: dict[str, dict[str, float]], info: dict[str, str]) -> list[str]:
    """What the PostgreSQL decision log (a table lock per decision) costs, as ratios to SQLite in this run."""
    if PG_VARIANT not in runs or SQLITE_VARIANT not in runs:
        return ["", "PostgreSQL decision log: not measured in this run (`--no-postgres`, or no server binaries)."]
    pg, lite = runs[PG_VARIANT], runs[SQLITE_VARIANT]
    fp, fl = floor[PG_FLOOR], floor["Decider.decide (in-process)"]
    cpu_pg, cpu_lite = pg["cpu"]["server"], lite["cpu"]["server"]
    best_pg, best_lite = pg.get("best"), lite.get("best")
    rate = (
        f"highest sustained rate {best_pg['offered']:.0f}/s against {best_lite['offered']:.0f}/s on SQLite "
        f"({best_pg['offered'] / best_lite['offered']:.2f}x)"
        if best_pg and best_lite
        else "highest sustained rate: not measured (time was up, or no step was sustained)"
    )
    return [
        "",
        f"## PostgreSQL decision log ({info.get('postgres', 'PostgreSQL')}), as ratios to SQLite in this run",
        "",
        "Every decision runs in one transaction that starts with `LOCK TABLE budgets IN EXCLUSIVE MODE` "
        "(it serializes the budget and cap checks of all workers, as SQLite's `BEGIN IMMEDIATE` does), then "
        "reads the budget and the customer's contacts, inserts the decision and charges the budget. The server "
        "is a throwaway cluster with default durability settings (synchronous_commit on, fsync on) on the same "
        "2 cores as the service and the load generator, reached over TCP on 127.0.0.1.",
        "",
        f"- in-process `Decider.decide`: p50 {fp['p50']:.2f} ms vs {fl['p50']:.2f} ms on SQLite "
        f"({fp['p50'] / fl['p50']:.2f}x), p99 {fp['p99']:.2f} ms vs {fl['p99']:.2f} ms ({fp['p99'] / fl['p99']:.2f}x);",
        f"- the service with 2 workers at the fixed rate: p50 {pg['fixed']['p50']:.2f} ms vs "
        f"{lite['fixed']['p50']:.2f} ms ({pg['fixed']['p50'] / lite['fixed']['p50']:.2f}x), p99 (median slice) "
        f"{pg['fixed']['slice_p99']:.2f} ms vs {lite['fixed']['slice_p99']:.2f} ms "
        f"({pg['fixed']['slice_p99'] / lite['fixed']['slice_p99']:.2f}x), failed {pg['fixed']['failed']:.0f};",
        f"- CPU per decision of the service's processes: {cpu_pg:.2f} ms vs {cpu_lite:.2f} ms "
        f"({cpu_pg / cpu_lite:.2f}x; the PostgreSQL server's own CPU is not in it);",
        f"- {rate}.",
    ]


def _targets(runs: dict[str, Any], args: Any) -> list[str]:
    name = next(iter(runs), None)
    if name is None:
        return []
    r = runs[name]
    p99, typical = r["fixed"]["p99"], r["fixed"]["slice_p99"]
    best = r.get("best")
    rate = best["offered"] if best else 0.0
    return [
        f"Targets ({name}): p99 <= 15 ms at {args.rate:.0f}/s: {'met' if p99 <= 15 else 'NOT met'} "
        f"(p99 {p99:.1f} ms over all slices, {typical:.1f} ms in the median slice); "
        ">= 400 decisions/s sustained with p99 < 50 ms: "
        f"{'met' if rate >= 400 else 'NOT met'} (highest {rate:.0f}/s)."
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short phases, FULL and NORMAL only")
    p.add_argument("--rate", type=float, default=200.0, help="the fixed offered rate (requests/s)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve.md")
    p.add_argument("--max-minutes", type=float, default=14.0, help="skip the remaining rising rates after this")
    p.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL decision log variant")
    args = p.parse_args(argv)
    args.rounds = 2 if args.quick else 4
    args.slice_seconds = 3.0 if args.quick else 5.0
    args.step_seconds = 4.0 if args.quick else 6.0
    args.rates = [200, 300, 400, 500, 600, 700, 800, 1000, 1200]
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the results page."""
    args = parse_args(argv)
    t_start = time.monotonic()
    info = {"load_start": " / ".join(f"{x:.2f}" for x in os.getloadavg())}
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    pg_server = None
    try:
        if not args.no_postgres:
            from tests.support.postgres import PostgresServer, unavailable_reason

            reason = unavailable_reason()
            if reason:
                print(f"no PostgreSQL variant: {reason}", flush=True)
            else:
                pg_server = PostgresServer().start()  # default durability: what a production server does
                info["postgres"] = _pg_version(pg_server.url())
        print("building the model and the registry ...", flush=True)
        uri = register(s_learner_spec(), tmp)
        store = customers(N_CUSTOMERS)
        OnlineStore(tmp / "store.db").put_frame(store, as_of=0.0)
        base = {
            "online_store_path": str(tmp / "store.db"),
            "registry": {"tracking_uri": uri},
            "campaign": {"name": "bench", "budget": 1e9},
        }
        rng = np.random.default_rng(0)
        ids = [store.index[i] if rng.random() > 0.05 else f"new{i}" for i in rng.integers(0, N_CUSTOMERS, 5000)]
        bodies = [json.dumps({"customer_id": c, "context": {"city": "shanghai"}}).encode() for c in ids]
        print(f"floors ... ({time.monotonic() - t_start:.0f} s)", flush=True)
        floor = floors(
            {**base, "decision_log_url": f"sqlite:///{tmp / 'floor.db'}"},
            store,
            1500 if args.quick else 3000,
            pg_server.new_database() if pg_server else None,
        )
        for name, s in floor.items():
            print(f"  {name}: p50 {s['p50']:.3f} ms p99 {s['p99']:.3f} ms", flush=True)
        variants: list[tuple[str, dict[str, Any]]] = [
            (SQLITE_VARIANT, base),
            ("synchronous=FULL", {**base, "sqlite_synchronous": "FULL"}),
        ]
        if pg_server is not None:
            variants.append((PG_VARIANT, {**base, "decision_log_url": pg_server.new_database()}))
        ramped = sorted((name for name, _ in variants), key=lambda n: n != SQLITE_VARIANT and n != PG_VARIANT)
        if not args.quick:
            variants += [
                ("without gc.freeze", {**base, "tuning": {"gc_freeze": False}}),
                ("without TCP_NODELAY", {**base, "tuning": {"tcp_nodelay": False}}),
                ("handler on the event loop", {**base, "tuning": {"inline_handler": True}}),
                ("OpenTelemetry on the API routes", {**base, "tuning": {"trace_api": True}}),
                ("SQLite's own checkpoints", {**base, "tuning": {"background_checkpoint": False}}),
            ]
        t0 = time.monotonic()
        services = start_services(variants, tmp)
        print(f"{len(services)} services up in {time.monotonic() - t0:.0f} s", flush=True)
        try:
            runs = interleaved(services, bodies, args)
            for name in list(services):
                if name not in ramped:
                    services[name].stop()
            for name in ramped:  # the rising rates, one service at a time (the others idle)
                if time.monotonic() - t_start > args.max_minutes * 60:
                    print(f"time is up: no rising rates for {name}", flush=True)
                    continue
                phases = ramp(services[name], bodies, args, name)
                runs[name]["ramp"] = [p.row() for p in phases]
                ok = [p for p in phases if p.sustained()]
                runs[name]["best"] = max(ok, key=lambda p: p.rate).row() if ok else None
        finally:
            for svc in services.values():
                svc.stop()
        info.update(machine())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report(info, floor, runs, args))
        print(f"wrote {args.out} in {time.monotonic() - t_start:.0f} s", flush=True)
    finally:
        if pg_server is not None:
            pg_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _pg_version(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return "PostgreSQL " + str(conn.exec_driver_sql("SHOW server_version").scalar()).split()[0]
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
