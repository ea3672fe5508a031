"""The README's serving quick start, run as a newcomer would: its commands verbatim, in a fresh empty folder outside
the repository (no mlruns/, no outputs/), with the installed command.

The only changes to the README's text: port 3000 becomes a free port (the machine is shared), `offerlift serve`
runs in the background until it answers /readyz, and `.venv` in the empty folder is a link to the environment the
tests run in (the README's commands name `.venv/bin/offerlift`). Everything the service needs (the registry, the
decision log, the online store) must be created by the commands themselves.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving_block() -> str:
    """The first bash block of the README's section on serving decisions in real time."""
    text = README.read_text()
    section = text[text.index("## Serving decisions in real time") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the serving section has no bash block"
    return match.group(1)


def _json_objects(text: str) -> list[dict]:
    """The JSON objects printed one after the other (curl -s prints no newline)."""
    dec, out, i = json.JSONDecoder(), [], 0
    while True:
        j = text.find("{", i)
        if j < 0:
            return out
        obj, i = dec.raw_decode(text, j)
        out.append(obj)


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFERLIFT_", "MLFLOW_", "BENTOML_"))}
    env["HOME"] = str(tmp / "home")  # BentoML's store and caches of a new user
    return env


def script(block: str, port: int) -> str:
    """The block as a script: a free port, the server in the background until ready, stopped at the end."""
    lines = block.replace("--port 3000", f"--port {port}").replace("127.0.0.1:3000", f"127.0.0.1:{port}")
    lines = lines.splitlines()
    serve = [i for i, line in enumerate(lines) if "offerlift serve" in line]
    assert len(serve) == 1, "expected one `offerlift serve` line in the serving block"
    i = serve[0]
    command = lines[i].split("#")[0].rstrip()
    wait = (
        f"{command} > serve.log 2>&1 &\nSERVER=$!\ntrap 'kill -TERM $SERVER; wait $SERVER' EXIT\n"
        f"for _ in $(seq 1 240); do curl -sf http://127.0.0.1:{port}/readyz > /dev/null && break; "
        "kill -0 $SERVER || { cat serve.log; exit 3; }; sleep 0.5; done"
    )
    lines[i] = wait
    return "set -euo pipefail\n" + "\n".join(lines) + "\necho\n"


@pytest.mark.slow
def test_readme_serving_commands_work_verbatim_in_a_fresh_folder(tmp_path):
    work = tmp_path / "newcomer"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    assert not (work / "outputs").exists() and not (work / "mlruns").exists()
    port = _free_port()
    proc = subprocess.run(
        ["bash", "-c", script(serving_block(), port)],
        cwd=work,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (work / "serve.log").read_text() if (work / "serve.log").exists() else ""
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}\nserve.log:\n{log[-4000:]}"
    answers = _json_objects(proc.stdout)
    decision, outcomes = answers[-2], answers[-1]
    assert set(decision) >= {"decision_id", "arm", "offer_id", "channel", "propensity", "group", "explanation"}
    assert decision["channel"] in (None, "sms", "push")  # the request's channel restriction holds
    assert outcomes == {"received": 1, "new": 1}
    # everything was created in the folder the commands ran in, and the answered decision is on disk there
    assert (work / "mlruns" / "mlflow.db").is_file()
    with sqlite3.connect(work / "outputs" / "serving" / "decisions.db") as db:
        ids = [r[0] for r in db.execute("SELECT decision_id FROM decisions")]
    assert ids == [decision["decision_id"]]


def _serve(work: Path, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.prefix) / "bin" / "offerlift"), "serve", "--port", str(_free_port()), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_serve_without_a_champion_fails_fast_in_one_line(tmp_path):
    env = {**_clean_env(tmp_path), "OFFERLIFT_API_KEY": "k" * 16}
    proc = _serve(tmp_path, env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'champion'" in errors[0] and "OFFERLIFT_HOME" in errors[0], proc.stderr


@pytest.mark.slow
def test_serve_with_an_unusable_decision_log_fails_fast_naming_the_setting(tmp_path):
    env = {**_clean_env(tmp_path), "OFFERLIFT_API_KEY": "k" * 16}
    env["OFFERLIFT_DECISION_LOG_URL"] = "postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing"
    proc = _serve(tmp_path, env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: decision_log_url: cannot connect"), proc.stderr
    assert "secret" not in proc.stderr  # the password is not shown


@pytest.mark.slow
def test_bentoml_serve_checks_the_settings_before_any_worker_starts(tmp_path):
    """`bentoml serve` has no `offerlift serve` in front of it: the deployment hook fails in one line, exit 2."""
    env = {
        **_clean_env(tmp_path),
        "OFFERLIFT_API_KEY": "k" * 16,
        "OFFERLIFT_DECISION_LOG_URL": "sqlite:////proc/x/d.db",
    }
    bentoml = Path(sys.prefix) / "bin" / "bentoml"
    proc = subprocess.run(
        [str(bentoml), "serve", "offerlift.serving.service:OfferLift", "--port", str(_free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: decision_log_url: cannot create the folder '/proc/x'" in proc.stderr
