"""Batch annotation: a standard set of questions answered for every protein of FASTA files / structure folders.

    sepit annotate --model DIR proteins.fasta structures/ -o annotations.jsonl

One JSON line per protein: ``{"id", "source", "length", "has_structure", "answers": {key: text},
"yes_no": {key: P(yes)}}``. The output is resumable: proteins already in it are skipped, so an interrupted run
continues where it stopped. Lines are appended and flushed one protein at a time (a whole-file atomic rewrite would
lose the point of resuming); a line cut short by a crash is dropped and redone on the next run. An existing file that
is not such an output is refused with a one-line error, never resumed from, cut or overwritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from sepit.config import read_yaml
from sepit.errors import ConfigError, GenerationStopped, InputError
from sepit.log import get_logger, progress
from sepit.paths import resources_dir
from sepit.proteins import Protein, input_files, read_proteins

log = get_logger(__name__)


@dataclass(frozen=True)
class Question:
    """One standard question: ``key`` names the output column; ``kind`` is ``open`` (text) or ``yesno`` (P(yes))."""

    key: str
    question: str
    kind: Literal["open", "yesno"] = "open"


def default_questions_path() -> Path:
    return resources_dir() / "annotate_questions.yaml"


def load_questions(path: str | Path | None = None) -> list[Question]:
    """The question set in a YAML file (default: the shipped standard set); one-line ConfigError when wrong."""
    p = Path(path) if path is not None else default_questions_path()
    data = read_yaml(p)
    unknown = set(data) - {"questions"}
    if unknown or not isinstance(data.get("questions"), list) or not data["questions"]:
        raise ConfigError(f"{p}: expected one top-level key 'questions:' with a non-empty list")
    out: list[Question] = []
    for i, q in enumerate(data["questions"]):
        if not isinstance(q, dict) or set(q) - {"key", "question", "kind"} or not {"key", "question"} <= set(q):
            raise ConfigError(f"{p}: questions[{i}] needs 'key' and 'question' (and optionally 'kind'), got {q!r}")
        kind = q.get("kind", "open")
        if kind not in ("open", "yesno"):
            raise ConfigError(f"{p}: questions[{i}].kind must be open or yesno, got {kind!r}")
        if not str(q["question"]).strip():
            raise ConfigError(f"{p}: questions[{i}] has an empty question")
        out.append(Question(str(q["key"]), str(q["question"]).strip(), kind))
    keys = [q.key for q in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"{p}: duplicate question keys {dup}")
    return out


def annotate_proteins(qa: Any, proteins: Sequence[Protein], questions: Sequence[Question], *,
                      max_new_tokens: int = 96, batch_size: int = 8,
                      should_stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
    """Answer every question about every protein; open questions are generated ``batch_size`` at a time.

    Returns one row per protein (the JSONL record without the file bookkeeping).
    """
    opens = [q for q in questions if q.kind == "open"]
    yesnos = [q for q in questions if q.kind == "yesno"]
    pairs = [(i, q) for i in range(len(proteins)) for q in opens]
    texts: list[str] = []
    for s in range(0, len(pairs), batch_size):
        if should_stop is not None and should_stop():
            raise GenerationStopped("annotation stopped before it finished")
        chunk = pairs[s:s + batch_size]
        prots, qs = [proteins[i] for i, _ in chunk], [q.question for _, q in chunk]
        options = qa.answer_options(prots, qs) if hasattr(qa, "answer_options") else None
        texts += qa.generate(prots, qa.conversations(prots, qs), max_new_tokens=max_new_tokens,
                             should_stop=should_stop, **({"options": options} if options is not None else {}))
    probs: list[float] = []
    ypairs = [(i, q) for i in range(len(proteins)) for q in yesnos]
    for s in range(0, len(ypairs), batch_size):
        chunk = ypairs[s:s + batch_size]
        probs += qa.yes_no_many([proteins[i] for i, _ in chunk], [q.question for _, q in chunk])
    rows = []
    for i, p in enumerate(proteins):
        rows.append({
            "id": p.id, "source": p.source, "length": len(p.sequence), "has_structure": p.has_structure,
            "answers": {q.key: texts[k] for k, (j, q) in enumerate(pairs) if j == i},
            "yes_no": {q.key: round(float(probs[k]), 4) for k, (j, q) in enumerate(ypairs) if j == i},
        })
        homologs = qa.homologs(p) if hasattr(qa, "homologs") else None
        if homologs is not None:  # provenance: the reference proteins whose annotations were in the prompts
            rows[-1]["homologs"] = homologs
    return rows


#: What every line of an annotation output holds (json.dumps writes "id" first); a file whose complete lines are not
#: all such records is someone else's, and is neither resumed from nor cut.
RECORD_KEYS = ("id", "answers")
_RECORD_START = b'{"id": '


def _record(raw: bytes) -> dict[str, Any] | None:
    """The annotation record on one line, None when the line is not one."""
    try:
        rec = json.loads(raw)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    ok = isinstance(rec, dict) and all(k in rec for k in RECORD_KEYS) and isinstance(rec["answers"], dict)
    return rec if ok else None


def _not_ours(out: Path, why: str) -> InputError:
    return InputError(out, f"{why}, so it is not a sepit annotate output to resume; choose another -o, or move the "
                           "file away to start over")


def done_ids(out: Path) -> set[str]:
    """Ids already written to a JSONL output of :func:`annotate_files`, to resume from.

    The file must be recognisably one: every complete line a JSON object with ``"id"`` and ``"answers"``;
    otherwise a one-line InputError, and the file is left as it is. A trailing partial line that starts like a
    record (a crash mid-write) is cut off the file and redone. ``out`` a directory: a one-line InputError.
    """
    out = Path(out)
    if out.is_dir():
        raise InputError(out, "is a directory; -o names the JSONL file to write (e.g. -o annotations.jsonl)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(out, f"{parent} is a file, not a folder; choose another -o")
            break
    if not out.exists():
        return set()
    what = f"a JSON object with {' and '.join(repr(k) for k in RECORD_KEYS)}"
    ids: set[str] = set()
    good = 0
    partial = b""
    try:
        with open(out, "rb") as f:
            if f.read(len(_RECORD_START)) not in (b"", _RECORD_START):  # at once, without reading a big file
                raise _not_ours(out, f"line 1 is not an annotation record ({what})")
            f.seek(0)
            for n, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    partial = raw
                    break
                rec = _record(raw)
                if rec is None:
                    raise _not_ours(out, f"line {n} is not an annotation record ({what})")
                ids.add(str(rec["id"]))
                good += len(raw)
    except OSError as e:
        raise InputError(out, f"cannot read ({e.strerror or e})") from None
    if partial:
        # A line this writer was cut short in starts like a record and is not whole JSON (or is a whole record
        # that lost only its newline); anything else is not ours to cut.
        cut_short = partial.startswith(_RECORD_START) and (_record(partial) is not None or not _is_json(partial))
        if not cut_short:
            raise _not_ours(out, f"its last line (line {len(ids) + 1}) is not an annotation record ({what})")
        log.info("%s: dropping a partial last line (redone now)", out)
        with open(out, "r+b") as f:
            f.truncate(good)
    return ids


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def unique_ids(proteins: list[Protein]) -> list[Protein]:
    """Make ids unique across inputs (``id``, ``id#2``, ...) so resuming can key on them."""
    seen: dict[str, int] = {}
    out = []
    for p in proteins:
        n = seen.get(p.id, 0) + 1
        seen[p.id] = n
        out.append(p if n == 1 else replace(p, id=f"{p.id}#{n}"))
    return out


def collect_proteins(inputs: Sequence[str | Path], chain: str | None = None) -> list[Protein]:
    """Proteins of every input. A file named on the command line must be readable; an unreadable file found
    inside a folder is skipped with a warning (one bad download should not stop a batch of thousands)."""
    proteins: list[Protein] = []
    for inp in inputs:
        if not Path(inp).is_dir():
            proteins += read_proteins(inp, chain)
            continue
        for f in input_files(Path(inp)):
            try:
                proteins += read_proteins(f, chain)
            except InputError as e:
                log.warning("skipped: %s", e)
    return proteins


def annotate_files(qa: Any, inputs: Sequence[str | Path], out: str | Path, *, questions: Sequence[Question],
                   chain: str | None = None, batch_size: int = 8, max_new_tokens: int = 96) -> dict[str, int]:
    """Annotate every protein of ``inputs`` (FASTA files, structure files, folders) into JSONL ``out``.

    Resumable: proteins already in ``out`` are skipped. Returns counts ``{"total", "skipped", "written"}``.
    """
    out = Path(out)
    done = done_ids(out)  # before reading the inputs: a wrong -o is reported at once
    proteins = unique_ids(collect_proteins(inputs, chain))
    todo = [p for p in proteins if p.id not in done]
    if done:
        log.info("%s: %d of %d proteins already annotated; %d to go", out, len(done & {p.id for p in proteins}),
                 len(proteins), len(todo))
    out.parent.mkdir(parents=True, exist_ok=True)
    # A batch holds whole proteins so that each line is written as soon as its protein is done.
    per_batch = max(1, batch_size // max(1, sum(q.kind == "open" for q in questions)))
    written = 0
    bar = progress(total=len(todo), desc="annotate", unit="protein")
    with open(out, "a", encoding="utf-8") as f:
        for s in range(0, len(todo), per_batch):
            rows = annotate_proteins(qa, todo[s:s + per_batch], questions, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size)
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            written += len(rows)
            bar.update(len(rows))
    bar.close()
    return {"total": len(proteins), "skipped": len(proteins) - len(todo), "written": written}
