"""``sepit ask`` (one question or an interactive chat about a protein) and ``sepit annotate`` (batch, resumable)."""

from __future__ import annotations

import argparse
import sys

from sepit.cli import add_command
from sepit.precisions import PRECISIONS  # torch-free: --help stays fast

ASK_EPILOG = """example:
  sepit ask --model runs/demo/model --structure 1abc.cif.gz --chain A "What is the function of this protein?"
  sepit ask --sequence MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF "Is this protein an enzyme?" --yes-no
  sepit ask --fasta proteins.fasta --record P69905          # no question: an interactive chat (empty line ends)
  sepit ask --sequence MVLSPADKTNVKAAW "What does it do?" --precision fp32   # default auto: bf16 where supported
  sepit ask --fasta p.fasta "Where is this protein located?" --verbose    # + the homologs put in the prompt
  sepit ask --fasta p.fasta "Where is this protein located?" --no-retrieval   # the paper's prompt (ablation)
Without --model the trained default model registered by `sepit demo` is used."""

ANNOTATE_EPILOG = """example:
  sepit annotate --model runs/demo/model proteins.fasta structures/ -o annotations.jsonl
Re-running the same command continues an interrupted run (proteins already in the output are skipped).
The standard question set is sepit/resources/annotate_questions.yaml; --questions FILE uses your own."""


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", help="trained model directory (default: the one `sepit demo` "
                                                 "registered in $SEPIT_HOME/default_model)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="weights' precision: auto (default) = bf16 where the hardware runs it natively (CUDA with "
                        "bf16, CPUs with AMX / AVX512-BF16), else fp32")
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="answer length cap (default 128)")
    retrieval_args(p)


def retrieval_args(p: argparse.ArgumentParser) -> None:
    """``--index DIR`` and ``--no-retrieval``: the homolog context of a model trained with it."""
    p.add_argument("--index", metavar="DIR", help="retrieval index to search for homolog context instead of the "
                                                 "model's own (e.g. a bigger one from `sepit index build`)")
    p.add_argument("--no-retrieval", action="store_true",
                   help="ask without homolog context (the paper's prompt: protein + question), an ablation")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "ask", help="ask a trained model about one protein (or chat when no question is given)",
                    epilog=ASK_EPILOG)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sequence", help="amino-acid sequence")
    src.add_argument("--fasta", metavar="FILE", help="FASTA file (first record, or --record ID)")
    src.add_argument("--structure", metavar="FILE", help="PDB / mmCIF / AlphaFold file, plain or gzipped")
    p.add_argument("--chain", help="chain of --structure (default: the longest protein chain)")
    p.add_argument("--record", metavar="ID", help="record of --fasta to use (default: the first)")
    p.add_argument("question", nargs="?", help="the question; omit for an interactive chat")
    _model_args(p)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); higher = more varied")
    p.add_argument("--yes-no", action="store_true", help="print P(yes) for a yes/no question instead of text")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print the homologs put in the prompt (accession, identity, coverage, annotation)")
    p.set_defaults(func=_ask)

    a = add_command(sub, "annotate", help="answer the standard questions for every protein of FASTA files / "
                                          "structure folders (batched, resumable JSONL)", epilog=ANNOTATE_EPILOG)
    a.add_argument("inputs", nargs="+", metavar="INPUT", help="FASTA files, structure files or folders of them")
    a.add_argument("-o", "--output", required=True, metavar="OUT.jsonl", help="JSONL output (appended; resumable)")
    a.add_argument("--questions", metavar="YAML", help="question set (default: the shipped standard set)")
    a.add_argument("--chain", help="only this chain of each structure file (default: every protein chain)")
    a.add_argument("--batch-size", type=int, default=8, help="answers generated together (default 8)")
    _model_args(a)
    a.set_defaults(func=_annotate, max_new_tokens=96)


def _protein(args: argparse.Namespace):
    from sepit.errors import InputError
    from sepit.proteins import default_protein, protein_from_sequence, read_fasta_file, read_structure_file

    if args.sequence is not None:  # '' too: an empty sequence is a one-line error, not "no input given"
        return protein_from_sequence(args.sequence, where="--sequence")
    if args.fasta is not None:
        recs = read_fasta_file(args.fasta)
        if args.record:
            hit = [r for r in recs if r.id == args.record or args.record in r.id.split("|")]
            if not hit:
                raise InputError(args.fasta, f"no record {args.record!r} (first ids: "
                                             f"{', '.join(r.id for r in recs[:5])})")
            return hit[0]
        return recs[0]
    return default_protein(read_structure_file(args.structure, args.chain), args.structure)


def _ask(args: argparse.Namespace) -> int:
    from sepit.api import load

    if args.chain and not args.structure:
        raise SystemExit("sepit ask: error: --chain goes with --structure")
    protein = _protein(args)
    qa = load(args.model, device=args.device, precision=args.precision, index=args.index,
              retrieval=not args.no_retrieval)
    if args.verbose and args.question:
        _print_homologs(qa, protein, args.question)
    if args.yes_no:
        if not args.question:
            raise SystemExit("sepit ask: error: --yes-no needs a question")
        print(f"{qa.yes_no(protein, args.question):.4f}")
        return 0
    if args.question:
        _stream_answer(qa, protein, args.question, args, [])
        return 0
    return _chat(qa, protein, args)


def _print_homologs(qa, protein, question: str) -> None:
    """The homolog context of this question, on stderr (the answer alone stays on stdout)."""
    homologs = qa.homologs(protein, question)
    if homologs is None:
        print("homologs: none (the model asks without homolog context)", file=sys.stderr)
        return
    where = qa.retriever.index.path if qa.retriever is not None else "?"
    print(f"homologs in the prompt ({len(homologs)}; index {where}):" if homologs
          else f"homologs in the prompt: none found (index {where})", file=sys.stderr)
    for h in homologs:
        cov = f", {100 * h['coverage']:.0f}% coverage" if h["coverage"] is not None else ""
        ev = f", e-value {h['evalue']:.1e}" if h["evalue"] is not None else ""
        claim = {True: " → its answer to the question: yes", False: " → its answer to the question: no"}.get(
            h.get("answers_yes"), "")
        print(f"  {h['id']}: {100 * h['identity']:.0f}% identity{cov}{ev}: {h['annotation'] or '-'}{claim}",
              file=sys.stderr)


def _stream_answer(qa, protein, question: str, args: argparse.Namespace, history: list) -> str:
    parts = []
    for text in qa.ask(protein, question, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       stream=True, history=history):
        parts.append(text)
        sys.stdout.write(text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(parts)


def _chat(qa, protein, args: argparse.Namespace) -> int:
    struct = "with structure" if protein.has_structure else "sequence only"
    print(f"Chatting about {protein.id} ({len(protein)} residues, {struct}). Empty line or Ctrl-D ends.",
          file=sys.stderr)
    history: list[dict[str, str]] = []
    while True:
        try:
            question = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not question:
            return 0
        sys.stdout.write("sepit> ")
        answer = _stream_answer(qa, protein, question, args, history)
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _annotate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sepit.annotate import annotate_files, done_ids, load_questions
    from sepit.api import load

    questions = load_questions(args.questions)
    done_ids(Path(args.output))  # a bad -o is reported before the model loads
    qa = load(args.model, device=args.device, precision=args.precision, index=args.index,
              retrieval=not args.no_retrieval)
    counts = annotate_files(qa, args.inputs, args.output, questions=questions, chain=args.chain,
                            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    print(f"{args.output}: {counts['written']} proteins annotated, {counts['skipped']} already done")
    return 0
