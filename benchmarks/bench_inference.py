"""Inference: answers/s for 32 real questions, sepit's batched generation with the KV cache vs one prompt at a time.

    python -m benchmarks.bench_inference                  # default models, 32 questions, batches of 8
    python -m benchmarks.bench_inference --batch-size 16
    python -m benchmarks.bench_inference --quick          # 8 questions

The 32 questions are about 32 real Swiss-Prot proteins at the midpoints of length-quantile bins of the vendored 2014
table (their structure when the vendored store has one), with a function / process / location / yes-no question
each. sepit's way is its evaluation's (``sepit.eval.run.predict_with_model``): questions sorted by protein length,
``model.chat`` on batches of ``batch_size`` (left-padded, greedy, KV cache). The reference answers one prompt at a
time (``model.chat`` with one conversation: greedy with the KV cache too, as the research code's generate). The
two alternate batch by batch over the same sorted batches; the answers are compared (greedy: they should agree).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Result, crop, interleave, mean_length, pick_device, quantile_sample, real_proteins, say

TEMPLATES = (
    "<protein>\nWhat is the function of this protein?",
    "<protein>\nWhich biological processes is this protein involved in?",
    "<protein>\nWhere in the cell is this protein located?",
    "<protein>\nDoes this protein have {mf} activity? Answer yes or no.",
)


def questions(proteins: list[Any], structures: bool = False) -> list[tuple[list[dict[str, str]], list[Any]]]:
    """(conversation, proteins) per protein; templates in turn; Cα traces only with ``structures``."""
    from sepit.model import ProteinInput

    out = []
    for k, p in enumerate(proteins):
        q = TEMPLATES[k % len(TEMPLATES)].format(mf=(p.go.get("MF") or ("ATP binding",))[0])
        prot = ProteinInput(p.sequence, p.coords, p.coord_mask) if structures else ProteinInput(p.sequence)
        out.append(([{"role": "user", "content": q}], [prot]))
    return out


def run(model: Any = None, *, quick: bool = False, n_questions: int | None = None, batch_size: int = 8,
        max_new_tokens: int = 32, proteins: list[Any] | None = None, device: Any = None,
        structures: bool = False, warmup: bool = True) -> Result:
    """Batched vs one-at-a-time answers over the same length-sorted batches → Result (ratio = answers/s batched ÷
    answers/s one at a time)."""
    import torch

    device = pick_device(device)
    n_questions = n_questions or (8 if quick else 32)
    if model is None:
        from sepit.model import build_model, default

        say("inference: loading the default model")
        model = build_model(default())
    model.to(device).eval()
    max_len = model.config.max_residues
    table = proteins if proteins is not None else real_proteins()
    sample = [crop(p, max_len) for p in quantile_sample(table, n_questions, max_len=max_len)]
    qs = questions(sample, structures)  # sorted by protein length already (quantile_sample sorts), as the evaluation does
    chunks = [qs[s:s + batch_size] for s in range(0, len(qs), batch_size)]
    answers: dict[str, dict[int, str]] = {"one": {}, "batch": {}}
    prefill = {"one": 0.0, "batch": 0.0}  # seconds to the first generated token (prompt encoding + prefill)

    def chat(convs: list[Any], prots: list[Any], key: str, timed_round: bool) -> list[str]:
        t0, first = time.perf_counter(), []

        def on_step(_texts: list[str]) -> None:
            if not first:
                first.append(time.perf_counter())

        out = model.chat(convs, prots, max_new_tokens=max_new_tokens, callback=on_step)
        if timed_round and first:
            prefill[key] += first[0] - t0
        return out

    @torch.no_grad()
    def one_at_a_time(r: int) -> int:
        chunk = chunks[r] if r >= 0 else chunks[0][:1]
        for k, (conv, prots) in enumerate(chunk):
            a = chat([conv], [prots], "one", r >= 0)[0]
            if r >= 0:
                answers["one"][r * batch_size + k] = a
        return len(chunk)

    @torch.no_grad()
    def batched(r: int) -> int:
        chunk = chunks[r] if r >= 0 else chunks[0][:2]
        out = chat([c for c, _ in chunk], [p for _, p in chunk], "batch", r >= 0)
        if r >= 0:
            answers["batch"].update({r * batch_size + k: a for k, a in enumerate(out)})
        return len(chunk)

    say(f"inference: {n_questions} questions in {len(chunks)} batch(es) of ≤{batch_size}, "
        f"max_new_tokens={max_new_tokens}")
    t = interleave({"one prompt at a time": one_at_a_time, f"sepit batched ({batch_size})": batched}, len(chunks),
                   warmup=1 if warmup else 0, device=device, progress="inference")
    one, bat = t["one prompt at a time"], t[f"sepit batched ({batch_size})"]
    ratio = one.total / bat.total
    per_chunk = [a / b for a, b in zip(one.seconds, bat.seconds)]
    tok = model.processor.llm_tokenizer
    gen_tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers["one"].values())
    same = sum(answers["one"][i] == answers["batch"].get(i) for i in answers["one"])
    rows = [[n, n_questions / tm.total, tm.total, prefill[k], tm.total - prefill[k], tm.peak_mb]
            for (n, tm), k in zip(t.items(), ("one", "batch"))]
    return Result(
        name="inference", title=f"3. Inference: answers/s for {n_questions} real questions",
        columns=["approach", "answers/s", "total s", "to first token s", "decoding s", "peak mem +MiB"],
        rows=rows, ratio=ratio, target=4.0 if str(device) == "cpu" else None,
        summary={"per-batch ratios (short → long proteins)": ", ".join(f"{x:.2f}" for x in per_chunk),
                 "median per-batch ratio": statistics.median(per_chunk),
                 "identical answers batched vs one at a time": f"{same}/{len(answers['one'])}",
                 "ratio to first token (prefill) / decoding": (f"{prefill['one'] / max(prefill['batch'], 1e-9):.2f} / "
                                                                f"{(one.total - prefill['one']) / max(bat.total - prefill['batch'], 1e-9):.2f}"),
                 "answer tokens generated (one at a time)": gen_tokens,
                 "prompt tokens (proteins + text), mean": statistics.mean(
                     len(model.processor.encode_chat(c, p, add_generation_prompt=True).input_ids) for c, p in qs),
                 "sample mean length (table mean)": f"{mean_length(sample, max_len):.0f} "
                                                    f"({mean_length(table, max_len):.0f})"},
        notes=[("ratio = total time one at a time ÷ total time batched (= answers/s batched ÷ one at a time); "
                "'to first token' = from the call to the first generated token (tokenising, protein encoder, "
                "prompt prefill), the rest is decoding"),
               "prompts " + ("with the vendored Cα traces where a protein has one" if structures else
                             "sequence only (--structures adds the vendored Cα traces)"),
               (f"device {device}, max_new_tokens {max_new_tokens}, greedy; model weights as built (untrained "
                "projector: answer lengths are whatever greedy decoding gives)")],
        params={"n_questions": n_questions, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                "device": str(device), "structures": structures})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--questions", type=int)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--structures", action="store_true", help="give the model the vendored Cα traces too")
    ap.add_argument("--device")
    a = ap.parse_args(argv)
    print(run(quick=a.quick, n_questions=a.questions, batch_size=a.batch_size, max_new_tokens=a.max_new_tokens,
              device=a.device, structures=a.structures).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
