"""Write src/sepit/resources/example_questions.jsonl: a small bring-your-own-questions file for `sepit eval questions`,
made from the vendored default data (deterministic; UniProtKB/Swiss-Prot 2014_01 + GO, CC BY 4.0 — see
src/sepit/resources/default_data/README.md).

Ten proteins marked `eval` (never trained on) with molecular-function annotations; per protein one open question (its
molecular functions), one multiple-choice question (its cellular component among three others of the file) and a
yes/no pair (one true molecular function, one that another protein has and it lacks).

    python scripts/make_example_questions.py
"""

from __future__ import annotations

import csv
import json
import lzma
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "sepit" / "resources" / "default_data"
OUT = REPO / "src" / "sepit" / "resources" / "example_questions.jsonl"


def main() -> None:
    with lzma.open(DATA / "go_terms.tsv.xz", "rt", encoding="utf-8") as f:
        names = {r["go_id"]: r["name_2022"] or r["name_2014"] for r in csv.DictReader(f, delimiter="\t")}
    with lzma.open(DATA / "proteins.tsv.xz", "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t")
                if r["split"] == "eval" and r["GO_MF"] and r["GO_CC"] and int(r["length"]) <= 400]
    rng = random.Random(0)
    rows = sorted(rng.sample(rows, 10), key=lambda r: r["accession"])
    terms = {k: sorted({t for r in rows for t in r[k].split(";") if t in names}) for k in ("GO_MF", "GO_CC")}
    lines = []
    for r in rows:
        acc, seq = r["accession"], r["sequence"]
        mf = [t for t in r["GO_MF"].split(";") if t in names]
        cc = [t for t in r["GO_CC"].split(";") if t in names]
        lines.append({"id": f"{acc}/open", "task": "go_mf", "sequence": seq,
                      "question": "What is the molecular function of this protein?",
                      "answer": "; ".join(names[t] for t in mf)})
        others = rng.sample([t for t in terms["GO_CC"] if t not in cc], 3)
        options = [names[t] for t in [cc[0], *others]]
        rng.shuffle(options)
        lines.append({"id": f"{acc}/choice", "task": "go_cc", "sequence": seq,
                      "question": "Which cellular component is this protein found in?",
                      "options": options, "answer": names[cc[0]]})
        lacks = rng.choice([t for t in terms["GO_MF"] if t not in mf])
        for term, answer in ((mf[0], "yes"), (lacks, "no")):
            lines.append({"id": f"{acc}/yesno/{answer}", "task": "go_mf", "sequence": seq,
                          "question": f"Does this protein have the molecular function '{names[term]}'?",
                          "answer": answer})
    OUT.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    print(f"wrote {OUT}: {len(lines)} questions about {len(rows)} proteins")


if __name__ == "__main__":
    main()
