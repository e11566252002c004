"""``sepit data build|stats|show``: build the instruction dataset, summarise it, print records."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from sepit.cli import add_command, group_parser
from sepit.config import load_config
from sepit.errors import ConfigError

if TYPE_CHECKING:
    from sepit.data.config import DataConfig


def register(sub: argparse._SubParsersAction) -> None:
    g = group_parser(sub, "data", help="build and inspect the instruction dataset",
                     description="Build SEPIT's instruction dataset (captions + QA) with homology-aware splits, "
                                 "and inspect a built one.",
                     epilog="examples:\n  sepit data build -o data/default\n  sepit data stats data/default\n"
                            "  sepit data show data/default 3")
    p = add_command(g, "build", help="build a dataset directory from protein sources (default: the embedded data)",
                    epilog="example:\n  sepit data build -o data/default\n"
                           "  sepit data build -o data/sprot --source uniprot_sprot.dat.gz --identity 0.3 --seed 0\n"
                           "  sepit data build -o data/mine --source table.tsv.xz --go-terms go_terms.tsv.xz "
                           "--structures pdb/ --structure-map map.tsv\n"
                           "  sepit data build -o data/big --source big.tsv.gz split.leak_tool=mmseqs "
                           "  # MMseqs2 leak searches: 3x slower\n"
                           "Above 100,000 proteins the split clusters first and its leak searches run DIAMOND, "
                           "realigning hits near the\nthreshold with MMseqs2 (split.leak_tool=auto). It takes "
                           "hours, so it saves its progress in .OUT.split-state\nbeside the output: an interrupted "
                           "build resumes there when the same command is run again.")
    p.add_argument("-o", "--output", required=True,
                   help="dataset directory to write: new, empty or an earlier build (replaced atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output even when it holds files that are not a sepit dataset's (deletes them)")
    p.add_argument("--source", action="append", default=[], metavar="FILE",
                   help="protein file: UniProt .dat[.gz]/.xml/.tsv, FASTA or the 2014 GO table (repeatable); "
                        "none: the embedded default")
    p.add_argument("--go-terms", metavar="FILE", help="GO terms table (names, definitions) for the 2014 table")
    p.add_argument("--human", metavar="FILE", help="human UniProt table for the 2014 table")
    p.add_argument("--structures", metavar="DIR", help="directory of PDB/mmCIF files (with --structure-map)")
    p.add_argument("--structure-map", metavar="TSV", help="TSV mapping structure file/chain → protein accession")
    p.add_argument("--structure-store", metavar="NPZ", help="a ready structure store (.npz) instead of files")
    p.add_argument("--identity", type=float, help="identity threshold of the active split (default 0.3)")
    p.add_argument("--extra-identity", type=float, action="append", metavar="T",
                   help="further thresholds recorded per protein (default 0.5; repeatable)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--max-proteins", type=int, metavar="N", help="keep only the first N proteins")
    p.add_argument("--threads", type=int, help="MMseqs2 threads (default: all CPUs this process may use)")
    p.add_argument("--config", metavar="YAML", help="a `kind: data` config; options above override it")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. instructions.yesno_pairs_per_task=2)")
    p.set_defaults(func=_build)

    p = add_command(g, "import-metastudent",
                    help="the full 2014 Swiss-Prot GO set (516,371 proteins) from Debian's metastudent-data → a table",
                    epilog="example (after `apt-get install metastudent-data ncbi-blast+`):\n"
                           "  sepit data import-metastudent -o sprot2014_full.tsv.gz\n"
                           "  sepit data build -o data/full --source sprot2014_full.tsv.gz")
    p.add_argument("-o", "--output", required=True, help="table to write (.tsv or .tsv.gz)")
    p.add_argument("--dir", default=None, metavar="DIR",
                   help="the package's dataset directory (default /usr/share/metastudent-data/dataset_201401)")
    p.add_argument("--eval-from", metavar="TABLE",
                   help="a table (accession, split) whose eval rows stay marked eval (default: the vendored marks of "
                        "the 3,269 eval proteins of the shared 50k table)")
    p.set_defaults(func=_import_metastudent)

    p = add_command(g, "stats", help="counts per split/task/kind and a length histogram of a built dataset",
                    epilog="example:\n  sepit data stats data/default")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--json", action="store_true", help="print the manifest's counts as JSON")
    p.set_defaults(func=_stats)

    p = add_command(g, "show", help="print N records of a built dataset",
                    epilog="example:\n  sepit data show data/default 5 --split test --task go_mf")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("n", type=int, nargs="?", default=5, help="how many records (default 5)")
    p.add_argument("--split", choices=("train", "valid", "test"), help="only this split")
    p.add_argument("--task", action="append", help="only these tasks (repeatable)")
    p.add_argument("--kind", action="append", choices=("caption", "open", "yesno"), help="only these kinds")
    p.add_argument("--skip", type=int, default=0, help="skip the first K matching records")
    p.add_argument("--json", action="store_true", help="print raw JSON lines")
    p.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    from sepit.data.build import build_dataset

    cfg = build_config(args)
    manifest = build_dataset(cfg, args.output, overwrite=args.overwrite)
    c = manifest["counts"]
    print(f"wrote {args.output}: proteins {c['proteins']}, records {c['records']}, structures {c['structures']}")
    skipped = manifest["skipped"]
    if skipped:
        print(f"skipped {sum(skipped.values())}: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    return 0


def build_config(args: argparse.Namespace) -> DataConfig:
    """The DataConfig of ``sepit data build``: --config (or the defaults), then key=value overrides, then options."""
    from sepit.data.config import DataConfig

    overrides = list(args.overrides)
    cfg = load_config(args.config, DataConfig, overrides) if args.config else None
    if cfg is None:
        from sepit.config import from_dict

        cfg = from_dict(DataConfig, {}, overrides)
    # all options in one replace(): the config's checks (re-run by replace) see them together, e.g. --structures
    # and --structure-map, which only make sense as a pair
    changes = {name: getattr(args, name) for name in ("go_terms", "human", "structures", "structure_map",
                                                       "structure_store", "seed", "max_proteins")
               if getattr(args, name) is not None}
    if args.source:
        changes["sources"] = list(args.source)
    split_changes = {k: v for k, v in (("identity", args.identity), ("threads", args.threads),
                                       ("extra_identities", list(args.extra_identity or []) or None))
                     if v is not None}
    try:
        cfg = replace(cfg, **changes, split=replace(cfg.split, **split_changes))
    except ValueError as e:
        raise ConfigError(f"sepit data build: {e}") from None
    return cfg


def _import_metastudent(args: argparse.Namespace) -> int:
    from sepit.data.readers.metastudent import DEFAULT_DIR, convert_metastudent
    from sepit.data.readers.skiplog import SkipLog

    skips = SkipLog()
    c = convert_metastudent(args.output, args.dir or DEFAULT_DIR, eval_from=args.eval_from, skips=skips)
    print(f"wrote {args.output}: {c['proteins']} proteins ({c['eval']} marked eval); GO annotations: "
          f"MF {c['MFO']}, BP {c['BPO']}, CC {c['CCO']}")
    if skips:
        print(f"skipped: {skips.summary()}")
    return 0


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *[fmt(r) for r in rows]])


def _stats(args: argparse.Namespace) -> int:
    from sepit.data.dataset import InstructionDataset

    ds = InstructionDataset(args.dir)
    m = ds.manifest
    c = m["counts"]
    if args.json:
        print(json.dumps({"counts": c, "splits": m["splits"], "skipped": m["skipped"]}, indent=2))
        return 0
    splits = ("train", "valid", "test")
    print(f"dataset {args.dir} (seed {m['seed']}, active split at {m['active_identity']:g} identity)\n")
    print(_table([["proteins", *[c["proteins"][s] for s in splits], sum(c["proteins"].values())],
                  ["records", *[c["records"][s] for s in splits], sum(c["records"].values())]],
                 ["", *splits, "total"]))
    print()
    rows = []
    for task, kinds in c["by_task"].items():
        for kind, per in kinds.items():
            extra = ""
            if kind == "yesno":
                a = c["yesno_answers"].get(task, {})
                extra = f"yes {a.get('yes', 0)} / no {a.get('no', 0)}"
            rows.append([task, kind, *[per[s] for s in splits], sum(per.values()), extra])
    print(_table(rows, ["task", "kind", *splits, "total", "balance"]))
    print()
    thr = [[t, s["clusters"], *[s["proteins"][x] for x in splits], s["dropped"], s["max_identity_to_train"]["max"]]
           for t, s in m["splits"].items()]
    print(_table(thr, ["identity", "clusters", *splits, "dropped", "max id held-out→train"]))
    lengths: Counter[int] = Counter()
    for pid in ds.protein_ids():
        n = ds.protein_info(pid)["length"]
        lengths[min(n // 100, 10)] += 1
    print("\nlength histogram (residues)")
    top = max(lengths.values(), default=1)
    for b in range(11):
        label = f"{b * 100}-{b * 100 + 99}" if b < 10 else "1000+"
        print(f"  {label:>9}  {lengths.get(b, 0):7d}  {'#' * round(40 * lengths.get(b, 0) / top)}")
    if m["skipped"]:
        print("\nskipped: " + ", ".join(f"{k} {v}" for k, v in m["skipped"].items()))
    return 0


def _show(args: argparse.Namespace) -> int:
    from sepit.data.dataset import InstructionDataset

    ds = InstructionDataset(args.dir)
    shown = 0
    for i, rec in enumerate(ds.records(split=args.split, kinds=args.kind, tasks=args.task)):
        if i < args.skip:
            continue
        if shown >= args.n:
            break
        if args.json:
            print(rec.to_line())
        else:
            print(f"[{rec.id}] task={rec.task} kind={rec.kind} split={rec.split}")
            for m in rec.messages:
                print(f"  {m['role']}: {m['content']}")
            print()
        shown += 1
    if shown == 0:
        print("no matching records")
    return 0
