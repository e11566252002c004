"""The Python API: load a trained SEPIT model and ask it questions about proteins.

    import sepit
    qa = sepit.load("runs/demo/model")           # or sepit.load() for the default model `sepit demo` registers
    qa = sepit.api.load("runs/demo/model", precision="fp32")   # auto (default): bf16 where the hardware has it
    qa.ask("MKTAYIAKQRQISFVKSHFSRQ", "What is the function of this protein?")
    qa.ask("1abc.cif.gz", "Where is this protein located?", chain="B")     # a structure file: sequence + Cα coords
    for text in qa.ask(">sp|P69905\\nMVLSPADKTNVKAAW...", "What does it do?", stream=True):
        print(text, end="")
    qa.yes_no("1abc.pdb", "Is this protein an enzyme?")                   # → P(yes), a float in [0, 1]
    qa.annotate("1abc.pdb")                                                # the standard question set

A *protein* is a sequence string, a FASTA record (text starting with ``>``), a FASTA or structure file path
(PDB / mmCIF / AlphaFold, plain or gzipped) or a :class:`Protein`. Every answer comes from the model's one batched
``generate()``; the CLI, ``sepit annotate`` and the HTTP server all go through :meth:`ProteinQA.generate`.
"""

from __future__ import annotations

import os
import queue
import re
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sepit.errors import InputError, SepitError
from sepit.log import get_logger
from sepit.paths import sepit_home

log = get_logger(__name__)

FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas", ".fna", ".seq")
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb1")
_AA = re.compile(r"^[ACDEFGHIKLMNPQRSTVWYXBZUOacdefghiklmnpqrstvwyxbzuo]+$")

OnText = Callable[[int, str], None]
"""Streaming callback: ``on_text(i, delta)`` with new answer text of sample ``i`` of the batch."""


@dataclass(frozen=True, eq=False)
class Protein:
    """One protein as the model sees it: sequence, optional Cα coordinates ``(L, 3)`` and their mask ``(L,)``."""

    id: str
    sequence: str
    coords: np.ndarray | None = None  # (L, 3) float32, Å
    coord_mask: np.ndarray | None = None  # (L,) bool, True where the residue has a Cα
    source: str = ""

    @property
    def has_structure(self) -> bool:
        return self.coords is not None and self.coord_mask is not None and bool(self.coord_mask.any())

    def __len__(self) -> int:
        return len(self.sequence)

    def summary(self) -> dict[str, Any]:
        n = int(self.coord_mask.sum()) if self.coord_mask is not None else 0
        return {"id": self.id, "length": len(self.sequence), "has_structure": self.has_structure,
                "residues_with_coords": n, "source": self.source}


class DefaultModelMissing(SepitError):
    """No ``--model`` was given and no default trained model is registered."""


# --- proteins from user input ------------------------------------------------------------------------------------

def clean_sequence(seq: str, where: str = "sequence") -> str:
    """Upper-case, whitespace and a trailing ``*`` removed; a one-line InputError on any other letter."""
    s = re.sub(r"\s+", "", seq).rstrip("*").upper()
    if not s:
        raise InputError(None, f"{where}: empty sequence")
    if not _AA.match(s):
        bad = sorted({c for c in s if not _AA.match(c)})
        raise InputError(None, f"{where}: not an amino-acid sequence (unexpected characters {''.join(bad)!r})")
    return s


def parse_fasta_text(text: str, where: str = "FASTA") -> list[Protein]:
    """FASTA records in a string → proteins (id: the UniProt accession, else the header's first word)."""
    from sepit.data.readers import parse_fasta_header

    out: list[Protein] = []
    header, lines = None, []

    def flush() -> None:
        if header is not None:
            pid = parse_fasta_header(header).get("accession") or f"record{len(out) + 1}"
            out.append(Protein(pid, clean_sequence("".join(lines), f"{where} record {pid!r}"), source=where))

    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            flush()
            header, lines = line[1:].strip(), []
        elif header is None:
            raise InputError(None, f"{where}: not FASTA (text before the first '>' header)")
        else:
            lines.append(line)
    flush()
    if not out:
        raise InputError(None, f"{where}: no FASTA records")
    return out


def _strip_gz(name: str) -> str:
    return name[:-3] if name.lower().endswith(".gz") else name


def is_structure_path(path: str | Path) -> bool:
    return Path(_strip_gz(str(path))).suffix.lower() in STRUCTURE_SUFFIXES


def is_fasta_path(path: str | Path) -> bool:
    return Path(_strip_gz(str(path))).suffix.lower() in FASTA_SUFFIXES


def read_fasta_file(path: str | Path) -> list[Protein]:
    """All records of a FASTA file (plain or compressed; UniProt headers give their accession as the id).

    Records whose sequence is not amino acids are skipped with a warning; a file with none left is an InputError.
    """
    from sepit.data.readers import SkipLog, read_fasta

    skips = SkipLog()
    proteins = [Protein(e.accession, e.sequence, source=str(path)) for e in read_fasta(path, skips)]
    if skips:
        log.warning("%s: skipped %s", path, skips.summary())
    if not proteins:
        raise InputError(path, "no usable FASTA records")
    return proteins


def read_structure_file(path: str | Path, chain: str | None = None, *, name: str | None = None) -> list[Protein]:
    """Protein chains of a PDB / mmCIF / AlphaFold file (plain or gzipped) with their Cα traces.

    ``chain`` selects one chain (an InputError lists the chains when it is absent); ``name`` replaces the file stem
    in the ids (``<name>:<chain>``).
    """
    from sepit.data.structures import parse_structure

    traces = parse_structure(path, chain=chain)
    if not traces:
        raise InputError(path, "no protein chain with residues found" + (f" (chain {chain})" if chain else ""))
    stem = name or Path(_strip_gz(Path(path).name)).stem
    return [_protein_from_trace(t, stem, str(path)) for t in traces]


def _protein_from_trace(trace: Any, stem: str, source: str) -> Protein:
    coords = np.asarray(trace.coords, dtype=np.float32).reshape(-1, 3)
    mask = np.asarray(trace.mask, dtype=bool).reshape(-1)
    seq = str(trace.sequence)
    if not (len(seq) == coords.shape[0] == mask.shape[0]):
        raise InputError(source, f"chain {trace.chain}: sequence and coordinates differ in length")
    coords = np.where(mask[:, None], coords, 0.0).astype(np.float32)
    return Protein(f"{stem}:{trace.chain}", seq, coords, mask, source=source)


def input_files(folder: Path) -> list[Path]:
    """FASTA and structure files under ``folder`` (recursively, sorted); an InputError when there are none."""
    files = sorted(f for f in folder.rglob("*") if f.is_file() and (is_structure_path(f) or is_fasta_path(f)))
    if not files:
        raise InputError(folder, "folder holds no FASTA or structure files (.fasta/.fa/.pdb/.cif, optionally .gz)")
    return files


def read_proteins(path: str | Path, chain: str | None = None) -> list[Protein]:
    """Every protein in a FASTA file, a structure file (its chains, or ``chain``) or a folder of such files."""
    p = Path(path)
    if p.is_dir():
        return [prot for f in input_files(p) for prot in read_proteins(f, chain)]
    if not p.is_file():
        raise InputError(p, "no such file or folder")
    if is_fasta_path(p):
        return read_fasta_file(p)
    if is_structure_path(p):
        return read_structure_file(p, chain)
    raise InputError(p, "unknown file type: expected FASTA (.fasta/.fa/.faa) or a structure (.pdb/.cif/.ent), "
                        "optionally gzipped")


def protein_from(protein: Any, chain: str | None = None) -> Protein:
    """Turn what a user passes (sequence, FASTA record, file path, ``Protein``) into one :class:`Protein`.

    A file with several chains or records gives its first one unless ``chain`` picks a chain.
    """
    if isinstance(protein, Protein):
        return protein
    if isinstance(protein, Path) or (isinstance(protein, str) and "\n" not in protein and os.path.isfile(protein)):
        found = read_proteins(Path(protein), chain)
        if len(found) > 1:
            log.info("%s holds %d proteins; using the first (%s)", protein, len(found), found[0].id)
        return found[0]
    if isinstance(protein, str):
        text = protein.strip()
        if text.startswith(">"):
            return parse_fasta_text(text, "FASTA record")[0]
        if _AA.match(re.sub(r"\s+", "", text).rstrip("*")):
            return Protein("query", clean_sequence(text))
        if "/" in text or "." in text:
            raise InputError(text, "no such file")
        return Protein("query", clean_sequence(text))  # raises with the offending characters
    seq = getattr(protein, "sequence", None)
    if isinstance(seq, str):  # a ProteinEntry or any record with .sequence (and .accession / .id)
        pid = str(getattr(protein, "accession", None) or getattr(protein, "id", None) or "query")
        return Protein(pid, clean_sequence(seq, pid))
    raise InputError(None, f"cannot read a protein from a {type(protein).__name__}: pass a sequence, a FASTA "
                           "record, a FASTA/structure file path or a sepit.api.Protein")


def protein_from_upload(data: bytes, filename: str, chain: str | None = None, *,
                        max_unpacked_bytes: int = 64 * 1024 * 1024) -> list[Protein]:
    """Parse an uploaded structure or FASTA file held in memory.

    The bytes are (un-gzipped with a size cap, then) written to a fresh private temporary folder under a fixed
    name chosen here — never at a path taken from the request; only the suffix of ``filename`` is used, to tell the
    format. The folder is removed afterwards.
    """
    label = os.path.basename(filename or "upload") or "upload"
    if data[:2] == b"\x1f\x8b":
        data = _gunzip_capped(data, max_unpacked_bytes, label)
    base = _strip_gz(label.lower())
    suffix = Path(base).suffix
    if suffix in FASTA_SUFFIXES or data.lstrip()[:1] == b">":
        return parse_fasta_text(data.decode("utf-8", errors="replace"), label)
    if suffix not in STRUCTURE_SUFFIXES:  # sniff: mmCIF starts with data_, PDB with record names
        suffix = ".cif" if data.lstrip()[:5].lower() == b"data_" else ".pdb"
    with tempfile.TemporaryDirectory(prefix="sepit-upload-") as tmp:  # mode 0700, unique
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            proteins = read_structure_file(path, chain, name=Path(base).stem or "upload")
        except InputError as e:
            raise InputError(label, e.problem) from None
    return [Protein(p.id, p.sequence, p.coords, p.coord_mask, source=label) for p in proteins]


def _gunzip_capped(data: bytes, limit: int, label: str) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise InputError(label, f"corrupt gzip data ({e})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise UploadTooLarge(label, f"unpacks to more than {limit} bytes")
    return out


class UploadTooLarge(InputError):
    """An upload (or what it unpacks to) is over the size limit."""


# --- the model --------------------------------------------------------------------------------------------------

def default_model_dir() -> Path:
    """Where `sepit demo` registers the trained default model: ``$SEPIT_HOME/default_model``."""
    return sepit_home() / "default_model"


def resolve_model_dir(path: str | Path | None) -> Path:
    """``path`` itself, or the registered default model; a one-line error saying how to get one."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise SepitError(f"{p}: model directory not found")
        return p
    p = default_model_dir()
    if not p.is_dir():
        raise DefaultModelMissing(
            f"no model given and no default trained model at {p}: run `make demo` (or `sepit demo --quick`) to "
            "train and register one, or pass a model directory (--model DIR / sepit.load(DIR))")
    return p


class GenerationStopped(SepitError):
    """A generation was ended early by its ``should_stop`` (timeout, client gone, shutdown)."""


class _Stop(Exception):
    """Raised inside the streaming callback to end a generation early (client gone, timeout, consumer stopped)."""


class ProteinQA:
    """A loaded SEPIT model with a question-answering interface (see the module docstring)."""

    def __init__(self, model: Any, *, name: str = "", max_sequence_length: int | None = None) -> None:
        self.model = model
        self.name = name
        proc = getattr(model, "processor", None)
        self.max_sequence_length = max_sequence_length or getattr(proc, "max_residues", None)

    # one path for every answer
    def generate(self, proteins: Sequence[Protein], conversations: Sequence[list[dict[str, str]]], *,
                 max_new_tokens: int = 128, temperature: float = 0.0, on_text: OnText | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[str]:
        """Answer a batch: conversation ``i`` (chat messages whose first user turn holds ``<protein>``) about
        protein ``i``, through the model's one batched ``generate()`` (KV cache).

        ``on_text(i, delta)`` streams new text of sample ``i``; ``should_stop()`` returning True ends the generation
        at the next token with :class:`GenerationStopped`. ``temperature`` > 0 samples where the model supports it.
        Proteins longer than the model's limit are cropped by the processor (with a warning).
        """
        if len(proteins) != len(conversations):
            raise SepitError(f"generate: {len(proteins)} proteins but {len(conversations)} conversations")
        if not proteins:
            return []
        if temperature and not self.supports_sampling:
            raise InputError(None, "this model decodes greedily only: use temperature 0")
        m = self.model
        batch = m.to_device(m.processor([list(c) for c in conversations], [[_model_input(p)] for p in proteins],
                                        add_generation_prompt=True))
        sent = [""] * len(proteins)

        def callback(texts: list[str]) -> None:
            if on_text is not None:
                for i, t in enumerate(texts):
                    t = t.lstrip().rstrip("\ufffd")  # \ufffd: an incomplete multi-byte character, wait for it
                    if len(t) > len(sent[i]) and t.startswith(sent[i]):
                        on_text(i, t[len(sent[i]):])
                        sent[i] = t
            if should_stop is not None and should_stop():
                raise _Stop

        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
        if temperature:
            kwargs["temperature"] = temperature
        need_cb = on_text is not None or should_stop is not None
        try:
            texts = m.generate(batch, callback=callback if need_cb else None, **kwargs)
        except _Stop:
            raise GenerationStopped("generation stopped before it finished") from None
        texts = [t.strip() for t in texts]
        if on_text is not None:  # whatever the last step did not stream (e.g. text held back above)
            for i, t in enumerate(texts):
                if t.startswith(sent[i]) and len(t) > len(sent[i]):
                    on_text(i, t[len(sent[i]):])
        return texts

    @property
    def supports_sampling(self) -> bool:
        """Whether the model's ``generate`` takes a ``temperature`` (else decoding is greedy only)."""
        import inspect

        return "temperature" in inspect.signature(self.model.generate).parameters

    def ask(self, protein: Any, question: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
            stream: bool = False, chain: str | None = None,
            history: Sequence[dict[str, str]] = ()) -> str | Iterator[str]:
        """Answer one question; with ``stream=True`` an iterator of text pieces as they are generated."""
        p = protein_from(protein, chain)
        conv = conversation(question, history)
        if stream:
            return self._stream(p, conv, max_new_tokens=max_new_tokens, temperature=temperature)
        return self.generate([p], [conv], max_new_tokens=max_new_tokens, temperature=temperature)[0]

    def ask_many(self, proteins: Sequence[Any], questions: Sequence[str], *, max_new_tokens: int = 128,
                 temperature: float = 0.0, batch_size: int = 8) -> list[str]:
        """Question ``i`` about protein ``i``, generated in batches of ``batch_size``."""
        if len(proteins) != len(questions):
            raise SepitError(f"ask_many: {len(proteins)} proteins but {len(questions)} questions")
        ps = [protein_from(p) for p in proteins]
        out: list[str] = []
        for s in range(0, len(ps), batch_size):
            out += self.generate(ps[s:s + batch_size], [conversation(q) for q in questions[s:s + batch_size]],
                                 max_new_tokens=max_new_tokens, temperature=temperature)
        return out

    def yes_no(self, protein: Any, question: str, *, chain: str | None = None) -> float:
        """P(the answer is "yes") from the model's next-token distribution over yes / no."""
        return self.yes_no_many([protein_from(protein, chain)], [question])[0]

    def yes_no_many(self, proteins: Sequence[Any], questions: Sequence[str]) -> list[float]:
        """P(yes) for question ``i`` about protein ``i``, in one batch."""
        if len(proteins) != len(questions):
            raise SepitError(f"yes_no_many: {len(proteins)} proteins but {len(questions)} questions")
        if not proteins:
            return []
        ps = [protein_from(p) for p in proteins]
        m = self.model
        batch = m.to_device(m.processor([conversation(q) for q in questions], [[_model_input(p)] for p in ps],
                                        add_generation_prompt=True))
        return [float(x) for x in m.yes_no_probability(batch).tolist()]

    def annotate(self, protein: Any, questions: Any = None, *, chain: str | None = None,
                 max_new_tokens: int = 96) -> dict[str, Any]:
        """Answers to the standard question set (or ``questions``: a YAML path or a list of Question)."""
        from sepit.annotate import annotate_proteins, load_questions

        qs = load_questions(questions) if not isinstance(questions, list) else questions
        return annotate_proteins(self, [protein_from(protein, chain)], qs, max_new_tokens=max_new_tokens)[0]

    def _stream(self, protein: Protein, conv: list[dict[str, str]], **kw: Any) -> Iterator[str]:
        """Run the generation in a thread and yield its text; closing the iterator stops the generation."""
        q: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                self.generate([protein], [conv], on_text=lambda _i, t: q.put(("text", t)),
                              should_stop=stop.is_set, **kw)
                q.put(("done", None))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer's thread
                q.put(("error", e))

        t = threading.Thread(target=work, name="sepit-generate", daemon=True)
        t.start()
        try:
            while True:
                kind, val = q.get()
                if kind == "text":
                    yield val
                elif kind == "error":
                    raise val
                else:
                    return
        finally:
            stop.set()


def _model_input(p: Protein) -> Any:
    from sepit.model.processor import ProteinInput

    return ProteinInput(p.sequence, p.coords, p.coord_mask) if p.has_structure else ProteinInput(p.sequence)


def conversation(question: str, history: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """Chat messages for a question: the protein marker goes in the first user turn."""
    question = question.strip()
    if not question:
        raise InputError(None, "empty question")
    msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in history]
    for m in msgs:
        if m["role"] not in ("user", "assistant"):
            raise InputError(None, f"chat history: role must be user or assistant, got {m['role']!r}")
        if "<protein>" in m["content"]:
            raise InputError(None, "chat history: '<protein>' is reserved for the protein's place")
    if "<protein>" in question:
        raise InputError(None, "question: '<protein>' is reserved for the protein's place")
    msgs.append({"role": "user", "content": question})
    first = next(i for i, m in enumerate(msgs) if m["role"] == "user")
    msgs[first] = {"role": "user", "content": "<protein>\n" + msgs[first]["content"]}
    return msgs


def load(path: str | Path | None = None, *, device: str | None = None, precision: str = "auto") -> ProteinQA:
    """Load a trained model directory (default: the model `sepit demo` registered) for asking questions, on
    ``device`` (default: CUDA when available, else CPU) in ``precision``: ``auto`` (bf16 where the hardware runs it
    natively — CUDA with bf16, CPUs with AMX / AVX512-BF16 — else fp32), ``fp32`` or ``bf16``; never fp16.
    A bad precision is a one-line ConfigError."""
    from sepit.model.fusion import check_precision

    check_precision(precision)
    d = resolve_model_dir(path)
    import torch

    from sepit.model import load_model

    model = load_model(d, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to_precision(precision).eval()
    return ProteinQA(model, name=str(d))
