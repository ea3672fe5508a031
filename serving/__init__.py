"""offerlift.serving: decide, for one customer or millions, with the champion the registry hands over.

- the pure decision policy (`policy`), its business rules (`rules`) and the service's settings (`settings`);
- the in-process decision engine of the service (`decider`) and its many-customer form (`decide_many`);
- the BentoML service (`service`, started by `cli_serve`; `preflight` checks its settings before any worker starts;
  `http_edge`: authentication, strict bodies, the OpenAPI spec and docs page) and its event stream (`events_api`);
- the decision log with budgets and caps (`decision_log`) and what each decision was made on (`snapshot`),
  outcomes and the attribution join kept in it (`feedback_log`), the pacing price (`pacing`) and the price of a
  budget over a whole population (`budget`);
- batch decisions over a customer file (`batch`; on dask `batch_dask`) and extra online-store columns
  (`store_columns`);
- real-time triggers (`triggers`, with `trigger_rules`, `trigger_state`, `trigger_decide`, `trigger_channels`) and
  the early warning (`monitor`, `monitor_metrics`, `monitor_campaigns`).

Imports `offerlift.features` and `offerlift.models` (the champion comes from the registry); never
`offerlift.training`.
"""
