"""Question/answer templates: YAML data (``resources/templates/questions.yaml``), checked on load.

Templates are plain strings with ``{value}`` (yes/no questions) or ``{values}`` (open answers) placeholders; nothing
here knows about tokenizers or the ``<protein>`` marker.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from sepit.errors import InputError
from sepit.paths import resources_dir

from .record import PROTEIN_MARKER

# Every task the builder knows, in the order records are made for a protein.
TASKS: tuple[str, ...] = (
    "function", "go_mf", "go_bp", "go_cc", "location", "ec", "catalytic_activity", "family", "domains",
    "cofactor", "pathway", "subunit", "keywords", "name", "length", "mass", "composition", "secondary_structure",
)
MIN_PARAPHRASES = 2


def default_templates_path() -> Path:
    return resources_dir() / "templates" / "questions.yaml"


@dataclass(frozen=True)
class TaskTemplates:
    """Paraphrases of one task: open questions, open answers (``{values}``), yes/no questions (``{value}``)."""

    open: tuple[str, ...]
    answer: tuple[str, ...]
    yesno: tuple[str, ...]


@dataclass(frozen=True)
class Templates:
    """All templates: caption instructions, yes/no answer texts and one :class:`TaskTemplates` per task."""

    caption: tuple[str, ...]
    yes: tuple[str, ...]
    no: tuple[str, ...]
    tasks: dict[str, TaskTemplates]
    source: str = ""


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


def _strings(path: Path, where: str, value: object, allowed: set[str], required: set[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(path, f"{where}: expected a non-empty list of strings")
    for v in value:
        try:
            fields = _fields(v)
        except ValueError as e:
            raise InputError(path, f"{where}: bad template {v!r} ({e})") from None
        if fields - allowed:
            raise InputError(path, f"{where}: template {v!r} uses unknown placeholder(s) {sorted(fields - allowed)}")
        if required - fields:
            raise InputError(path, f"{where}: template {v!r} lacks {{{min(required)}}}")
        if PROTEIN_MARKER in v:
            raise InputError(path, f"{where}: template {v!r} must not contain {PROTEIN_MARKER} (the builder adds it)")
    return tuple(value)


def load_templates(path: str | Path | None = None) -> Templates:
    """Read and check a templates YAML (default: the shipped one). Unknown tasks or placeholders are errors."""
    p = Path(path) if path is not None else default_templates_path()
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(p, "templates file not found") from None
    except yaml.YAMLError as e:
        raise InputError(p, f"not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise InputError(p, "expected keys 'caption', 'yes_answers', 'no_answers' and 'tasks'")
    unknown = {str(k) for k in data} - {"caption", "yes_answers", "no_answers", "tasks"}
    if unknown:
        raise InputError(p, f"unknown top-level key(s) {sorted(unknown)}")
    tasks: dict[str, TaskTemplates] = {}
    for name, spec in data["tasks"].items():
        if name not in TASKS:
            raise InputError(p, f"unknown task {name!r} (known: {', '.join(TASKS)})")
        if not isinstance(spec, dict) or set(spec) != {"open", "answer", "yesno"}:
            raise InputError(p, f"tasks.{name}: expected exactly the keys open, answer, yesno")
        tt = TaskTemplates(
            open=_strings(p, f"tasks.{name}.open", spec["open"], set(), set()),
            answer=_strings(p, f"tasks.{name}.answer", spec["answer"], {"values"}, {"values"}),
            yesno=_strings(p, f"tasks.{name}.yesno", spec["yesno"], {"value"}, {"value"}),
        )
        if len(tt.open) < MIN_PARAPHRASES or len(tt.yesno) < MIN_PARAPHRASES:
            raise InputError(p, f"tasks.{name}: needs at least {MIN_PARAPHRASES} open and yes/no paraphrases")
        tasks[name] = tt
    return Templates(
        caption=_strings(p, "caption", data.get("caption"), set(), set()),
        yes=_strings(p, "yes_answers", data.get("yes_answers"), set(), set()),
        no=_strings(p, "no_answers", data.get("no_answers"), set(), set()),
        tasks=tasks,
        source=str(p),
    )
