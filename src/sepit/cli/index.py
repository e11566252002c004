"""``sepit index build SOURCE ... -o DIR``: a retrieval index (homolog context) from protein sources."""

from __future__ import annotations

import argparse

from sepit.cli import add_command, group_parser

EPILOG = """examples:
  sepit index build uniprot_sprot.dat.gz -o indexes/sprot                 # any source `sepit data build` reads
  sepit index build more.tsv --include runs/demo-default/stage2/final/retrieval -o indexes/bigger   # extend one
  sepit ask --index indexes/sprot --fasta p.fasta "What is the function of this protein?" --verbose
A model trained with homolog context searches its own index (MODEL/retrieval, the training split of its dataset);
--index DIR on ask / annotate / serve swaps in a bigger one. `sepit eval` always uses the dataset's own index."""


def register(sub: argparse._SubParsersAction) -> None:
    g = group_parser(sub, "index", help="build a retrieval index (homolog context) from protein sources",
                     description="Retrieval indexes: reference proteins and their annotations, searched with MMseqs2 "
                                 "for the homolog context of a model's prompts.", epilog=EPILOG)
    b = add_command(g, "build", help="index the proteins of SOURCE files (and/or --include indexes)", epilog=EPILOG)
    b.add_argument("sources", nargs="*", metavar="SOURCE", help="protein source files (UniProt flat/XML/TSV, ...)")
    b.add_argument("-o", "--out", required=True, metavar="DIR", help="output index folder (replaced atomically)")
    b.add_argument("--include", action="append", default=[], metavar="INDEX",
                   help="an existing index whose proteins come first (extend it with SOURCEs)")
    b.add_argument("--go-terms", metavar="FILE", help="GO term names (default: the vendored GO table)")
    b.add_argument("--max-proteins", type=int, default=None, metavar="N", help="stop after N proteins")
    b.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from sepit.retrieval.sources import index_from_sources

    m = index_from_sources(args.sources, args.out, go_terms=args.go_terms, include=args.include,
                           max_proteins=args.max_proteins)
    print(f"{args.out}: {m['proteins']} proteins indexed")
    return 0
