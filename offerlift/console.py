"""What the `offerlift` command shows and what it only logs.

By default the terminal gets offerlift's own progress lines (one per stage or fold, with the time it took or is
expected to take) and its warnings; everything else that runs underneath -- MLflow's INFO lines, warnings and
"Successfully registered" prints, alembic's table creation, Python warnings of any library, every module's INFO
line -- goes only to the log file ``outputs/logs/offerlift.log`` of the offerlift home. ``--verbose`` shows all of it
(at DEBUG) on the terminal as well. MLflow's artifact download bars are off.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_FILE = Path("outputs") / "logs" / "offerlift.log"
_MARK = "_offerlift_console"


class _OursOnly(logging.Filter):
    """offerlift's own records (INFO and up) on the terminal; nothing of other libraries."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "offerlift" or record.name.startswith("offerlift.")


class _Console(logging.Formatter):
    """``HH:MM:SS message`` for progress lines, ``warning: message`` for warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {record.getMessage()}"
        return f"{self.formatTime(record, '%H:%M:%S')} {record.getMessage()}"


def log_file() -> Path:
    """The log file of this run (in the offerlift home)."""
    from offerlift.models.registry import offerlift_home

    return offerlift_home() / LOG_FILE


def setup(verbose: bool = False, file: Path | None = None) -> Path:
    """Route logging for one command: the terminal as described above, everything at INFO (DEBUG with `verbose`) to
    the log file. Returns the log file. Safe to call twice (handlers are replaced, not added)."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow would attach its own stderr handler
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, _MARK, False)]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    path = file or log_file()
    handlers: list[logging.Handler] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path, delay=True, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(to_file)
    except OSError:  # a read-only folder: the terminal still works
        pass
    to_term = logging.StreamHandler(sys.stderr)
    if verbose:
        to_term.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        to_term.setFormatter(_Console())
        to_term.addFilter(_OursOnly())
    handlers.append(to_term)
    for h in handlers:
        setattr(h, _MARK, True)
        root.addHandler(h)
    logging.captureWarnings(True)  # warnings.warn of every library: a log record of "py.warnings"
    for name in ("mlflow", "alembic", "optuna", "bentoml", "httpx", "urllib3", "numba"):
        logger = logging.getLogger(name)
        if name == "mlflow":  # MLflow configured its own stderr handler when imported before this setup
            logger.handlers = [h for h in logger.handlers if getattr(h, _MARK, False)]
        logger.propagate = True
    return path


def route_mlflow_prints() -> None:
    """MLflow prints some events (``Successfully registered model``, ``Created version``) straight to its stream:
    send them to the log records of the "mlflow" logger instead (the terminal shows them only with --verbose)."""
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    if getattr(stream, _MARK, False):
        return
    logger = logging.getLogger("mlflow_prints")  # not "mlflow": a handler writing to this stream would loop

    def write(text: str) -> None:
        if text.strip():
            logger.info("%s", text.strip())

    stream.write = write  # type: ignore[method-assign]
    setattr(stream, _MARK, True)


def route_optuna() -> None:
    """Optuna's trial lines through our handlers (log file; terminal only with --verbose)."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
