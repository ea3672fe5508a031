"""What a decision was made on, as the decision log keeps it: the feature values scored and the policy's arm
probabilities.

Each logged decision carries two JSON texts (columns ``features`` and ``arm_probs`` of the decision log):

- ``features``: the attributes the model encoded for this decision (the online store's row as read inside the
  request, with the context's city and feature overrides; `offerlift.serving.decider.attributes`), numbers as
  numbers, missing values as null. Evaluating or retraining on the log reads these, so it is point-in-time exact
  whatever the store holds later.
- ``arm_probs``: ``{arm: probability}`` of every arm the rules allowed (caps and budget included) under the treated
  policy (exploration and greedy choice), holdout decisions included; an allowed arm with probability 0 is listed
  too, so the keys are the decision's allowed arms.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _plain(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) or math.isinf(v) else float(v)
    return v if isinstance(v, str) else str(v)


def features_json(attrs: Mapping[str, Any]) -> str:
    """The scored attributes as a JSON object (NaN and infinities as null)."""
    return json.dumps({str(k): _plain(v) for k, v in attrs.items()}, separators=(",", ":"))


def arm_probs_json(probs: np.ndarray, allowed: np.ndarray, arm_ids: Sequence[str]) -> str:
    """``{arm: p}`` over the allowed arms of one decision (the control arm always)."""
    keep = np.asarray(allowed, dtype=bool).copy()
    keep[0] = True
    return json.dumps({arm_ids[j]: round(float(probs[j]), 12) for j in np.flatnonzero(keep)}, separators=(",", ":"))
