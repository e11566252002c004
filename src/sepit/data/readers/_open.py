"""Open plain, gzip, xz or bz2 text by magic bytes, and stream lines that survive a truncated archive.

Compression is sniffed from the first bytes, never the file name: users rename files. A compressed stream that cannot
be read at its very start makes the whole file unusable (:class:`~sepit.errors.InputError`); one that breaks later
(a truncated download) keeps every complete line read so far and records the problem in the caller's
:class:`~sepit.data.readers.skiplog.SkipLog`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sepit.errors import InputError

from .skiplog import SkipLog

_GZIP = b"\x1f\x8b"
_XZ = b"\xfd7zXZ\x00"
_BZ2 = b"BZh"
# Errors a decompressor raises on corrupt or cut-short input.
DECOMPRESS_ERRORS = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, OSError, ValueError)


def compression_of(path: str | Path) -> str:
    """``"gzip"``, ``"xz"``, ``"bz2"`` or ``""`` (plain) from the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a file") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror or e})") from None
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_XZ):
        return "xz"
    if head.startswith(_BZ2):
        return "bz2"
    return ""


def open_binary(path: str | Path) -> IO[bytes]:
    """A binary stream of the decompressed content; raises InputError if the first block cannot be decoded."""
    kind = compression_of(path)
    # The stream is returned to the caller, who closes it (so no `with` here).
    if kind == "gzip":
        raw: IO[bytes] = gzip.open(path, "rb")  # noqa: SIM115
    elif kind == "xz":
        raw = lzma.open(path, "rb")  # noqa: SIM115
    elif kind == "bz2":
        raw = bz2.open(path, "rb")  # noqa: SIM115
    else:
        return open(path, "rb")
    try:
        raw.peek(1)  # type: ignore[attr-defined]  # forces the header and first block through the decoder
    except DECOMPRESS_ERRORS as e:
        raw.close()
        raise InputError(path, f"corrupt or truncated {kind} data at the start ({e})") from None
    return raw


def open_text(path: str | Path) -> IO[str]:
    """Open ``path`` as UTF-8 text whatever its compression (gzip/xz/bz2 sniffed by magic bytes).

    Undecodable bytes become U+FFFD rather than an exception halfway through a 500k-entry file.
    """
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace", newline=None)


class LineSource:
    """Iterate the lines of a (possibly compressed) text file, surviving truncation.

    After iteration, ``truncated`` says whether the stream broke before its end (the partial last line is
    dropped and recorded in ``skips`` as ``"truncated input"``) and ``lines`` how many were yielded. Readers use
    ``truncated`` to drop a record that the break cut in half.
    """

    def __init__(self, path: str | Path, skips: SkipLog | None = None) -> None:
        self.path = Path(path)
        self.skips = skips if skips is not None else SkipLog()
        self.truncated = False
        self.lines = 0

    def __iter__(self) -> Iterator[str]:
        with open_text(self.path) as f:
            prev: str | None = None
            try:
                for line in f:
                    if prev is not None:
                        self.lines += 1
                        yield prev
                    prev = line
            except DECOMPRESS_ERRORS as e:
                self.truncated = True
                if self.lines == 0 and prev is None:
                    raise InputError(self.path, f"compressed data is corrupt or truncated ({e})") from None
                # The line in hand may be cut short by the break: keep it only if it ended cleanly.
                if prev is not None and prev.endswith("\n"):
                    self.lines += 1
                    yield prev
                self.skips.add("truncated input", f"{self.path.name}: stream ends after {self.lines} lines ({e})")
                return
            if prev is not None:
                self.lines += 1
                yield prev
