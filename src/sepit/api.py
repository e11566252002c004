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
(PDB / mmCIF / AlphaFold, plain or gzipped) or a :class:`sepit.proteins.Protein`, read by
:func:`sepit.proteins.protein_from`. This module is the façade over a loaded model: every answer comes from the
model's one batched ``generate()``; the CLI, ``sepit annotate`` and the HTTP server all go through
:meth:`ProteinQA.generate`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sepit.errors import GenerationStopped, InputError, SepitError, UploadTooLarge
from sepit.log import get_logger
from sepit.paths import sepit_home
from sepit.proteins import (
    FASTA_SUFFIXES,
    STRUCTURE_SUFFIXES,
    Protein,
    conversation,
    input_files,
    is_fasta_path,
    is_structure_path,
    parse_fasta_text,
    protein_from,
    protein_from_upload,
    read_fasta_file,
    read_proteins,
    read_structure_file,
)

log = get_logger(__name__)

# The protein parser and the errors moved to sepit.proteins / sepit.errors; these names stay importable from here.
__all__ = ["FASTA_SUFFIXES", "STRUCTURE_SUFFIXES", "DefaultModelMissing", "GenerationStopped", "OnText", "Protein",
           "ProteinQA", "UploadTooLarge", "conversation", "default_model_dir", "input_files", "is_fasta_path",
           "is_structure_path", "load", "parse_fasta_text", "protein_from", "protein_from_upload", "read_fasta_file",
           "read_proteins", "read_structure_file", "resolve_model_dir"]

OnText = Callable[[int, str], None]
"""Streaming callback: ``on_text(i, delta)`` with new answer text of sample ``i`` of the batch."""


class DefaultModelMissing(SepitError):
    """No ``--model`` was given and no default trained model is registered."""


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


class _Stop(Exception):
    """Raised inside the streaming callback to end a generation early (client gone, timeout, consumer stopped)."""


class ProteinQA:
    """A loaded SEPIT model with a question-answering interface (see the module docstring)."""

    def __init__(self, model: Any, *, name: str = "", max_sequence_length: int | None = None,
                 retriever: Any = None) -> None:
        self.model = model
        self.name = name
        proc = getattr(model, "processor", None)
        self.max_sequence_length = max_sequence_length or getattr(proc, "max_residues", None)
        self.retriever = retriever  # a sepit.retrieval.retriever.Retriever: homolog context in every prompt

    # the prompts
    def conversations(self, proteins: Sequence[Protein], questions: Sequence[str],
                      histories: Sequence[Sequence[dict[str, str]]] | None = None) -> list[list[dict[str, str]]]:
        """The chat messages for question ``i`` about protein ``i``: with the model's homolog context (one
        batched search for all proteins) when it has a retriever, else the paper's prompt."""
        if len(proteins) != len(questions):
            raise SepitError(f"{len(proteins)} proteins but {len(questions)} questions")
        hist = histories if histories is not None else [()] * len(questions)
        contexts = [""] * len(questions)
        if self.retriever is not None and proteins:
            from sepit.retrieval.context import question_task

            contexts = self.retriever.contexts(list(proteins), [question_task(q) for q in questions], list(questions))
        return [conversation(q, h, c) for q, h, c in zip(questions, hist, contexts)]

    def homologs(self, protein: Any, question: str = "") -> list[dict[str, Any]] | None:
        """The retrieved homologs the model sees with ``question`` about ``protein`` (provenance: ``id``,
        ``identity`` and ``coverage`` fractions, ``evalue``, ``annotation`` for the question's task); None when the
        model runs without homolog context."""
        if self.retriever is None:
            return None
        from sepit.retrieval.context import question_task

        p = protein if isinstance(protein, Protein) else protein_from(protein)
        return [h.to_json() for h in self.retriever.homologs([p], [question_task(question)], [question])[0]]

    def answer_options(self, proteins: Sequence[Protein], questions: Sequence[str]) -> list[list[str]]:
        """Per question, the answers the model chooses among instead of writing one (its homologs' annotations for
        an open question about a task they annotate, with ``retrieval.choose_open``); [] where it writes its
        answer (:meth:`sepit.retrieval.retriever.Retriever.answer_options`)."""
        if self.retriever is None or not self.retriever.cfg.choose_open or not proteins:
            return [[] for _ in questions]
        from sepit.retrieval.context import question_task

        return self.retriever.answer_options(list(proteins), [question_task(q) for q in questions], list(questions))

    # one path for every answer
    def generate(self, proteins: Sequence[Protein], conversations: Sequence[list[dict[str, str]]], *,
                 max_new_tokens: int = 128, temperature: float = 0.0, on_text: OnText | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 options: Sequence[Sequence[str]] | None = None) -> list[str]:
        """Answer a batch: conversation ``i`` (chat messages whose first user turn holds ``<protein>``) about
        protein ``i``, through the model's one batched ``generate()`` (KV cache).

        ``on_text(i, delta)`` streams new text of sample ``i``; ``should_stop()`` returning True ends the generation
        at the next token with :class:`GenerationStopped`. ``temperature`` > 0 samples where the model supports it.
        Proteins longer than the model's limit are cropped by the processor (with a warning). ``options[i]``, when
        not empty, are the answers conversation ``i`` is answered by choosing among (:meth:`answer_options`; the
        model's ``choose``), the choice given to ``on_text`` whole.
        """
        if len(proteins) != len(conversations):
            raise SepitError(f"generate: {len(proteins)} proteins but {len(conversations)} conversations")
        if not proteins:
            return []
        if options is not None and any(options):
            return self._choose_or_generate(proteins, conversations, options, max_new_tokens=max_new_tokens,
                                            temperature=temperature, on_text=on_text, should_stop=should_stop)
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

    def _choose_or_generate(self, proteins: Sequence[Protein], conversations: Sequence[list[dict[str, str]]],
                            options: Sequence[Sequence[str]], **kw: Any) -> list[str]:
        """:meth:`generate` for a batch where some conversations have options: those are chosen, the rest written."""
        on_text = kw.pop("on_text")
        if kw.get("should_stop") is not None and kw["should_stop"]():
            raise GenerationStopped("generation stopped before it started")
        picked = [i for i, o in enumerate(options) if o]
        m = self.model
        out = [""] * len(proteins)
        for i, t in zip(picked, m.choose([list(conversations[i]) for i in picked],
                                         [[_model_input(proteins[i])] for i in picked], [options[i] for i in picked])):
            out[i] = t
            if on_text is not None:
                on_text(i, t)
        rest = [i for i in range(len(proteins)) if not options[i]]
        if rest:
            written = self.generate([proteins[i] for i in rest], [conversations[i] for i in rest],
                                    on_text=None if on_text is None else (lambda j, d: on_text(rest[j], d)), **kw)
            for i, t in zip(rest, written):
                out[i] = t
        return out

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
        conv = self.conversations([p], [question], [history])[0]
        options = self.answer_options([p], [question])
        if stream:
            return self._stream(p, conv, max_new_tokens=max_new_tokens, temperature=temperature, options=options)
        return self.generate([p], [conv], max_new_tokens=max_new_tokens, temperature=temperature,
                             options=options)[0]

    def ask_many(self, proteins: Sequence[Any], questions: Sequence[str], *, max_new_tokens: int = 128,
                 temperature: float = 0.0, batch_size: int = 8) -> list[str]:
        """Question ``i`` about protein ``i``, generated in batches of ``batch_size``."""
        if len(proteins) != len(questions):
            raise SepitError(f"ask_many: {len(proteins)} proteins but {len(questions)} questions")
        ps = [protein_from(p) for p in proteins]
        out: list[str] = []
        for s in range(0, len(ps), batch_size):
            chunk, qs = ps[s:s + batch_size], questions[s:s + batch_size]
            out += self.generate(chunk, self.conversations(chunk, qs), max_new_tokens=max_new_tokens,
                                 temperature=temperature, options=self.answer_options(chunk, qs))
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
        batch = m.to_device(m.processor(self.conversations(ps, questions), [[_model_input(p)] for p in ps],
                                        add_generation_prompt=True))
        return [float(x) for x in m.yes_no_probability(batch).tolist()]

    def choose(self, protein: Any, question: str, options: Sequence[str], *, chain: str | None = None
               ) -> list[float]:
        """Multiple choice: per option, the model's mean log-probability per token of that option as the answer to
        ``question`` (length-normalised, so long options are not penalised for their length); the highest is the
        model's choice. One forward pass over all options together."""
        if len(options) < 2 or any(not str(o).strip() for o in options):
            raise InputError(None, "choose needs at least two non-empty options")
        p = _model_input(protein_from(protein, chain))
        prompt = self.conversations([p], [question])[0]
        convs = [[*prompt, {"role": "assistant", "content": str(o).strip()}] for o in options]
        m = self.model
        batch = m.to_device(m.processor(convs, [[p] for _ in options]))
        return [float(x) for x in m.answer_log_likelihood(batch).tolist()]

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


def _model_input(p: Protein) -> Protein:
    """What the model sees: coordinates only where some residue has a Cα."""
    return p if p.has_structure else p.without_structure()


def load(path: str | Path | None = None, *, device: str | None = None, precision: str = "auto",
         index: str | Path | None = None, retrieval: bool = True) -> ProteinQA:
    """Load a trained model directory (default: the model `sepit demo` registered) for asking questions, on
    ``device`` (default: CUDA when available, else CPU) in ``precision``: ``auto`` (bf16 where the hardware runs it
    natively — CUDA with bf16, CPUs with AMX / AVX512-BF16 — else fp32), ``fp32`` or ``bf16``; never fp16.
    A bad precision is a one-line ConfigError.

    A model trained with homolog context (``retrieval.enabled`` in its config) searches its own index
    (``DIR/retrieval``) with the settings it was trained with; ``index`` swaps in another (e.g. a bigger one from
    ``sepit index build``); ``retrieval=False`` asks with the paper's prompt (the ablation)."""
    from sepit.precisions import check_precision

    check_precision(precision)
    d = resolve_model_dir(path)
    import torch

    from sepit.model import load_model

    model = load_model(d, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to_precision(precision).eval()
    return ProteinQA(model, name=str(d), retriever=model_retriever(model, d, index=index, retrieval=retrieval))


def model_retriever(model: Any, where: str | Path, *, index: str | Path | None = None, retrieval: bool = True
                    ) -> Any:
    """The retriever a loaded model asks with: None for the paper's prompt (a model trained without homolog
    context, or ``retrieval=False``); else its own index or ``index``, with its training settings."""
    rc = model.config.retrieval
    if not rc.enabled or not retrieval:
        if index is not None and retrieval:
            log.warning("%s was trained without homolog context: the index %s is not used", where, index)
        return None
    from sepit.retrieval.index import RetrievalIndex
    from sepit.retrieval.retriever import Retriever

    path = index if index is not None else model.retrieval_index
    if path is None:
        raise SepitError(f"{where}: the model was trained with homolog context but has no retrieval index "
                         "(retrieval/): pass one (--index DIR) or ask without it (--no-retrieval)")
    return Retriever(RetrievalIndex.load(path), rc)
