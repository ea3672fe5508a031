"""offerlift.training: learn from experiments and logs, and judge what was learned.

- the uplift meta-learners with the scikit-learn contract (`learners`, `learners_base`) and their export to the
  scorer spec (`export`); fitting and registering a model (`train`; on many rows `train_large`, on dask
  `train_dask`); Optuna tuning (`tune`); the coupon-abuse behaviour model (`abuse_model`);
- held-out evaluation (`evaluate`), uplift metrics (`metrics`), off-policy value (`policy_value`), figures
  (`plots`, `report`), the A/B report of a campaign (`ab_report`, its page `ab_report_html`), the
  champion/challenger live test (`challenger_gate`) and the promotion gate with its off-policy safety screen
  (`promote`);
- calibration statistics computed the same way on every data source (`calibration`).

Imports `offerlift.features` and `offerlift.models`; never `offerlift.serving` (the registry is the only handoff).
"""
