"""Fixtures of the serving tests: a small real model in a temporary MLflow registry, an online store, a service.

`tiny_spec` fits a T-learner style scorer spec (one small LightGBM booster per arm and outcome) on simulated
customers with the simulated world's 20-arm catalog. `Registry` logs such specs with
`offerlift.models.model_io.log_scorer_model` in a temporary MLflow store and moves the alias "champion".
`ServiceProcess` runs the real service (``bentoml serve``) on a free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

from offerlift.features.catalog import Catalog
from offerlift.features.store import OnlineStore
from offerlift.models.registry import CHAMPION, MODEL_NAME, activate, resolve_tracking_uri, set_alias
from offerlift.models.scoring import FORMAT, FeatureSpec
from offerlift.simworld.config import load_world_spec

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789"
CITIES = ("shanghai", "beijing", "guangzhou", "chengdu", "wuhan")
TIERS = ("bronze", "silver", "gold", "platinum")
CHANNELS = ("sms", "push", "wechat", "email")
PARAMS = {"verbose": -1, "num_leaves": 4, "min_data_in_leaf": 5, "learning_rate": 0.3, "num_threads": 1}


def catalog() -> Catalog:
    """The simulated world's catalog: 5 coupons on 4 channels = 20 arms plus "none"."""
    return load_world_spec()[0]


def customers_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Online-store style features of n simulated customers (index = customer_id), consent and reach flags."""
    rng = np.random.default_rng(seed)
    freq = rng.poisson(3.0, n)
    frame = pd.DataFrame(
        {
            "recency_hours": np.where(freq > 0, rng.exponential(100.0, n), np.nan),
            "frequency": freq.astype(float),
            "monetary": freq * rng.gamma(2.0, 30.0, n),
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(60_000, 15_000, n),
            "city": rng.choice(CITIES, n),
            "tier": rng.choice(TIERS, n),
        },
        index=pd.Index([f"cust{i:05d}" for i in range(n)], name="customer_id"),
    )
    for ch in CHANNELS:
        frame[f"consent_{ch}"] = (rng.random(n) < 0.8).astype(float)
        frame[f"reach_{ch}"] = 1.0
    return frame


MODEL_COLUMNS = ("recency_hours", "frequency", "monetary", "age", "income", "city", "tier")


def tiny_spec(seed: int = 0, n_per_arm: int = 60, trees: int = 5, lift: float = 1.0) -> dict[str, Any]:
    """A T-learner scorer spec (outcomes spend and redeem) fitted on simulated data; `lift` scales coupon effects."""
    cat = catalog()
    arms = cat.arm_ids
    rng = np.random.default_rng(seed)
    X = customers_frame(n_per_arm * len(arms), seed)[list(MODEL_COLUMNS)]
    X["city"] = pd.Categorical(X["city"], categories=CITIES)
    X["tier"] = pd.Categorical(X["tier"], categories=TIERS)
    fspec = FeatureSpec.from_frame(X)
    Xm = fspec.encode(X)
    arm_of_row = np.repeat(np.arange(len(arms)), n_per_arm)
    value = np.array([a.coupon_value for a in cat.arms])
    young = (X["age"].to_numpy() < 40).astype(float)
    spend = 20 + 0.1 * X["monetary"].to_numpy() + lift * value[arm_of_row] * (0.5 + young) + rng.normal(0, 2, len(X))
    redeem = (rng.random(len(X)) < np.where(arm_of_row > 0, 0.3, 0.0)).astype(float)
    spend_b, redeem_b = [], []
    for a in range(len(arms)):
        rows = arm_of_row == a
        spend_b.append(_fit(Xm[rows], spend[rows], "regression", trees))
        redeem_b.append(_fit(Xm[rows], redeem[rows], "regression", trees))
    return {
        "format": FORMAT,
        "arms": arms,
        "catalog": cat.to_dict(),
        "feature_spec": fspec.to_dict(),
        "outcomes": {"spend": {"kind": "t", "boosters": spend_b}, "redeem": {"kind": "t", "boosters": redeem_b}},
        "value_outcome": "spend",
        "metadata": {"seed": seed, "lift": lift},
    }


def _fit(X: np.ndarray, y: np.ndarray, objective: str, trees: int) -> str:
    return lgb.train({**PARAMS, "objective": objective}, lgb.Dataset(X, y), trees).model_to_string()


class Registry:
    """A temporary MLflow store with a registered model "offerlift"; `register` logs a spec and moves the alias."""

    def __init__(self, root: Path):
        self.root = root
        self.settings = resolve_tracking_uri(root=root / "mlruns")
        self.tracking_uri = self.settings.tracking_uri

    def register(self, spec: dict[str, Any], champion: bool = True) -> str:
        """Log `spec` as a new model version; with `champion`, point the alias at it. Returns the version."""
        import mlflow

        from offerlift.models.model_io import log_scorer_model

        activate(self.settings)
        with mlflow.start_run():
            info = log_scorer_model(spec, self.root / f"work{time.time_ns()}", MODEL_NAME)
        version = str(info.registered_model_version)
        if champion:
            set_alias(self.settings, CHAMPION, version)
        return version


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Registry:
    """A registry for the session with a champion fitted by `tiny_spec` (version 1; the swap test adds 2)."""
    # These tests name their temporary store explicitly; a URI exported by an earlier test (mlflow.set_tracking_uri
    # exports it) or by the user must not redirect them.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.register(tiny_spec(seed=0))
    return reg


def fill_store(path: Path, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """An online store with n known customers; returns their features."""
    frame = customers_frame(n, seed)
    OnlineStore(path).put_frame(frame, as_of=0.0)
    return frame


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_config(tmp: Path, reg: Registry, /, **overrides: Any) -> Path:
    """Write a service config YAML for a test (temporary log and store, fast champion polling)."""
    data: dict[str, Any] = {
        "decision_log_url": f"sqlite:///{tmp / 'decisions.db'}",
        "online_store_path": str(tmp / "store.db"),
        "registry": {"tracking_uri": reg.tracking_uri, "reload_interval_s": 1.0},
        "campaign": {"name": "test", "budget": 500.0, "duration_hours": 24.0},
        "rules": {"cap_per_customer": 3, "cap_per_channel": {}},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    path = tmp / "service.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class ServiceProcess:
    """``bentoml serve offerlift.serving.service:OfferLift`` on 127.0.0.1 in its own process group."""

    def __init__(self, config: Path, port: int, log_path: Path, env: dict[str, str] | None = None):
        self.config, self.port, self.log_path = config, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            "OFFERLIFT_CONFIG": str(config),
            "OFFERLIFT_API_KEY": API_KEY,
            "BENTOML_DO_NOT_TRACK": "true",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        """Start and wait until /readyz answers 200."""
        bentoml = str(Path(sys.executable).with_name("bentoml"))
        cmd = [bentoml, "serve", "offerlift.serving.service:OfferLift", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"service not ready after {timeout}s:\n{self.log_tail()}")

    def processes(self) -> list[psutil.Process]:
        """The arbiter and every worker (circus starts the workers in sessions of their own)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> list[psutil.Process]:
        """SIGKILL the arbiter and all its workers at once, by pid; returns them (all gone)."""
        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        if self.proc is not None:
            self.proc.wait(10)
        return procs

    def stop(self) -> None:
        """SIGTERM the arbiter (it stops its workers), SIGKILL whatever is left after 15 s."""
        procs = self.processes()
        if not procs:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            p.kill()
        self.proc.wait(10)

    def log_tail(self, n: int = 60) -> str:
        """The last lines of the service's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        """An HTTP client with the bearer key."""
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on a free loopback port for the session (skipped, with the reason, only when the
    server binaries cannot be found; `.ci/run` installs them)."""
    from tests.support.postgres import PostgresServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer({"fsync": "off"}).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request, tmp_path):
    """The URL of an empty decision log: a SQLite file, and a fresh database of the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    return request.getfixturevalue("postgres_server").new_database()
