"""Inference: answers/s for 32 real questions, sepit's batched generation vs one prompt at a time.

    python -m benchmarks inference --threads 1            # via the runner (writes benchmarks/results/)
    python -m benchmarks.bench_inference                  # default models, 32 questions, all in one batch
    python -m benchmarks.bench_inference --batch-size 8
    python -m benchmarks.bench_inference --quick          # 8 questions

The 32 questions are about 32 real Swiss-Prot proteins at the midpoints of length-quantile bins of the vendored 2014
table (their structure when the vendored store has one), with a function / process / location / yes-no question
each, sorted by protein length as the evaluation does. Three approaches answer the same questions, alternating:

- **one prompt at a time (fp32)**, the reference: the research code's way, per question the prompt embeddings
  (``model.embed_inputs``) then transformers' ``generate(inputs_embeds=...)``, greedy with the KV cache (and the
  model's ``no_repeat_ngram`` as transformers' ``no_repeat_ngram_size``);
- **sepit batched fp32**: ``model.chat`` on batches of ``batch_size``: every prompt prefilled without padding,
  the batch decoded together from one preallocated KV cache, finished answers dropped;
- **sepit batched, auto precision**: the same on a copy of the model cast by ``model.to_precision("auto")``
  (bf16 where the hardware runs it natively — CUDA with bf16, CPUs with AMX / AVX512-BF16 — else fp32): what
  ``sepit.load()`` ships.

The headline ratio is as shipped (auto precision) vs the reference; the same-precision (fp32) ratio is in the summary.
Greedy answers are compared with the reference's (fp32 should agree exactly; bf16 rounds differently).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Any

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (
    Result,
    crop,
    interleave,
    mean_length,
    model_or_default,
    pick_device,
    quantile_sample,
    real_proteins,
    say,
)

TEMPLATES = (
    "<protein>\nWhat is the function of this protein?",
    "<protein>\nWhich biological processes is this protein involved in?",
    "<protein>\nWhere in the cell is this protein located?",
    "<protein>\nDoes this protein have {mf} activity? Answer yes or no.",
)
REFERENCE, FP32, AUTO = "one prompt at a time (fp32)", "sepit batched fp32", "sepit batched, auto precision"


def questions(proteins: list[Any], structures: bool = False) -> list[tuple[list[dict[str, str]], list[Any]]]:
    """(conversation, proteins) per protein; templates in turn; Cα traces only with ``structures``."""
    from sepit.model import Protein

    out = []
    for k, p in enumerate(proteins):
        q = TEMPLATES[k % len(TEMPLATES)].format(mf=(p.go.get("MF") or ("ATP binding",))[0])
        prot = Protein(p.sequence, p.coords, p.coord_mask) if structures else Protein(p.sequence)
        out.append(([{"role": "user", "content": q}], [prot]))
    return out


class _FirstToken:
    """A transformers streamer that only notes when the first generated token arrives."""

    def __init__(self) -> None:
        self.at: float | None = None

    def put(self, value: Any) -> None:
        if self.at is None and value.numel():  # the first put is the (empty) prompt when generating from embeddings
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def reference_answer(model: Any, conv: list[dict[str, str]], prots: list[Any], max_new_tokens: int,
                     streamer: Any = None) -> str:
    """One prompt, the research code's way: prompt embeddings, then transformers' greedy ``generate`` (KV cache)."""
    import torch
    from transformers import GenerationConfig

    with torch.no_grad():
        batch = model.to_device(model.processor([conv], [prots], add_generation_prompt=True))
        embeds = model.embed_inputs(batch)
        # the model's own n-gram rule (the default model: no 3-gram repeated) through transformers' equivalent
        gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               pad_token_id=model.processor.pad_token_id, eos_token_id=model._eos_ids(),
                               no_repeat_ngram_size=model.config.no_repeat_ngram)
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], generation_config=gen,
                                 streamer=streamer)
    return model.processor.llm_tokenizer.decode(out[0], skip_special_tokens=True)


def run(model: Any = None, *, quick: bool = False, n_questions: int | None = None, batch_size: int = 32,
        max_new_tokens: int = 32, proteins: list[Any] | None = None, device: Any = None,
        structures: bool = False, warmup: bool = True) -> Result:
    """The reference and sepit's batched generation (fp32 and auto precision) over the same length-sorted questions
    → Result (ratio = answers/s as shipped ÷ answers/s one prompt at a time)."""
    import torch

    from sepit.model.precision import inference_dtype

    device = pick_device(device)
    n_questions = n_questions or (8 if quick else 32)
    model = model_or_default(model, "inference")
    model.to(device).eval()
    auto_dtype = inference_dtype("auto", device)
    shipped = copy.deepcopy(model).to_precision("auto").eval()
    auto_name = f"{AUTO} ({str(auto_dtype).removeprefix('torch.').replace('bfloat16', 'bf16')} here)"
    max_len = model.config.max_residues
    table = proteins if proteins is not None else real_proteins()
    sample = [crop(p, max_len) for p in quantile_sample(table, n_questions, max_len=max_len)]
    qs = questions(sample, structures)  # sorted by protein length (quantile_sample sorts), as the evaluation does
    chunks = [qs[s:s + batch_size] for s in range(0, len(qs), batch_size)]
    answers: dict[str, dict[int, str]] = {REFERENCE: {}, FP32: {}, auto_name: {}}
    prefill = dict.fromkeys(answers, 0.0)  # seconds to the first generated token (prompt encoding + prefill)

    def one_at_a_time(r: int) -> int:
        chunk = chunks[r] if r >= 0 else chunks[0][:1]
        for k, (conv, prots) in enumerate(chunk):
            t0, first = time.perf_counter(), _FirstToken()
            a = reference_answer(model, conv, prots, max_new_tokens, first)
            if r >= 0:
                answers[REFERENCE][r * batch_size + k] = a
                prefill[REFERENCE] += (first.at or time.perf_counter()) - t0
        return len(chunk)

    def batched(m: Any, key: str):
        def go(r: int) -> int:
            chunk = chunks[r] if r >= 0 else chunks[0][:2]
            t0, first = time.perf_counter(), []

            def on_step(_texts: list[str]) -> None:
                if not first:
                    first.append(time.perf_counter())

            with torch.no_grad():
                out = m.chat([c for c, _ in chunk], [p for _, p in chunk], max_new_tokens=max_new_tokens,
                             callback=on_step)
            if r >= 0:
                answers[key].update({r * batch_size + k: a for k, a in enumerate(out)})
                prefill[key] += first[0] - t0
            return len(chunk)
        return go

    say(f"inference: {n_questions} questions in {len(chunks)} batch(es) of ≤{batch_size}, "
        f"max_new_tokens={max_new_tokens}, auto precision = {auto_dtype}")
    t = interleave({REFERENCE: one_at_a_time, FP32: batched(model, FP32), auto_name: batched(shipped, auto_name)},
                   len(chunks), warmup=1 if warmup else 0, device=device, progress="inference")
    ref = answers[REFERENCE]
    same = {k: sum(ref[i] == a.get(i) for i in ref) for k, a in answers.items()}
    differ = [i for i in ref if answers[auto_name].get(i) != ref[i]]
    shared = [len(os.path.commonprefix([ref[i], answers[auto_name].get(i, "")])) / max(len(ref[i]), 1) for i in differ]
    total = {k: tm.total for k, tm in t.items()}
    decode = {k: total[k] - prefill[k] for k in t}
    ratio = total[REFERENCE] / total[auto_name]
    tok = model.processor.llm_tokenizer
    gen_tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in ref.values())
    rows = [[k, n_questions / total[k], total[k], prefill[k], decode[k], f"{same[k]}/{len(ref)}", tm.peak_mb]
            for k, tm in t.items()]
    per_chunk = [a / b for a, b in zip(t[REFERENCE].seconds, t[auto_name].seconds)]
    return Result(
        name="inference", title=f"3. Inference: answers/s for {n_questions} real questions",
        columns=["approach", "answers/s", "total s", "to first token s", "decoding s",
                 "answers identical to the reference", "peak mem +MiB"],
        rows=rows, ratio=ratio, target=4.0 if str(device) == "cpu" else None,
        summary={"headline: as shipped (auto precision) vs one prompt at a time (fp32)": f"{ratio:.2f}×",
                 "same precision: sepit batched fp32 vs one prompt at a time (fp32)":
                     f"{total[REFERENCE] / total[FP32]:.2f}×",
                 "identical answers batched vs one at a time": f"{same[FP32]}/{len(ref)}",
                 "identical answers auto precision vs one at a time (fp32)": f"{same[auto_name]}/{len(ref)}"
                 + (f" (the {len(differ)} others share their first {100 * statistics.mean(shared):.0f}% of "
                    "characters with the reference's, on average)" if differ else ""),
                 "to first token (prefill) / decoding ratio, fp32 batched":
                     f"{prefill[REFERENCE] / max(prefill[FP32], 1e-9):.2f} / "
                     f"{decode[REFERENCE] / max(decode[FP32], 1e-9):.2f}",
                 "to first token (prefill) / decoding ratio, auto precision":
                     f"{prefill[REFERENCE] / max(prefill[auto_name], 1e-9):.2f} / "
                     f"{decode[REFERENCE] / max(decode[auto_name], 1e-9):.2f}",
                 "per-batch ratios, as shipped (short → long proteins)": ", ".join(f"{x:.2f}" for x in per_chunk),
                 "answer tokens generated (one at a time)": gen_tokens,
                 "prompt tokens (proteins + text), mean": statistics.mean(
                     len(model.processor.encode_chat(c, p, add_generation_prompt=True).input_ids) for c, p in qs),
                 "sample mean length (table mean)": f"{mean_length(sample, max_len):.0f} "
                                                    f"({mean_length(table, max_len):.0f})"},
        notes=[("ratio = total time one prompt at a time (fp32) ÷ total time as shipped (auto precision); "
                "'to first token' = from the call to the first generated token (tokenising, protein encoder, "
                "prompt prefill), the rest is decoding; the three approaches alternate batch by batch"),
               "prompts " + ("with the vendored Cα traces where a protein has one" if structures else
                             "sequence only (--structures adds the vendored Cα traces)"),
               (f"device {device}, batches of {batch_size}, max_new_tokens {max_new_tokens}, greedy; model weights "
                "as built (untrained projector: answer lengths are whatever greedy decoding gives)")],
        params={"n_questions": n_questions, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                "device": str(device), "structures": structures, "auto_dtype": str(auto_dtype)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--questions", type=int)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--structures", action="store_true", help="give the model the vendored Cα traces too")
    ap.add_argument("--device")
    a = ap.parse_args(argv)
    print(run(quick=a.quick, n_questions=a.questions, batch_size=a.batch_size, max_new_tokens=a.max_new_tokens,
              device=a.device, structures=a.structures).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
