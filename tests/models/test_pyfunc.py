"""The MLflow pyfunc form of a model: logged by `log_scorer_model`, loaded by MLflow, same answers as the scorer."""

from __future__ import annotations

import numpy as np

from offerlift.models.model_io import load_model, log_scorer_model
from offerlift.models.registry import activate, resolve_tracking_uri
from tests.serving.conftest import MODEL_COLUMNS, customers_frame, tiny_spec


def test_a_logged_model_loads_as_pyfunc_and_predicts_what_the_scorer_predicts(tmp_path):
    import mlflow

    reg = resolve_tracking_uri(root=tmp_path / "mlruns")
    activate(reg)
    with mlflow.start_run():
        info = log_scorer_model(tiny_spec(seed=3), tmp_path / "work", None)
    model = mlflow.pyfunc.load_model(info.model_uri)
    frame = customers_frame(40, seed=9)[list(MODEL_COLUMNS)]
    out = model.predict(frame)
    scorer = load_model(info.model_uri)
    incr = scorer.incremental_profit(scorer.features.encode(frame))
    np.testing.assert_allclose(out[[f"uplift_{a}" for a in scorer.arms[1:]]].to_numpy(), incr[:, 1:])
    best = np.where(incr.max(axis=1) > 0, incr.argmax(axis=1), 0)  # reference: first best arm, none if none pays
    assert out["recommended_arm"].tolist() == [scorer.arms[j] for j in best]
