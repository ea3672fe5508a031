"""The `offerlift` command-line tool. Every command calls the same functions as the Python API."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from offerlift import cli_feedback as _feedback_commands
from offerlift.features.errors import OfferliftError

app = typer.Typer(help="offerlift: uplift models and decisions for coupon and offer marketing.", no_args_is_help=True)
data_app = typer.Typer(help="Load and inspect data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

log = logging.getLogger("offerlift")

#: Customers of the simulated world for train, tune and data balance (the loader's default).
SIMULATED_CUSTOMERS = 20_000
CustomersOpt = Annotated[int, typer.Option(help="Customers of the simulated world (--dataset simulated).")]
WorldOpt = Annotated[
    str | None,
    typer.Option(help="World of --dataset simulated: a preset (default, low-signal) or a world spec file."),
]


def _simulated(dataset: str | None, customers: int, seed: int, world: str | None = None) -> dict[str, Any]:
    """Loader options of the simulated world (none for the other data sets); --world needs --dataset simulated."""
    if dataset != "simulated":
        if world is not None:
            raise typer.BadParameter(f"--world applies to --dataset simulated only, not {dataset!r}")
        return {}
    return {"n_customers": customers, "seed": seed, "world": world}


def _setup_logging(verbose: bool, command: str | None = None) -> None:
    """offerlift's progress lines on the terminal, everything else in the log file (`offerlift.console`)."""
    from offerlift import console

    console.setup(verbose)
    if command in ("train", "tune", "run", "loop", "score", "batch"):
        console.route_mlflow_prints()
    if command in ("tune", "run", "loop"):
        console.route_optuna()


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Every library's log lines and warnings on the terminal too.")
    ] = False,
) -> None:
    """Quiet by default: progress lines and warnings of offerlift; all the rest in outputs/logs/offerlift.log."""
    _setup_logging(verbose, ctx.invoked_subcommand)


@data_app.command("summary")
def data_summary(
    dataset: Annotated[str, typer.Option(help="Data set: hillstrom, starbucks or simulated.")],
    path: Annotated[Path | None, typer.Option(help="Folder or file of the data (real data sets).")] = None,
    customers: Annotated[int, typer.Option(help="Customers in the simulated world.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    world: WorldOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Units, arms, control arm and the main outcome per arm of a data set."""
    from offerlift.api import dataset_summary

    _simulated(dataset, customers, seed, world)  # refuses --world on a real data set
    summary = dataset_summary(dataset, path=path, n_customers=customers, seed=seed, world=world)
    if as_json:
        _print_json(summary)
        return
    typer.echo(f"{summary['dataset']}: {summary['rows']:,} units, control arm {summary['control_arm']!r}")
    for arm, s in summary["per_arm"].items():
        typer.echo(f"  {arm:<28} {s['units']:>8,} units  mean {summary['main_outcome']} {s['outcome_mean']:.4f}")
    if summary.get("excluded"):
        typer.echo(f"  excluded rows: {summary['excluded']}")


@data_app.command("balance")
def data_balance(
    dataset: Annotated[str, typer.Option(help="Data set: hillstrom, starbucks or simulated.")],
    path: Annotated[Path | None, typer.Option(help="Folder or file of the data (real data sets).")] = None,
    top: Annotated[int, typer.Option(help="Show the features with the largest imbalance.")] = 15,
    customers: CustomersOpt = SIMULATED_CUSTOMERS,
    seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    world: WorldOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Covariate balance across arms: standardized mean differences (pooled SD) of each feature vs control."""
    from offerlift.api import load

    table = (
        load(dataset, path=path, **_simulated(dataset, customers, seed, world))
        .balance()
        .sort_values("max_abs_smd", ascending=False)
    )
    if as_json:
        _print_json({"max_abs_smd": float(table["max_abs_smd"].max()), "table": table.head(top).to_dict("index")})
        return
    typer.echo(f"largest |SMD| over all features and arms: {table['max_abs_smd'].max():.4f} (|SMD| < 0.1: balanced)")
    typer.echo(table.head(top).round(4).to_string())


@app.command("loop")
def loop_cmd(
    rounds: Annotated[int, typer.Option(help="Rounds of decide -> observe -> retrain -> test -> promote.")] = 6,
    customers: Annotated[
        int, typer.Option(help="Customers of the simulated world (each decided once a round).")
    ] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the world and the loop.")] = 0,
    learner: Annotated[str, typer.Option(help="Meta-learner of the challengers: s, t, x or dr.")] = "s",
    world: Annotated[str | None, typer.Option(help="World preset (default, low-signal) or a world spec file.")] = None,
    workdir: Annotated[Path, typer.Option(help="Where the decision log, store and reports go.")] = Path("outputs/loop"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The closed loop on the simulated world, through the service's decision code path."""
    from offerlift.api import loop

    progress = None if as_json else typer.echo
    result = loop(rounds=rounds, customers=customers, seed=seed, learner=learner, workdir=workdir, world=world,
                  progress=progress)  # fmt: skip
    if as_json:
        _print_json(result)
        return
    _print_loop(result)


def _print_loop(result: dict[str, Any]) -> None:
    from offerlift.loop import rounds_table

    typer.echo("")
    typer.echo(rounds_table(result))
    typer.echo("")
    typer.echo(result["verdict"])
    typer.echo(f"finished in {result['seconds']:.0f}s; last A/B report: {result['report']}")


@app.command("run")
def run(
    rounds: Annotated[int, typer.Option(help="Rounds of the loop (round 0 is the random policy).")] = 6,
    customers: Annotated[int, typer.Option(help="Customers of the simulated world.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The main job on the embedded defaults: summarize the data sources, then run the closed loop."""
    from offerlift.api import loop, main_job

    result = main_job(n_customers=customers, seed=seed)
    for name, s in result["datasets"].items():
        if "error" in s:
            typer.echo(f"{name}: not available ({s['error']})")
            continue
        typer.echo(
            f"{name}: {s['rows']:,} units, {len(s['arms'])} arms, {len(s['features'])} features, "
            f"control share {s['control_share']:.3f}, max |SMD| {s['max_abs_smd']:.3f}, loaded in {s['seconds']:.1f}s"
        )
    result["loop"] = loop(rounds=rounds, customers=customers, seed=seed, progress=None if as_json else typer.echo)
    if as_json:
        _print_json(result)
        return
    _print_loop(result["loop"])


@app.command("train")
def train_cmd(
    data: Annotated[Path | None, typer.Option(help="Experiment file (CSV or Parquet), one row per unit.")] = None,
    treatment: Annotated[str | None, typer.Option(help="Column with the arm of each unit.")] = None,
    control: Annotated[str | None, typer.Option(help="Label of the control arm in the treatment column.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Outcome column (0/1 or a number).")] = None,
    value: Annotated[str | None, typer.Option(help="Column with the money value of the outcome.")] = None,
    cost: Annotated[float, typer.Option(help="Cost of treating one unit.")] = 0.0,
    features: Annotated[
        str | None, typer.Option(help="Comma-separated feature columns (default: every other column).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Train on a built-in data set instead: hillstrom, starbucks, simulated.")
    ] = None,
    learner: Annotated[str, typer.Option(help="Meta-learner: s, t, x or dr.")] = "t",
    folds: Annotated[int, typer.Option(help="Folds of the held-out evaluation (0: none).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of folds, bootstrap, LightGBM and the simulated world.")] = 0,
    customers: CustomersOpt = SIMULATED_CUSTOMERS,
    world: WorldOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Train on a randomized experiment, evaluate on held-out folds, register the model in MLflow."""
    from offerlift import api

    exp = _experiment(dataset, data, treatment, control, outcome, value, cost, features, customers, seed, world)
    result = api.train(exp, learner=learner, n_folds=folds, seed=seed)
    payload = {
        "model_uri": result.model_uri,
        "version": result.version,
        "run_id": result.run_id,
        "dataset": exp.name,
        "arms": exp.catalog.arm_ids,
        "metrics": result.metrics,
    }
    if as_json:
        _print_json(payload)
        return
    typer.echo(f"registered {result.model_uri} (run {result.run_id})")
    m = result.metrics
    if "ips_vs_control" in m:
        typer.echo(
            f"held-out incremental profit per unit vs no offer: {m['ips_vs_control']:+.4f} "
            f"[{m['ips_vs_control_ci_low']:+.4f}, {m['ips_vs_control_ci_high']:+.4f}] (IPS, 95% CI); "
            f"vs best single arm: {m['ips_vs_best_arm']:+.4f} "
            f"[{m['ips_vs_best_arm_ci_low']:+.4f}, {m['ips_vs_best_arm_ci_high']:+.4f}]"
        )
    if "qini_auc_mean" in m:
        typer.echo(f"mean Qini AUC (scikit-uplift definition) over treatment arms: {m['qini_auc_mean']:.4f}")


@app.command("score")
def score_cmd(
    model: Annotated[str, typer.Option(help="Model URI: models:/offerlift@champion, models:/offerlift/3, ...")],
    data: Annotated[Path, typer.Option(help="Rows to score (CSV or Parquet) with the model's feature columns.")],
    out: Annotated[Path, typer.Option(help="Output CSV: uplift_<arm> per treatment arm and recommended_arm.")],
) -> None:
    """Score a file with a registered model, one output row per input row, in input order."""
    from offerlift import api
    from offerlift.models.registry import resolve_tracking_uri

    if model.startswith("models:/") or model.startswith("runs:/"):
        import mlflow

        mlflow.set_tracking_uri(resolve_tracking_uri().tracking_uri)
    scored = api.score_file(model, data, out)
    typer.echo(f"wrote {len(scored):,} rows to {out}")


def _experiment(
    dataset: str | None,
    data: Path | None,
    treatment: str | None,
    control: str | None,
    outcome: str | None,
    value: str | None,
    cost: float,
    features: str | None,
    customers: int = SIMULATED_CUSTOMERS,
    seed: int = 0,
    world: str | None = None,
):
    from offerlift import api

    if dataset is not None:
        return api.load(dataset, **_simulated(dataset, customers, seed, world))
    if world is not None:
        raise typer.BadParameter("--world applies to --dataset simulated only")
    if data is not None and treatment and control is not None and outcome:
        cols = [c.strip() for c in features.split(",")] if features else None
        return api.load_experiment_file(data, treatment, control, outcome, value=value, cost=cost, features=cols)
    raise typer.BadParameter("give --dataset NAME, or --data FILE with --treatment, --control and --outcome")


@app.command("tune")
def tune_cmd(
    dataset: Annotated[str | None, typer.Option(help="Built-in data set: hillstrom, starbucks, simulated.")] = None,
    data: Annotated[Path | None, typer.Option(help="Experiment file (CSV or Parquet), one row per unit.")] = None,
    treatment: Annotated[str | None, typer.Option(help="Column with the arm of each unit.")] = None,
    control: Annotated[str | None, typer.Option(help="Label of the control arm.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Outcome column.")] = None,
    value: Annotated[str | None, typer.Option(help="Column with the money value of the outcome.")] = None,
    cost: Annotated[float, typer.Option(help="Cost of treating one unit.")] = 0.0,
    features: Annotated[str | None, typer.Option(help="Comma-separated feature columns.")] = None,
    trials: Annotated[int, typer.Option(help="Trials to run (added to a resumed study's).")] = 20,
    objective: Annotated[str, typer.Option(help="policy_value (held-out IPS) or qini.")] = "policy_value",
    folds: Annotated[int, typer.Option(help="Held-out folds per trial.")] = 3,
    study: Annotated[str | None, typer.Option(help="Study name; the same name resumes the study.")] = None,
    seed: Annotated[int, typer.Option(help="Seed (also of the simulated world).")] = 0,
    customers: CustomersOpt = SIMULATED_CUSTOMERS,
    world: WorldOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Tune learner and LightGBM parameters with Optuna on a held-out uplift objective; register the best."""
    from offerlift.models.registry import resolve_tracking_uri
    from offerlift.training.tune import tune, tune_cli_payload

    exp = _experiment(dataset, data, treatment, control, outcome, value, cost, features, customers, seed, world)
    result = tune(
        exp,
        n_trials=trials,
        objective=objective,
        n_folds=folds,
        seed=seed,
        study_name=study,
        registry=resolve_tracking_uri(),
    )
    payload = tune_cli_payload(result)
    if as_json:
        _print_json(payload)
        return
    for k, v in payload.items():
        typer.echo(f"{k}: {v}")


@app.command("serve")
def serve_cmd(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default from the config: 3000).")] = None,
    insecure: Annotated[bool, typer.Option(help="Run without an API key (never in production).")] = False,
    config: Annotated[Path | None, typer.Option(help="Service config YAML (default: serving/config.yaml).")] = None,
) -> None:
    """Start the decision service (BentoML) with the champion model; the API key comes from $OFFERLIFT_API_KEY."""
    from offerlift.serving.cli_serve import serve

    raise typer.Exit(serve(port=port, insecure=insecure, config=config))


@app.command("batch")
def batch_cmd(
    model: Annotated[str, typer.Option(help="Model URI, e.g. models:/offerlift@champion.")],
    customers: Annotated[Path, typer.Option(help="Customer file (Parquet) with the model's feature columns.")],
    out: Annotated[Path, typer.Option(help="Output Parquet: one decision per customer.")],
    budget: Annotated[float | None, typer.Option(help="Total expected cost allowed (Lagrangian allocation).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the exploration draws.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Decide for every customer of a file with the service's policy, streaming in chunks."""
    from offerlift.models.registry import resolve_tracking_uri
    from offerlift.serving.batch import run_batch

    if model.startswith(("models:/", "runs:/")):
        import mlflow

        mlflow.set_tracking_uri(resolve_tracking_uri().tracking_uri)
    summary = run_batch(model, customers, out, budget=budget, seed=seed)
    if as_json:
        _print_json(summary)
        return
    for k, v in summary.items():
        typer.echo(f"{k}: {v}")


EventsOpt = Annotated[
    Path | None, typer.Option(help="Event file (canonical events, .parquet or .csv); default: simulated.")
]
CustomersFileOpt = Annotated[
    Path | None, typer.Option("--customers-file", help="Customer table (needed with --events).")
]
ToStoreOpt = Annotated[
    Path | None,
    typer.Option(help="Merge the columns into this online store (SQLite), for the service's segment/abuse rules."),
]
AtOpt = Annotated[
    float | None, typer.Option(help="Point in time (hours); default: 0 on simulated data, else after the last event.")
]


@app.command("segments")
def segments_cmd(
    events: EventsOpt = None,
    customers_file: CustomersFileOpt = None,
    customers: Annotated[int, typer.Option(help="Customers of the simulated world.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    at: AtOpt = None,
    by: Annotated[str, typer.Option(help="Report by this segment column.")] = "rfm_segment",
    out: Annotated[Path | None, typer.Option(help="Write the per-customer table here.")] = None,
    to_store: ToStoreOpt = None,
) -> None:
    """RFM scores, lifecycle stages, price sensitivity, channel affinity and tags per customer."""
    from offerlift.automation import run_segments

    _print_json(
        run_segments(events, customers_file, n_customers=customers, seed=seed, at=at, by=by, out=out, to_store=to_store)
    )


@app.command("abuse")
def abuse_cmd(
    events: EventsOpt = None,
    customers_file: CustomersFileOpt = None,
    customers: Annotated[int, typer.Option(help="Customers of the simulated world.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    at: AtOpt = None,
    exclude_at: Annotated[float, typer.Option(help="Risk at which a customer gets no coupon.")] = 0.8,
    cap_at: Annotated[float, typer.Option(help="Risk at which coupons are capped.")] = 0.5,
    cap_value: Annotated[float, typer.Option(help="Largest coupon for capped customers.")] = 5.0,
    out: Annotated[Path | None, typer.Option(help="Write the per-customer risk table here.")] = None,
    to_store: ToStoreOpt = None,
) -> None:
    """Coupon-abuse risk per customer (shared devices and payment accounts, redemption without purchases)."""
    from offerlift.automation import run_abuse

    _print_json(
        run_abuse(
            events,
            customers_file,
            n_customers=customers,
            seed=seed,
            at=at,
            exclude_at=exclude_at,
            cap_at=cap_at,
            cap_value=cap_value,
            out=out,
            to_store=to_store,
        )
    )


@app.command("monitor")
def monitor_cmd(
    events: EventsOpt = None,
    customers_file: CustomersFileOpt = None,
    customers: Annotated[int, typer.Option(help="Customers of the simulated world.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    config: Annotated[Path | None, typer.Option(help="Monitor rules YAML (metric, dimension, campaign).")] = None,
    log: Annotated[Path | None, typer.Option("--log", help="JSON-lines log of alerts, starts and stops.")] = None,
) -> None:
    """Early warning: hourly metrics by dimension, alerts that name the dimension, campaigns that start and stop."""
    from offerlift.automation import run_monitor

    _print_json(run_monitor(events, customers_file, n_customers=customers, seed=seed, config=config, log_path=log))


@app.command("triggers")
def triggers_cmd(
    events: EventsOpt = None,
    customers_file: CustomersFileOpt = None,
    rules: Annotated[Path | None, typer.Option(help="Trigger rules YAML (default: the two built-in rules).")] = None,
    customers: Annotated[int, typer.Option(help="Customers of the simulated world.")] = 2_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    outbox: Annotated[Path, typer.Option(help="JSON-lines outbox of the file channel adapter.")] = Path(
        "outputs/triggers/outbox.jsonl"
    ),
    until: Annotated[float | None, typer.Option(help="Fire timers up to this time (hours).")] = None,
    decide: Annotated[
        str, typer.Option(help="policy: the pure policy (world scores or --fixed-arm); service: the service's Decider.")
    ] = "policy",
    service_config: Annotated[
        Path | None, typer.Option("--config", help="Service config YAML for --decide service.")
    ] = None,
    fixed_arm: Annotated[str | None, typer.Option(help="Arm every trigger offers (policy on an events file).")] = None,
) -> None:
    """Replay an event stream through real-time trigger rules; decisions go to the channel adapter's outbox."""
    from offerlift.automation import run_triggers

    _print_json(
        run_triggers(
            events,
            customers_file,
            rules=rules,
            n_customers=customers,
            seed=seed,
            outbox=outbox,
            decide=decide,
            service_config=service_config,
            fixed_arm=fixed_arm,
            until=until,
        )
    )


# the feedback loop on the service's own decision log: outcomes, join, report, evaluate, retrain, promote, rollback
_feedback_commands.register(app)


def main() -> None:
    """Console entry point: turns project errors into a one-line message and exit code 2."""
    try:
        app()
    except OfferliftError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
