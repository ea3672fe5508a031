"""The offerlift command keeps its documented interface: flags, JSON fields, output files, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from offerlift.cli import app

runner = CliRunner()


def small_experiment(path, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    arm = rng.choice(["ctl", "A", "B"], n)
    p = 0.1 + 0.1 * (arm == "A") * (x > 0) + 0.1 * (arm == "B") * (x < 0)
    df = pd.DataFrame({"group": arm, "x": x, "city": rng.choice(["a", "b"], n), "y": (rng.random(n) < p).astype(int)})
    df.to_csv(path, index=False)
    return df


def test_data_summary_json_has_the_documented_fields():
    result = runner.invoke(app, ["data", "summary", "--dataset", "simulated", "--customers", "2000", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["rows"] == 2000 and out["control_arm"] == "none" and len(out["arms"]) == 21
    assert set(out["per_arm"]["none"]) >= {"units", "outcome_mean"}


def test_data_summary_takes_a_world_preset_or_file_and_names_it(tmp_path):
    base = ["data", "summary", "--dataset", "simulated", "--customers", "1500", "--json"]
    default = json.loads(runner.invoke(app, base).stdout)
    low = runner.invoke(app, [*base, "--world", "low-signal"])
    assert low.exit_code == 0, low.output
    low = json.loads(low.stdout)
    assert default["world"] == "default" and low["world"] == "low-signal"
    assert set(low) == set(default) and low["rows"] == 1500
    from offerlift.simworld.config import resolve_world

    spec = tmp_path / "mine.yaml"
    spec.write_text(resolve_world("low-signal").read_text())
    mine = json.loads(runner.invoke(app, [*base, "--world", str(spec)]).stdout)
    assert mine["world"] == str(spec) and mine["per_arm"] == low["per_arm"]


def test_an_unknown_world_fails_with_the_presets():
    result = runner.invoke(app, ["data", "summary", "--dataset", "simulated", "--customers", "500", "--world", "nope"])
    assert result.exit_code != 0
    message = result.output + str(result.exception)  # the error reaches `main`, which prints it in one line
    assert "unknown world 'nope'" in message and "'low-signal'" in message
    result = runner.invoke(app, ["data", "summary", "--dataset", "hillstrom", "--world", "low-signal"])
    assert result.exit_code != 0 and "--dataset simulated only" in result.output


def test_train_then_score_a_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = tmp_path / "exp.csv"
    df = small_experiment(data)
    args = [
        "train",
        "--data",
        str(data),
        "--treatment",
        "group",
        "--control",
        "ctl",
        "--outcome",
        "y",
        "--cost",
        "0.01",
        "--learner",
        "t",
        "--folds",
        "2",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model_uri"].startswith("models:/") and "ips_vs_control" in out["metrics"]
    scored = tmp_path / "scored.csv"
    result = runner.invoke(app, ["score", "--model", out["model_uri"], "--data", str(data), "--out", str(scored)])
    assert result.exit_code == 0, result.output
    s = pd.read_csv(scored)
    assert list(s.columns) == ["uplift_A", "uplift_B", "recommended_arm"] and len(s) == len(df)
    # the model found who responds to which arm: A for x > 0, B for x < 0 (on most rows)
    rec = s["recommended_arm"].to_numpy()
    assert np.mean(rec[df["x"] > 0.5] == "A") > 0.6 and np.mean(rec[df["x"] < -0.5] == "B") > 0.6


def test_bad_file_gets_a_clear_error_and_exit_code_2(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"group": ["ctl", "A"], "y": [1, "x"]}).to_csv(bad, index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "offerlift.cli",
            "train",
            "--data",
            str(bad),
            "--treatment",
            "group",
            "--control",
            "ctl",
            "--outcome",
            "y",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"},
    )
    assert proc.returncode == 2
    assert "'y'" in proc.stderr and "rows" in proc.stderr


def test_serve_without_key_refuses_to_start(monkeypatch):
    monkeypatch.delenv("OFFERLIFT_API_KEY", raising=False)
    proc = subprocess.run(
        [sys.executable, "-m", "offerlift.cli", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "OFFERLIFT_API_KEY"},
        timeout=120,
    )
    assert proc.returncode == 2 and "OFFERLIFT_API_KEY" in proc.stderr


@pytest.mark.parametrize(
    "cmd",
    ["data", "train", "score", "loop", "run", "tune", "serve", "batch", "segments", "abuse", "monitor", "triggers"],
)
def test_every_command_has_help(cmd):
    result = runner.invoke(app, [cmd, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_abuse_command_prints_a_json_summary():
    result = runner.invoke(app, ["abuse", "--customers", "1500"])
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), dict)


def test_built_in_simulated_data_needs_no_size_and_takes_customers_and_seed(tmp_path, monkeypatch):
    """`train --dataset simulated` (the README's first serving step) crashed without n_customers."""
    from offerlift.cli import SIMULATED_CUSTOMERS
    from offerlift.datasets import SIMULATED_CUSTOMERS as LOADER_DEFAULT

    assert SIMULATED_CUSTOMERS == LOADER_DEFAULT
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    small = ["--dataset", "simulated", "--customers", "4000", "--seed", "3"]
    result = runner.invoke(app, ["train", *small, "--folds", "2", "--learner", "s", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dataset"] == "simulated"
    result = runner.invoke(app, ["data", "balance", *small, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_abs_smd"] > 0
    result = runner.invoke(app, ["tune", *small, "--trials", "1", "--folds", "2", "--json"])
    assert result.exit_code == 0, result.output


def test_the_simulated_loader_has_defaults():
    from offerlift.datasets import SIMULATED_CUSTOMERS, load_dataset

    exp = load_dataset("simulated")
    assert exp.assignments["customer_id"].nunique() == SIMULATED_CUSTOMERS


@pytest.mark.slow
def test_train_is_quiet_by_default_and_the_log_file_gets_the_rest(tmp_path):
    """No MLflow warnings, download bars, registration prints or other modules' INFO lines on the terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFERLIFT_", "MLFLOW_"))}
    exe = os.path.join(os.path.dirname(sys.executable), "offerlift")
    args = [exe, "train", "--dataset", "simulated", "--customers", "3000", "--folds", "2", "--learner", "s"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise_list = (
        "mlflow.store",
        "mlflow.pyfunc",
        "mlflow.models",
        "Downloading artifacts",
        "CloudPickle",
        "Successfully registered",
        "INFO",
        "WARNING",
    )
    for noise in noise_list:
        assert noise not in proc.stderr, f"{noise!r} on the terminal:\n{proc.stderr}"
    assert "fold 2/2" in proc.stderr and "registered models:/offerlift/" in proc.stdout
    logged = (tmp_path / "outputs" / "logs" / "offerlift.log").read_text()
    assert "mlflow.store" in logged and "mlflow_prints: Created version" in logged  # nothing is lost
    loud = subprocess.run([exe, "--verbose", *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert loud.returncode == 0 and "Created version" in loud.stderr
