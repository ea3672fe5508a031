"""The `offerlift` command-line tool. Every command calls the same functions as the Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from features.errors import OfferliftError

app = typer.Typer(help="offerlift: uplift models and decisions for coupon and offer marketing.", no_args_is_help=True)
data_app = typer.Typer(help="Load and inspect data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

log = logging.getLogger("offerlift")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


@data_app.command("summary")
def data_summary(
    dataset: Annotated[str, typer.Option(help="Data set: hillstrom, starbucks or simulated.")],
    path: Annotated[Path | None, typer.Option(help="Folder or file of the data (real data sets).")] = None,
    customers: Annotated[int, typer.Option(help="Customers in the simulated world.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Units, arms, control arm and the main outcome per arm of a data set."""
    from offerlift.api import dataset_summary

    summary = dataset_summary(dataset, path=path, n_customers=customers, seed=seed)
    if as_json:
        _print_json(summary)
        return
    typer.echo(f"{summary['dataset']}: {summary['rows']:,} units, control arm {summary['control_arm']!r}")
    for arm, s in summary["per_arm"].items():
        typer.echo(f"  {arm:<28} {s['units']:>8,} units  mean {summary['main_outcome']} {s['outcome_mean']:.4f}")
    if summary.get("excluded"):
        typer.echo(f"  excluded rows: {summary['excluded']}")


@app.command("run")
def run(
    customers: Annotated[int, typer.Option(help="Customers in the simulated world.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The main job on the embedded defaults: load the three data sources, build features, summarize."""
    from offerlift.api import main_job

    result = main_job(n_customers=customers, seed=seed)
    if as_json:
        _print_json(result)
        return
    for name, s in result["datasets"].items():
        if "error" in s:
            typer.echo(f"{name}: not available ({s['error']})")
            continue
        typer.echo(
            f"{name}: {s['rows']:,} units, {len(s['arms'])} arms, {len(s['features'])} features, "
            f"control share {s['control_share']:.3f}, loaded in {s['seconds']:.1f}s"
        )


def main() -> None:
    """Console entry point: turns project errors into a one-line message and exit code 2."""
    try:
        app()
    except OfferliftError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from exc
