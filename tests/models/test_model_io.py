"""A logged model is self-contained: plain `mlflow.pyfunc.load_model` loads it where offerlift is not installed.

What `test_logged_model_loads_with_only_its_own_requirements` proves: a fresh virtual environment whose
site-packages holds only the distributions named in the model's ``requirements.txt`` and their dependency
closure (linked from the test's environment, at exactly the pinned versions; offerlift and everything else
absent, checked) loads the model with ``python -I`` and predicts the same numbers as offerlift's own loader. It does
not download the requirements from PyPI (slow on 2 shared cores); the pins are checked to be the linked versions.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from offerlift.models.model_io import input_example, log_scorer_model, read_scorer, score_frame, vendor_scorer
from offerlift.models.registry import activate, resolve_tracking_uri
from tests.serving.conftest import customers_frame, tiny_spec


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One tiny model logged and registered in a temporary store; (local model folder, ModelInfo, warnings)."""
    root = tmp_path_factory.mktemp("model_io")
    activate(resolve_tracking_uri(root=root / "mlruns"))
    spec = tiny_spec()
    with warnings.catch_warnings(record=True) as caught, mlflow.start_run():
        warnings.simplefilter("always")
        info = log_scorer_model(spec, root / "work", "offerlift-io-test")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=str(root / "dl")))
    return folder, info, caught, spec


def test_logged_model_has_a_signature_an_input_example_and_no_pickle(logged):
    folder, info, caught, spec = logged
    assert info.signature is not None
    assert [c.name for c in info.signature.inputs.inputs] == spec["feature_spec"]["columns"]
    assert (folder / "input_example.json").is_file()
    assert not list(folder.rglob("*.pkl")), "the model must be logged from code, not pickled"
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "CloudPickle" in m or "signature" in m.lower()], messages


def _closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions `names` need, by canonical name (markers evaluated, extras not followed)."""
    out: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in out:
            continue
        dist = metadata.distribution(name)
        out[name] = dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


def _environment_of(requirements: list[Requirement], where: Path) -> Path:
    """A venv whose site-packages links exactly the requirements' closure; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = next((where / "lib").glob("python*/site-packages"))
    dists = _closure([r.name for r in requirements])
    assert "offerlift" not in dists
    for req in requirements:
        assert req.specifier.contains(dists[canonicalize_name(req.name)].version), req
    for dist in dists.values():
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if not (site / top).exists() and (base / top).exists():
                (site / top).symlink_to(base / top)
    return where / "bin" / "python"


@pytest.mark.slow
def test_logged_model_loads_with_only_its_own_requirements(logged, tmp_path):
    folder, _, _, spec = logged
    reqs = [Requirement(line) for line in (folder / "requirements.txt").read_text().split() if line]
    assert {canonicalize_name(r.name) for r in reqs} >= {"mlflow", "lightgbm", "pandas", "numpy", "pyyaml"}
    python = _environment_of(reqs, tmp_path / "env")
    frame = customers_frame(50, seed=3)[spec["feature_spec"]["columns"]].reset_index(drop=True)
    frame.to_json(tmp_path / "rows.json", orient="table")  # keeps the dtypes (floats stay floats)
    code = (
        "import importlib.util, sys, pandas as pd, mlflow.pyfunc\n"
        "assert importlib.util.find_spec('offerlift') is None, 'offerlift is importable'\n"
        f"m = mlflow.pyfunc.load_model({str(folder)!r})\n"
        f"X = pd.read_json({str(tmp_path / 'rows.json')!r}, orient='table')\n"
        "sys.stdout.write(m.predict(X).to_json(orient='split'))\n"
    )
    proc = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = pd.read_json(io.StringIO(proc.stdout), orient="split")
    want = score_frame(read_scorer(folder), frame)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)
    assert want["recommended_arm"].nunique() >= 1


def test_the_vendored_runtime_imports_nothing_of_offerlift(tmp_path):
    package = vendor_scorer(tmp_path)
    for path in package.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+offerlift[.\s]", text, re.M), path.name
        assert "from offerlift_scorer." in text or path.name in ("errors.py", "__init__.py")


def test_input_example_has_the_feature_columns_and_known_levels():
    spec = tiny_spec()
    ex = input_example(spec)
    assert list(ex.columns) == spec["feature_spec"]["columns"]
    cats = spec["feature_spec"]["categories"]
    for col, levels in cats.items():
        assert set(ex[col]) <= set(levels)
    assert json.loads(ex.to_json(orient="split"))["data"]


def _scorer_and_rows(n: int = 6) -> tuple:
    from offerlift.models.scoring import ArmScorer

    spec = tiny_spec()
    frame = customers_frame(n, seed=5)[spec["feature_spec"]["columns"]].reset_index(drop=True)
    return ArmScorer(spec), frame


def test_text_in_a_numeric_column_is_refused_naming_file_column_and_rows():
    from offerlift.features.errors import DataError
    from offerlift.models.model_io import check_scoring_input

    scorer, frame = _scorer_and_rows()
    frame["age"] = frame["age"].astype(object)
    frame.loc[[1, 4], "age"] = "forty"
    with pytest.raises(DataError) as err:
        check_scoring_input(scorer, frame, "'rows.csv'")
    text = str(err.value)
    assert "'rows.csv'" in text and "'age'" in text and "[1, 4]" in text and "forty" in text
    assert "np." not in text  # plain numbers


def test_unseen_categories_are_named_in_a_warning(caplog):
    from offerlift.models.model_io import check_scoring_input

    scorer, frame = _scorer_and_rows()
    frame["city"] = frame["city"].astype(object)
    frame.loc[2, "city"] = "atlantis"
    with caplog.at_level("WARNING", logger="offerlift.models.model_io"):
        check_scoring_input(scorer, frame, "'rows.csv'")
    (record,) = [r for r in caplog.records if "atlantis" in r.getMessage()]
    assert "'city'" in record.getMessage() and "[2]" in record.getMessage()
