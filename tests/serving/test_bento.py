"""`make bento` builds a bento that `bentoml serve TAG` really serves, with offerlift coming from the bento's wheel.

The serving environment is a fresh virtual environment: every distribution of the test's environment except
offerlift is linked in (they are the bento's requirements.lock, installed at those versions), and offerlift itself
is installed from the wheel inside the built bento (``env/python/wheels``), so the service imports nothing from the
source tree. The registry and the decision log live in a temporary offerlift home, named by ``$OFFERLIFT_HOME``
(``bentoml serve TAG`` runs in the bento's own folder).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.serving.conftest import API_KEY, Registry, free_port, tiny_spec

REPO = Path(__file__).resolve().parents[2]


def _serving_env(where: Path, wheel: Path) -> Path:
    """A venv with the test environment's distributions (offerlift excepted) and offerlift from `wheel`."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = next((where / "lib").glob("python*/site-packages"))
    ours = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    for entry in ours.iterdir():
        name = entry.name.lower()
        if (
            name.startswith(("offerlift", "__editable__", "_virtualenv"))
            or name.endswith(".pth")
            or (site / entry.name).exists()
        ):
            continue
        (site / entry.name).symlink_to(entry)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    return where / "bin" / "python"


@pytest.mark.slow
def test_make_bento_then_bentoml_serve_tag_answers_decisions(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFERLIFT_", "MLFLOW_", "BENTOML_"))}
    env["BENTOML_HOME"] = str(tmp_path / "bentoml")
    build = subprocess.run(["make", "bento"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    tag = re.search(r"(offerlift:[a-z0-9]+)", build.stdout + build.stderr).group(1)
    bento = tmp_path / "bentoml" / "bentos" / "offerlift" / tag.split(":")[1]
    wheel = next((bento / "env" / "python" / "wheels").glob("offerlift-*.whl"))
    python = _serving_env(tmp_path / "venv", wheel)
    where = subprocess.run(
        [str(python), "-I", "-c", "import offerlift.serving.service as s; print(s.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), where  # the service's code is the bento's wheel

    home = tmp_path / "home"
    Registry(home).register(tiny_spec(seed=0))  # a champion in the home's mlruns/, as `offerlift train` makes it
    port = free_port()
    serve_env = {**env, "OFFERLIFT_HOME": str(home), "OFFERLIFT_API_KEY": API_KEY, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "serve.log", "wb") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "bentoml", "serve", tag, "--port", str(port)],
            cwd=tmp_path,
            env=serve_env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("bentoml serve TAG never became ready:\n" + (tmp_path / "serve.log").read_text()[-4000:])
        r = httpx.post(
            f"http://127.0.0.1:{port}/decide",
            json={"customer_id": "cust00001", "context": {"channels": ["sms", "push"]}},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        with sqlite3.connect(home / "outputs" / "serving" / "decisions.db") as db:
            assert [row[0] for row in db.execute("SELECT decision_id FROM decisions")] == [r.json()["decision_id"]]
    finally:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=30)
        for p in alive:
            p.kill()
