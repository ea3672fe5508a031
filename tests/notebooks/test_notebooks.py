"""Every notebook runs top to bottom on small data (OFFERLIFT_SMALL=1) with a temporary MLflow store, and is
committed without outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from offerlift.features.errors import DataNotFoundError

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["01_quickstart_hillstrom", "02_multiarm_starbucks", "03_closed_loop", "04_ab_report"]
NEEDS = {"01_quickstart_hillstrom": "hillstrom", "02_multiarm_starbucks": "starbucks"}
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment of the kernels: small data, one temporary MLflow store and output folder, one thread."""
    base = tmp_path_factory.mktemp("notebooks")
    env = {
        "OFFERLIFT_SMALL": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "OFFERLIFT_OUTPUTS": str(base / "outputs"),
        "OMP_NUM_THREADS": "1",  # single-row LightGBM predictions in the loop are far slower with thread pools
        "MPLBACKEND": "Agg",
    }
    return env, base


def _data_available(name: str) -> bool:
    from offerlift.features.hillstrom import locate_hillstrom
    from offerlift.features.starbucks import locate_starbucks

    try:
        {"hillstrom": locate_hillstrom, "starbucks": locate_starbucks}[name]()
    except DataNotFoundError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code"
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_on_small_data(name, kernel_env, monkeypatch):
    if name in NEEDS and not _data_available(NEEDS[name]):
        pytest.skip(f"{NEEDS[name]} data not found (set OFFERLIFT_DATA_DIR)")
    env, base = kernel_env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(base)}}
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell on any error
    seconds = time.perf_counter() - t0
    print(f"{name}: {seconds:.0f}s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    figures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures, "no figure was shown inline"
    assert list((base / "outputs").glob(f"{name[:2]}_*.png")), "no figure was saved as PNG"
    assert not (base / "mlruns").exists(), "MLflow artifacts went to the working folder, not next to the store"
