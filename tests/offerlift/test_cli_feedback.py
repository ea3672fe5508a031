"""The feedback-loop commands: --help on each, --json with the documented fields, a second run that changes
nothing, and a bad outcome file refused in one line that names the file, the column and the rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from offerlift.cli import app
from offerlift.loop import random_policy_spec
from offerlift.models.registry import CHAMPION, set_alias
from offerlift.models.scoring import ArmScorer, FeatureSpec
from tests.offerlift.feedback_world import HOUR, T0, SimLog, synthetic_events

runner = CliRunner()
COMMANDS = ["outcomes", "join", "report", "evaluate", "retrain", "promote", "rollback"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_json(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "--json" in result.stdout


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-feedback")
    sim = SimLog(root, customers=600)
    spec = random_policy_spec(sim.world.catalog, FeatureSpec.from_frame(sim.features(0.0)))
    version = sim.register(spec)
    set_alias(sim.registry, CHAMPION, version)
    decisions = sim.decide(ArmScorer(spec), version, 0.0, explore=1.0, rng_seed=2)
    events = synthetic_events(decisions, sim.features(0.0).loc[decisions["customer_id"]], sim.world.catalog, 2)
    events.to_csv(root / "outcomes.csv", index=False)
    return sim, root


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_outcomes_join_report_from_the_command_line(small_log):
    sim, root = small_log
    cfg = ["--config", str(sim.config)]
    first = _json(["outcomes", "--file", str(root / "outcomes.csv"), *cfg])
    assert {k: first[k] for k in ("received", "new", "duplicate", "unattributed", "late")} == {
        "received": 600, "new": 600, "duplicate": 0, "unattributed": 0, "late": 0}  # fmt: skip
    assert _json(["outcomes", "--file", str(root / "outcomes.csv"), *cfg])["new"] == 0
    joined = _json(["join", "--as-of", str(T0 + 200 * HOUR), *cfg])
    assert joined["joined"] == 600 and _json(["join", "--as-of", str(T0 + 200 * HOUR), *cfg])["joined"] == 0
    report = _json(["report", "--out", str(root / "report"), "--no-mlflow", *cfg])
    assert report["campaign"] == "sim" and set(report["totals"]) >= {"buyers", "orders", "revenue", "profit", "roi"}
    assert Path(report["paths"]["html"]).exists() and report["mlflow_run_id"] is None
    text = runner.invoke(app, ["report", "--start", "2025-11-24T16:00", "--no-mlflow", "--out", str(root / "r2"), *cfg])
    assert text.exit_code == 0 and "incremental profit" in text.stdout and "2025-11-24 16:00 UTC" in text.stdout


def test_an_outcome_naming_an_unknown_decision_is_refused_in_one_line(small_log, tmp_path):
    sim, root = small_log
    bad = pd.read_csv(root / "outcomes.csv").head(5).assign(event_id=lambda f: f["event_id"] + "-x")
    bad.loc[3, "decision_id"] = "no-such-decision"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    exe = Path(sys.executable).with_name("offerlift")
    done = subprocess.run([exe, "outcomes", "--file", path, "--config", sim.config], capture_output=True, text=True)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "bad.csv" in last and "'decision_id'" in last and "[4]" in last
