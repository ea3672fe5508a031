"""Checks made once before any worker starts: the folders the service writes to, the decision log, the champion.

`offerlift serve` runs `preflight` in its own process, and the service runs it again in BentoML's deployment hook
(`bentoml serve TAG` has no `offerlift serve` in front of it). A failure is one `ConfigError` or `ModelError` line
that names the setting, so the command exits at once instead of letting BentoML restart dying workers forever.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from offerlift.features.errors import ConfigError
from offerlift.models.registry import require_alias
from offerlift.serving.settings import ServeSettings

log = logging.getLogger(__name__)

#: Seconds a server database may take to accept the preflight connection.
CONNECT_TIMEOUT_S = 10


def preflight(settings: ServeSettings, check_champion: bool = True) -> None:
    """Create the service's folders, open the decision log once and (optionally) find the champion.

    Raises:
        ConfigError: a folder cannot be created, or ``decision_log_url`` is malformed, names a driver that is not
            installed, or cannot be connected to (the message names the setting).
        ModelError: no model has the champion alias in the configured registry.
    """
    state, outbox = settings.trigger_paths()
    folders = {"online_store_path": settings.online_store_path.parent}
    if settings.triggers.enabled:
        folders["triggers.state_path"] = state.parent
        folders["triggers.outbox_path"] = outbox.parent
    for name, folder in folders.items():
        _make_folder(name, folder)
    check_decision_log_url(settings.decision_log_url)
    if check_champion:
        require_alias(settings.registry_settings(), settings.registry.alias)


def _make_folder(setting: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot create the folder {str(folder)!r}: {exc.strerror or exc}") from None


def check_decision_log_url(url: str) -> None:
    """Parse `url`, load its driver and open one connection; ConfigError names ``decision_log_url`` otherwise.

    A SQLite file's folder is created first (the database file itself is created by the first connection).
    """
    try:
        parsed = sa.engine.make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"decision_log_url: {url!r} is not a database URL (e.g. sqlite:///path/decisions.db)"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _make_folder("decision_log_url", Path(parsed.database).parent)
    elif parsed.get_backend_name() in ("postgresql", "mysql"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args)
    except NoSuchModuleError:
        raise ConfigError(f"decision_log_url: SQLAlchemy knows no database dialect for {shown!r}") from None
    except ImportError as exc:
        raise ConfigError(
            f"decision_log_url: the database driver for {shown!r} is not installed ({exc}); "
            "offerlift ships psycopg for postgresql+psycopg:// URLs"
        ) from None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ConfigError(f"decision_log_url: cannot connect to {shown!r}: {detail[0] if detail else exc}") from None
    finally:
        engine.dispose()
