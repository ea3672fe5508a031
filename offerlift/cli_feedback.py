"""The commands of the feedback loop on the service's own decision log (registered on `offerlift.cli.app`):
``outcomes``, ``join``, ``report``, ``evaluate``, ``retrain``, ``promote`` and ``rollback``.

Each calls one function of `offerlift.feedback`, `offerlift.lifecycle` or `offerlift.promotion`, prints a short
summary (or one JSON object with ``--json``) and is safe to run twice. The decision log is ``--log URL`` or the
one the service configuration names (``--config FILE``, else the embedded default), the registry the one of the
service configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

LogOpt = Annotated[
    str | None,
    typer.Option(
        "--log", help="Decision log URL (sqlite:///path or postgresql+psycopg://...); default: the service's."
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Service config YAML: its decision log and registry (default: embedded)."),
]
WindowOpt = Annotated[float, typer.Option("--window-hours", help="Attribution window after each decision, hours.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
CampaignOpt = Annotated[str | None, typer.Option(help="Campaign name (default: the only one in the log).")]
StartOpt = Annotated[str | None, typer.Option(help="First decision time: unix seconds or ISO 8601 (UTC if naive).")]
EndOpt = Annotated[str | None, typer.Option(help="End of the period (exclusive): unix seconds or ISO 8601.")]


def _out(payload: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    else:
        for line in lines:
            typer.echo(line)


def _ci(d: dict[str, Any], digits: int = 2) -> str:
    return f"{d['estimate']:+,.{digits}f} [{d['ci_low']:+,.{digits}f}, {d['ci_high']:+,.{digits}f}]"


def outcomes_cmd(
    file: Annotated[Path, typer.Option("--file", help="Outcome events (CSV or Parquet, canonical columns).")],
    log: LogOpt = None,
    config: ConfigOpt = None,
    window_hours: WindowOpt = 168.0,
    as_json: JsonOpt = False,
) -> None:
    """Store outcome events from a file in the decision log (idempotent by event_id).

    Columns: event_id, customer_id, ts (unix seconds or ISO 8601), visit, buy, spend, redeem, and optionally
    decision_id. An event naming a decision the log does not have refuses the whole file."""
    from offerlift.feedback import record_outcomes

    c = record_outcomes(file, log=log, window_hours=window_hours, config=config)
    line = f"{c['received']:,} events: {c['new']:,} new, {c['duplicate']:,} duplicate, "
    line += f"{c['unattributed']:,} unattributed, {c['late']:,} late (for decisions joined already)"
    _out(c, as_json, [line])


def join_cmd(
    log: LogOpt = None,
    config: ConfigOpt = None,
    window_hours: WindowOpt = 168.0,
    as_of: Annotated[
        str | None, typer.Option(help="Join decisions whose window closed by then (default: now).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Join outcomes to decisions in the attribution window (last touch, each event once) and keep the result."""
    from offerlift.feedback import join_outcomes

    c = join_outcomes(log=log, window_hours=window_hours, as_of=as_of, config=config)
    _out(c, as_json, [f"joined {c['joined']:,} decisions ({c['updated']:,} updated by late events, "
                      f"{c['unchanged']:,} unchanged, {c['open']:,} with an open window); events attributed "
                      f"{c['events_attributed']:,}, unattributed {c['events_unattributed']:,}"])  # fmt: skip


def report_cmd(
    campaign: CampaignOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    out: Annotated[Path | None, typer.Option(help="Folder of the HTML and JSON report.")] = None,
    log: LogOpt = None,
    config: ConfigOpt = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log the report to MLflow.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The A/B report of a campaign and period from the joined decisions: totals with CIs, per-arm effects."""
    from offerlift.feedback import campaign_report

    r = campaign_report(campaign, start, end, log=log, out=out, config=config, log_to_mlflow=not no_mlflow)
    t = r["totals"]
    _out(r, as_json, [
        f"campaign {r['campaign']}: {r['decisions']:,} decisions, {r['period'].get('start_iso')} to "
        f"{r['period'].get('end_iso')}",
        f"incremental profit {_ci(t['profit'], 0)}, ROI {_ci(t['roi'])}, incremental buyers {_ci(t['buyers'], 0)}, "
        f"revenue {_ci(t['revenue'], 0)}; coupon cost {t['coupon_cost']:,.0f}, contact cost {t['contact_cost']:,.0f}",
        f"sample ratio {'OK' if r['srm']['ok'] else 'MISMATCH'}; report {r['paths']['html']}",
    ])  # fmt: skip


def evaluate_cmd(
    model: Annotated[str, typer.Option(help="Model version, alias or models:/ URI to value.")] = "challenger",
    against: Annotated[str, typer.Option(help="The reference policy's model (version or alias).")] = "champion",
    explore: Annotated[float, typer.Option(help="Exploration share of the valued policy.")] = 0.0,
    price: Annotated[float, typer.Option(help="Price per unit of expected cost in its score.")] = 0.0,
    arms: Annotated[str | None, typer.Option(help="Comma-separated arms it may use (default: all).")] = None,
    split: Annotated[str, typer.Option(help="judge (never trained on), train or all.")] = "judge",
    campaign: CampaignOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    boot: Annotated[int, typer.Option(help="Bootstrap resamples of the CIs.")] = 500,
    log: LogOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Off-policy value of a model's policy on the logged decisions, against the champion, with CIs."""
    from offerlift.lifecycle import PolicySettings, evaluate_policy

    settings = PolicySettings(explore, price, tuple(a.strip() for a in arms.split(",")) if arms else ())
    r = evaluate_policy(model, log, against, settings, campaign, start, end, split, boot, config=config)
    lines = [f"v{r['model_version']} against v{r['reference_version']} on {r['decisions']:,} logged decisions "
             f"({r['split']} split); realized profit per decision:"]  # fmt: skip
    for est, e in r["estimates"].items():
        d = e["difference"]
        lines.append(f"  {est:>5}: {d['value_a']:+.4f} vs {d['value_b']:+.4f}, difference {d['diff']:+.4f} "
                     f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]")  # fmt: skip
    floors = {p["policy"]: p["value"] for p in r["estimates"]["dr"]["policies"] if p["is_baseline"]}
    lines.append("  floors (DR): " + ", ".join(f"{k} {v:+.4f}" for k, v in floors.items()))
    _out(r, as_json, lines)


def retrain_cmd(
    experiment: Annotated[
        Path | None, typer.Option(help="Also train on this experiment file (units with the model's features).")
    ] = None,
    learner: Annotated[str | None, typer.Option(help="s, t, x or dr (default: the champion's recipe).")] = None,
    folds: Annotated[int, typer.Option(help="Held-out folds of the evaluation (0: none).")] = 3,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    campaign: CampaignOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    log: LogOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a challenger on the logged decisions (point-in-time features, logged propensities) and register it."""
    from offerlift.lifecycle import retrain

    r = retrain(log, experiment, learner, None, folds, seed, campaign, start, end, config)
    what = "registered" if r["new"] else "already registered (same data and recipe)"
    _out(r, as_json, [f"challenger {r['model_uri']} {what}, trained on {r['units']:,} units"])


def promote_cmd(
    version: Annotated[
        str | None, typer.Option(help="Make this version the champion by hand (skips the gate; logged).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (logged with a manual promotion).")] = "manual promotion",
    challenger: Annotated[str, typer.Option(help="The version or alias the gate judges.")] = "challenger",
    min_gain: Annotated[float, typer.Option(help="Gain per decision the gate's bound must beat.")] = 0.0,
    campaign: CampaignOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    log: LogOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Promote the challenger through the gate on the logged decisions, or a version by hand (--version N)."""
    from offerlift.promotion import promote_challenger, promote_version

    if version is not None:
        r = promote_version(version, reason, log=log, config=config)
        line = (f"champion is now v{r['champion_version']} (was v{r['previous_version']})" if r["changed"]
                else r["reason"])  # fmt: skip
        _out(r, as_json, [line])
        return
    r = promote_challenger(log, challenger, campaign, start, end, min_gain, config)
    v = r.get("verdict") or {}
    detail = f": {v.get('reason', r.get('reason', ''))}"
    head = "promoted" if r["promoted"] else "kept the champion"
    _out(r, as_json, [f"v{r['challenger_version']} vs champion v{r['champion_version']}: {head}{detail}"])


def rollback_cmd(
    reason: Annotated[str, typer.Option(help="Why (logged).")] = "rollback",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the previous champion the champion again (logged to MLflow)."""
    from offerlift.promotion import rollback

    r = rollback(reason, config)
    _out(r, as_json, [f"champion is now v{r['champion_version']} (was v{r['previous_version']})"])


def register(app: typer.Typer) -> None:
    """Add the commands to the `offerlift` app."""
    for name, fn in (
        ("outcomes", outcomes_cmd),
        ("join", join_cmd),
        ("report", report_cmd),
        ("evaluate", evaluate_cmd),
        ("retrain", retrain_cmd),
        ("promote", promote_cmd),
        ("rollback", rollback_cmd),
    ):
        app.command(name)(fn)
