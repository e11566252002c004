"""Yes/no scoring: items/s for real yes/no pairs asked as the evaluation asks them, each prompt alone vs sepit's
batches, without and with a prefix store.

    python -m benchmarks yesno --threads 1        # via the runner (writes benchmarks/results/)
    python -m benchmarks.bench_yesno              # default model, 24 proteins × a yes/no pair × 2 prompts = 96
    python -m benchmarks.bench_yesno --quick      # 8 proteins

The evaluation asks every held-out protein a yes/no *pair* (the true claim and a hard negative) after the same
protein and the same homolog context, and asks it again without the context (the no-homologs run); it scores each
question by P(yes) from one forward pass. Here the proteins are real Swiss-Prot proteins at the midpoints of
length-quantile bins of the vendored 2014 table, each with a homolog context block in the prompt's form and two GO
molecular-function questions; each batch is asked with its context, then without. Three approaches score the same
prompts, alternating:

- **each prompt alone**, the reference: ``model.yes_no_probability`` on one prompt at a time (the whole prompt
  through the LLM for each question);
- **sepit batches**: ``model.yes_no_probability`` on length-sorted batches of ``batch_size``, a pair side by side:
  a protein is encoded once; the prompts run packed into one sequence (``sepit.model.packing``), the prefix two
  questions share (chat header, protein, context) once, and each question's own end from its KV cache;
- **sepit batches + prefix store**: the same with a ``PrefixStore``: the questions asked without context find
  their beginning (chat header and protein) from the first pass and run only their own tokens.

P(yes) must agree (float32: to ~1e-5); the ratio is items/s of the batches with the store ÷ each prompt alone.
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

ALONE, SHARED, STORE = "each prompt alone", "sepit batches", "sepit batches + prefix store"
CONTEXT = ("Homologs (MMseqs2) and their GO molecular functions:\n"
           "1. P0A7V8, 48% identity over 92% of this protein: {a}\n"
           "2. Q9XYZ1, 31% identity over 40% of this protein: {b}")
QUESTIONS = ('Is "{term}" one of this protein\'s molecular functions? Answer yes or no.',
             "Is this protein annotated with the GO molecular function {term}?")


def pairs(proteins: list[Any], context: bool = True) -> list[tuple[list[dict[str, str]], list[Any]]]:
    """Two prompts per protein (a yes/no pair: same protein and context, different claims), pair by pair; without
    ``context``, the same questions right after the protein (the no-homologs prompt)."""
    from sepit.model import Protein

    out = []
    for p in proteins:
        mf = list(p.go.get("MF") or ()) + ["ATP binding", "metal ion binding", "DNA binding"]
        ctx = CONTEXT.format(a=", ".join(mf[:3]), b="no GO molecular functions annotation") + "\n" if context else ""
        for q, term in zip(QUESTIONS, (mf[0], "oxygen carrier activity")):
            out.append(([{"role": "user", "content": f"<protein>\n{ctx}{q.format(term=term)}"}],
                        [Protein(p.sequence)]))
    return out


def run(model: Any = None, *, quick: bool = False, n_proteins: int | None = None, batch_size: int = 16,
        proteins: list[Any] | None = None, device: Any = None, warmup: bool = True) -> Result:
    """Each yes/no prompt alone vs sepit's batches without and with a prefix store, over the same prompts → Result
    (ratio = items/s of the batches with the store ÷ items/s alone)."""
    import torch

    from sepit.model.packing import PrefixStore

    device = pick_device(device)
    n_proteins = n_proteins or (8 if quick else 24)
    model = model_or_default(model, "yesno")
    model.to(device).eval()
    max_len = model.config.max_residues
    table = proteins if proteins is not None else real_proteins()
    sample = [crop(p, max_len) for p in quantile_sample(table, n_proteins, max_len=max_len)]
    with_ctx, without = pairs(sample), pairs(sample, context=False)
    # one round: a batch of pairs with their context, then the same questions without it
    rounds = [with_ctx[s:s + batch_size] + without[s:s + batch_size] for s in range(0, len(with_ctx), batch_size)]
    qs = [q for r in rounds for q in r]
    starts = [sum(len(r) for r in rounds[:i]) for i in range(len(rounds))]
    p_yes: dict[str, dict[int, float]] = {ALONE: {}, SHARED: {}, STORE: {}}
    store = PrefixStore(2.0)

    def score(convs: list[Any], prots: list[Any], st: Any = None) -> list[float]:
        with torch.no_grad():
            batch = model.to_device(model.processor(convs, prots, add_generation_prompt=True))
            return model.yes_no_probability(batch, st).tolist()

    def alone(r: int) -> int:
        chunk = rounds[r] if r >= 0 else rounds[0][:1]
        for k, (conv, prots) in enumerate(chunk):
            p = score([conv], [prots])[0]
            if r >= 0:
                p_yes[ALONE][starts[r] + k] = p
        return len(chunk)

    def batched(name: str, st: Any) -> Any:
        def go(r: int) -> int:
            chunk = rounds[r] if r >= 0 else rounds[0][:2]
            half = len(chunk) // 2 if r >= 0 else len(chunk)
            out = []
            for part in (chunk[:half], chunk[half:]):  # with context, then without: two calls, as two runs make
                if part:
                    out += score([c for c, _ in part], [p for _, p in part], st if r >= 0 else None)
            if r >= 0:
                p_yes[name].update({starts[r] + k: p for k, p in enumerate(out)})
            return len(chunk)
        return go

    say(f"yesno: {len(qs)} prompts ({n_proteins} proteins × a pair, with and without context) in {len(rounds)} "
        f"round(s) of ≤{2 * batch_size}")
    t = interleave({ALONE: alone, SHARED: batched(SHARED, None), STORE: batched(STORE, store)}, len(rounds),
                   warmup=1 if warmup else 0, device=device, progress="yesno")
    total = {k: tm.total for k, tm in t.items()}
    ratio = total[ALONE] / total[STORE]
    diff = max(abs(p_yes[ALONE][i] - p_yes[k][i]) for k in (SHARED, STORE) for i in p_yes[ALONE])
    tokens = [len(model.processor.encode_chat(c, p, add_generation_prompt=True).input_ids) for c, p in qs]
    rows = [[k, len(qs) / total[k], total[k], tm.peak_mb] for k, tm in t.items()]
    return Result(
        name="yesno", title=f"8. Yes/no scoring: items/s for {len(qs)} real yes/no prompts ({n_proteins} pairs, with "
                            "and without homolog context)",
        columns=["approach", "items/s", "total s", "peak mem +MiB"], rows=rows, ratio=ratio,
        summary={"max |P(yes) batched − P(yes) alone|": f"{diff:.1e}",
                 "sepit batches vs each prompt alone": f"{total[ALONE] / total[SHARED]:.2f}×",
                 "prefix store vs sepit batches": f"{total[SHARED] / total[STORE]:.2f}×",
                 "prompt tokens (proteins + text), mean": f"{statistics.mean(tokens):.0f}",
                 "beginnings reused / run": f"{store.hits} / {store.misses}",
                 "per-round ratios (short → long proteins)":
                     ", ".join(f"{a / b:.2f}" for a, b in zip(t[ALONE].seconds, t[STORE].seconds))},
        notes=[("ratio = total time each prompt alone ÷ total time of the batches with a prefix store; the "
                "approaches alternate round by round"),
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
