"""The MLflow pyfunc model of a trained offerlift model, logged as code ("models from code").

MLflow copies this file into every logged model and runs it when the model is loaded; it is never imported by
offerlift itself. It needs only the model's own requirements and the copy of the scorer runtime that
`offerlift.models.model_io.log_scorer_model` logs next to it as the package ``offerlift_scorer`` (MLflow puts the
model's ``code/`` folder on ``sys.path``), so ``mlflow.pyfunc.load_model`` works where offerlift is not installed.
"""

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model
from offerlift_scorer.scoring import ArmScorer, score_frame


class OfferliftModel(mlflow.pyfunc.PythonModel):
    """`predict(frame)` returns ``uplift_<arm>`` (expected incremental profit over no offer) per treatment arm and
    ``recommended_arm``, one row per input row."""

    def load_context(self, context: Any) -> None:
        """Load the scorer spec (``scorer.json``) from the model's artifacts."""
        self.scorer = ArmScorer(json.loads(Path(context.artifacts["scorer"]).read_text()))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Score a pandas DataFrame with the model's feature columns (MLflow checks them against the logged
        signature, which it infers from the input example)."""
        return score_frame(self.scorer, model_input)


set_model(OfferliftModel())
