"""What every results file records: the machine, the versions and the date."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("offerlift", "numpy", "pandas", "lightgbm", "scikit-learn", "mlflow", "bentoml", "pyarrow")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_md(extra: dict[str, str] | None = None) -> str:
    """A markdown block with machine, versions and date."""
    versions = []
    for p in PACKAGES:
        try:
            versions.append(f"{p} {version(p)}")
        except PackageNotFoundError:
            continue
    lines = [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- python {platform.python_version()}; " + ", ".join(versions),
    ]
    lines += [f"- {k}: {v}" for k, v in (extra or {}).items()]
    return "\n".join(lines)
