"""Yes/no scoring: items/s for real yes/no pairs, each prompt alone vs batches that share each pair's prefix.

    python -m benchmarks yesno --threads 1        # via the runner (writes benchmarks/results/)
    python -m benchmarks.bench_yesno              # default model, 24 proteins × a yes/no pair = 48 prompts
    python -m benchmarks.bench_yesno --quick      # 8 proteins

The evaluation asks every held-out protein a yes/no *pair* (the true claim and a hard negative) after the same
protein and the same homolog context; it scores each question by P(yes) from one forward pass. Here the proteins are
real Swiss-Prot proteins at the midpoints of length-quantile bins of the vendored 2014 table, each with a homolog
context block in the prompt's form and two GO molecular-function questions. Two approaches score the same prompts,
alternating:

- **each prompt alone**, the reference: ``model.yes_no_probability`` on one prompt at a time (the whole prompt
  through the LLM for each question);
- **sepit, pairs share their prefix**: ``model.yes_no_probability`` on length-sorted batches of ``batch_size``, a
  pair side by side: a protein is encoded once, the prompt prefix two questions share (chat header, protein,
  context) runs once, and each question's own end runs from its KV cache.

P(yes) must agree (float32: to ~1e-5); the ratio is items/s.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Result, crop, interleave, model_or_default, pick_device, quantile_sample, real_proteins, say

ALONE, SHARED = "each prompt alone", "sepit, pairs share their prefix"
CONTEXT = ("Homologs (MMseqs2) and their GO molecular functions:\n"
           "1. P0A7V8, 48% identity over 92% of this protein: {a}\n"
           "2. Q9XYZ1, 31% identity over 40% of this protein: {b}")
QUESTIONS = ('Is "{term}" one of this protein\'s molecular functions? Answer yes or no.',
             "Is this protein annotated with the GO molecular function {term}?")


def pairs(proteins: list[Any]) -> list[tuple[list[dict[str, str]], list[Any]]]:
    """Two prompts per protein (a yes/no pair: same protein and context, different claims), pair by pair."""
    from sepit.model import Protein

    out = []
    for p in proteins:
        mf = list(p.go.get("MF") or ()) + ["ATP binding", "metal ion binding", "DNA binding"]
        ctx = CONTEXT.format(a=", ".join(mf[:3]), b="no GO molecular functions annotation")
        for q, term in zip(QUESTIONS, (mf[0], "oxygen carrier activity")):
            out.append(([{"role": "user", "content": f"<protein>\n{ctx}\n{q.format(term=term)}"}],
                        [Protein(p.sequence)]))
    return out


def run(model: Any = None, *, quick: bool = False, n_proteins: int | None = None, batch_size: int = 16,
        proteins: list[Any] | None = None, device: Any = None, warmup: bool = True) -> Result:
    """Each yes/no prompt alone vs batches sharing each pair's prefix, over the same prompts → Result (ratio = items/s
    batched ÷ items/s alone)."""
    import torch

    device = pick_device(device)
    n_proteins = n_proteins or (8 if quick else 24)
    model = model_or_default(model, "yesno")
    model.to(device).eval()
    max_len = model.config.max_residues
    table = proteins if proteins is not None else real_proteins()
    qs = pairs([crop(p, max_len) for p in quantile_sample(table, n_proteins, max_len=max_len)])
    chunks = [qs[s:s + batch_size] for s in range(0, len(qs), batch_size)]
    p_yes: dict[str, dict[int, float]] = {ALONE: {}, SHARED: {}}

    def score(convs: list[Any], prots: list[Any]) -> list[float]:
        with torch.no_grad():
            batch = model.to_device(model.processor(convs, prots, add_generation_prompt=True))
            return model.yes_no_probability(batch).tolist()

    def alone(r: int) -> int:
        chunk = chunks[r] if r >= 0 else chunks[0][:1]
        for k, (conv, prots) in enumerate(chunk):
            p = score([conv], [prots])[0]
            if r >= 0:
                p_yes[ALONE][r * batch_size + k] = p
        return len(chunk)

    def shared(r: int) -> int:
        chunk = chunks[r] if r >= 0 else chunks[0][:2]
        out = score([c for c, _ in chunk], [p for _, p in chunk])
        if r >= 0:
            p_yes[SHARED].update({r * batch_size + k: p for k, p in enumerate(out)})
        return len(chunk)

    say(f"yesno: {len(qs)} prompts ({n_proteins} proteins × a pair) in {len(chunks)} batch(es) of ≤{batch_size}")
    t = interleave({ALONE: alone, SHARED: shared}, len(chunks), warmup=1 if warmup else 0, device=device,
                   progress="yesno")
    total = {k: tm.total for k, tm in t.items()}
    ratio = total[ALONE] / total[SHARED]
    diff = max(abs(p_yes[ALONE][i] - p_yes[SHARED][i]) for i in p_yes[ALONE])
    tokens = [len(model.processor.encode_chat(c, p, add_generation_prompt=True).input_ids) for c, p in qs]
    rows = [[k, len(qs) / total[k], total[k], tm.peak_mb] for k, tm in t.items()]
    return Result(
        name="yesno", title=f"8. Yes/no scoring: items/s for {len(qs)} real yes/no prompts ({n_proteins} pairs)",
        columns=["approach", "items/s", "total s", "peak mem +MiB"], rows=rows, ratio=ratio,
        summary={"max |P(yes) shared − P(yes) alone|": f"{diff:.1e}",
                 "prompt tokens (proteins + text), mean": f"{statistics.mean(tokens):.0f}",
                 "per-batch ratios (short → long proteins)":
                     ", ".join(f"{a / b:.2f}" for a, b in zip(t[ALONE].seconds, t[SHARED].seconds))},
        notes=[("ratio = total time each prompt alone ÷ total time in batches sharing each pair's prefix; the "
                "approaches alternate batch by batch"),
               f"device {device}, batches of {batch_size}, sequence-only prompts, model weights as built"],
        params={"n_proteins": n_proteins, "batch_size": batch_size, "device": str(device)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--proteins", type=int)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device")
    a = ap.parse_args(argv)
    print(run(quick=a.quick, n_proteins=a.proteins, batch_size=a.batch_size, device=a.device).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
