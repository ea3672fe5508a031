"""The MLflow pyfunc class of an offerlift model (imports MLflow: load it only to log or pyfunc-load a model).

`offerlift.models.model_io.log_scorer_model` logs `OfferliftModel` with the model's ``scorer.json`` as its artifact;
``mlflow.pyfunc.load_model`` then gives a model whose ``predict(frame)`` returns ``uplift_<arm>`` per treatment arm
and ``recommended_arm`` (`offerlift.models.model_io.score_frame`). Serving never goes through this class: it reads
``scorer.json`` directly (`offerlift.models.model_io.load_model`).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from offerlift.models.model_io import read_scorer, score_frame


class OfferliftModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper: `predict(frame)` returns the expected incremental profit of each arm."""

    def load_context(self, context: Any) -> None:
        """Load the scorer from the model's artifacts."""
        self.scorer = read_scorer(context.artifacts["scorer"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """One row per input row: ``uplift_<arm>`` for each treatment arm and ``recommended_arm``."""
        return score_frame(self.scorer, model_input)
