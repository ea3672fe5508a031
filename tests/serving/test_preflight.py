"""Preflight checks and where the service's files resolve (the offerlift home, not the source tree)."""

from __future__ import annotations

from pathlib import Path

import pytest

from offerlift.features.errors import ConfigError
from offerlift.models.registry import offerlift_home, resolve_tracking_uri
from offerlift.serving.preflight import check_decision_log_url, preflight
from offerlift.serving.settings import load_settings


def test_default_files_live_in_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFERLIFT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = load_settings(overrides={"insecure": True}, environ={})
    home = (tmp_path / "home").resolve()
    assert offerlift_home() == home
    assert s.decision_log_url == f"sqlite:///{home / 'outputs' / 'serving' / 'decisions.db'}"
    assert s.online_store_path == home / "outputs" / "serving" / "online_store.db"
    assert resolve_tracking_uri().tracking_uri == f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"


def test_the_working_directory_is_the_home_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("OFFERLIFT_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    s = load_settings(overrides={"insecure": True, "online_store_path": "state/store.db"}, environ={})
    assert s.online_store_path == tmp_path.resolve() / "state" / "store.db"  # relative paths: against the home
    assert Path(s.decision_log_url.removeprefix("sqlite:///")).is_absolute()


def test_a_sqlite_tracking_uri_keeps_its_artifacts_next_to_it(tmp_path):
    reg = resolve_tracking_uri(f"sqlite:///{tmp_path / 'x' / 'mlflow.db'}")
    assert reg.artifact_root == (tmp_path / "x" / "artifacts").resolve().as_uri()


def test_preflight_creates_the_folders_the_service_writes_to(tmp_path):
    over = {
        "insecure": True,
        "decision_log_url": f"sqlite:///{tmp_path / 'a' / 'decisions.db'}",
        "online_store_path": str(tmp_path / "b" / "store.db"),
    }
    preflight(load_settings(overrides=over, environ={}), check_champion=False)
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a database URL"),
        ("nosuchdb://x/y", "no database dialect"),
        ("sqlite:////proc/none/d.db", "cannot create the folder '/proc/none'"),
        ("postgresql+psycopg://u:pw@127.0.0.1:1/db", "cannot connect to 'postgresql+psycopg://u:***@127.0.0.1:1/db'"),
    ],
)
def test_a_bad_decision_log_url_is_one_line_naming_the_setting(url, message):
    with pytest.raises(ConfigError) as err:
        check_decision_log_url(url)
    text = str(err.value)
    assert text.startswith("decision_log_url: ") and message in text and "\n" not in text


def test_a_real_postgresql_decision_log_passes_the_preflight(postgres_server):
    check_decision_log_url(postgres_server.new_database())  # driver shipped, server reachable: no error


def test_a_missing_postgresql_database_is_named(postgres_server):
    with pytest.raises(ConfigError, match=r"^decision_log_url: cannot connect to .*no_such_db"):
        check_decision_log_url(postgres_server.url("no_such_db"))
