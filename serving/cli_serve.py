"""``offerlift serve``: validate the settings, check that a champion exists, then run the BentoML service.

The integrator wires `serve` to ``offerlift serve [--port PORT] [--insecure] [--config FILE]``. Errors that stop
the start (no API key without ``--insecure``, an invalid config, no champion in the registry) are raised as
ConfigError / ModelError with a message that says how to fix them, before any worker is spawned.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from offerlift.models.registry import HOME_ENV, offerlift_home
from offerlift.serving.preflight import preflight
from offerlift.serving.settings import ServeSettings, load_settings

log = logging.getLogger(__name__)

SERVICE = "offerlift.serving.service:OfferLift"
SERVICE_NAME = "OfferLift"
NOTHING = "^$"  # an excluded-URL pattern that matches no URL


def prepare(
    port: int | None = None,
    insecure: bool = False,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServeSettings:
    """Validated settings for a start, after the preflight checks (`offerlift.serving.preflight`): the service's
    folders exist, the decision log opens, and the champion alias exists (ModelError if not)."""
    extra: dict[str, Any] = dict(overrides or {})
    if port is not None:
        extra["port"] = port
    if insecure:
        extra["insecure"] = True
    settings = load_settings(config, overrides=extra, environ=environ)
    preflight(settings)
    return settings


def command(settings: ServeSettings) -> list[str]:
    """The ``bentoml serve`` command line for these settings (always a loopback or explicit host)."""
    bentoml = Path(sys.executable).with_name("bentoml")
    return [str(bentoml), "serve", SERVICE, "--host", settings.host, "--port", str(settings.port)]


def environment(settings: ServeSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker environment: validated settings as JSON, worker and thread counts, one OpenMP thread."""
    env = dict(os.environ if base is None else base)
    env.update(settings.to_env())
    env[HOME_ENV] = str(offerlift_home())  # the workers resolve the registry where this process did
    services: dict[str, Any] = {SERVICE_NAME: {"workers": settings.workers, "threads": settings.threads}}
    if settings.tuning.trace_api:  # trace every route (the service excludes the API routes by default)
        services[SERVICE_NAME]["tracing"] = {"excluded_urls": NOTHING}
    env["BENTOML_CONFIG_OVERRIDES"] = json.dumps({"services": services})
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env


def serve(
    port: int | None = None,
    insecure: bool = False,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> int:
    """Run the decision service on 127.0.0.1 until it is stopped; returns its exit code.

    Raises:
        ConfigError: no ``$OFFERLIFT_API_KEY`` without `insecure`, invalid settings, a folder that cannot be
            created or a decision log that cannot be opened (names the field).
        ModelError: no model has the champion alias (says how to train and promote one).
    """
    settings = prepare(port, insecure, config, overrides)
    if settings.insecure:
        log.warning("serving WITHOUT an API key (--insecure): anyone who can reach the port can decide")
    log.info(
        "serving %s@%s on http://%s:%d with %d workers",
        settings.registry.model_name,
        settings.registry.alias,
        settings.host,
        settings.port,
        settings.workers,
    )
    proc = subprocess.Popen(command(settings), cwd=offerlift_home(), env=environment(settings))
    return wait_or_stop(proc)


def wait_or_stop(proc: subprocess.Popen, grace_s: float = 30.0) -> int:
    """Wait for the server; on Ctrl-C or SIGTERM stop it gracefully, then kill whatever is left.

    BentoML's arbiter starts its workers in sessions of their own, so a signal to our process group does not
    reach them and killing only the arbiter would leave them running: they are collected by pid here.
    """
    import psutil

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        log.info("stopping the service ...")
        family = _family(proc, psutil)
        proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=grace_s)
        for p in alive:
            p.kill()
        return proc.wait()
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _family(proc: subprocess.Popen, psutil: Any) -> list[Any]:
    try:
        parent = psutil.Process(proc.pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
