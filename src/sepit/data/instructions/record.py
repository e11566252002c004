"""The instruction record: one conversation about one or more proteins (the JSONL line of a built dataset)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["caption", "open", "yesno"]
PROTEIN_MARKER = "<protein>"


@dataclass(frozen=True)
class Instruction:
    """``messages`` are chat turns ``{"role": ..., "content": ...}``; each ``<protein>`` marker in the user turns
    stands for the proteins of ``protein_ids``, in order. ``answer`` is the reference answer (``yes``/``no`` for
    yes/no questions)."""

    id: str
    protein_ids: tuple[str, ...]
    task: str
    kind: Kind
    split: str
    messages: tuple[dict[str, str], ...]
    answer: str

    @property
    def question(self) -> str:
        """The first user turn without the protein marker line."""
        text = next(m["content"] for m in self.messages if m["role"] == "user")
        return text.replace(PROTEIN_MARKER + "\n", "", 1).replace(PROTEIN_MARKER, "").strip()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "protein_ids": list(self.protein_ids), "task": self.task, "kind": self.kind,
                "split": self.split, "messages": [dict(m) for m in self.messages], "answer": self.answer}

    def to_line(self) -> str:
        """One JSONL line (no newline); byte-identical for identical records."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Instruction:
        return cls(id=d["id"], protein_ids=tuple(d["protein_ids"]), task=d["task"], kind=d["kind"],
                   split=d["split"], messages=tuple({"role": m["role"], "content": m["content"]}
                                                    for m in d["messages"]), answer=d["answer"])


def protein_turn(text: str, n_proteins: int = 1) -> str:
    """A user turn about proteins: one ``<protein>`` marker per protein, a newline, the text. The one layout of
    training records and of every question asked at inference (:func:`sepit.proteins.conversation`)."""
    return PROTEIN_MARKER * n_proteins + "\n" + text


def with_context(text: str, context: str) -> str:
    """A user turn with a context block (e.g. retrieved homologs) put after its protein marker line, before the
    question: ``<protein>\n{context}\n{question}``. An empty ``context`` leaves ``text`` unchanged (the paper's
    prompt)."""
    if not context:
        return text
    head, sep, rest = text.partition("\n")
    if sep and head and not head.replace(PROTEIN_MARKER, ""):
        return f"{head}\n{context}\n{rest}"
    return f"{context}\n{text}"


def add_context(messages: tuple[dict[str, str], ...] | list[dict[str, str]], context: str) -> list[dict[str, str]]:
    """``messages`` with :func:`with_context` applied to the first user turn."""
    out, done = [], False
    for m in messages:
        if not done and m["role"] == "user":
            m = {**m, "content": with_context(m["content"], context)}
            done = True
        out.append(dict(m))
    return out


def conversation(question: str, answer: str, n_proteins: int = 1) -> tuple[dict[str, str], ...]:
    """User turn = :func:`protein_turn` of the question; assistant turn = the answer."""
    return ({"role": "user", "content": protein_turn(question, n_proteins)}, {"role": "assistant", "content": answer})
