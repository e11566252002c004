"""Protein tokens in the LLM: stage-1 training throughput (useful tokens/s), sepit's unpadded protein tokens vs the
research code's scheme (every protein padded to 1024 ESM positions and all 1024 projected positions fed to the LLM).

    python -m benchmarks.bench_tokens                     # default models (`sepit models fetch` first)
    python -m benchmarks.bench_tokens --quick             # one batch, one pass
    python -m benchmarks.bench_tokens --peak-tflops 989   # also report MFU against that peak (e.g. H100 bf16)
    python -m benchmarks.bench_tokens --shapes paper --device cuda --peak-tflops 989   # ESM-2 650M + TinyLlama-1.1B
    python -m benchmarks.bench_tokens --shapes paper --dry-run   # build on the meta device, count, no steps (CPU)

Both approaches train the same model (stage-1 groups plm, structure, projector, llm; fused AdamW, as the training
loop) on the same batches of real Swiss-Prot proteins: 4 batches of 2 (the research code's stage-1 batch per GPU),
each batch two neighbours in the length-sorted vendored 2014 table (as sepit's length-grouped sampler pairs them in
a large dataset) anchored at the midpoints of 4 length-quantile bins (so the batches follow the table's length
distribution), each protein with a caption conversation built from its GO terms. A step = collate + forward +
backward + clip + AdamW step; the two approaches alternate step by step, over 2 passes (the second in reverse
order), and each batch's time is the median of its passes. "Useful tokens" are the conversation's real tokens
(text + one slot per residue), the same for both; the reference's padded slots are not useful. The reference is
implemented here, minimally: the sepit batch is re-expanded to 1024 ``<protein>`` slots per protein, the protein
inputs are padded to 1024 ESM positions (padding masked inside ESM, as the research code's tokenizer does), and the
penultimate states of all 1024 positions go through the projector into the LLM. Everything else (loss only on the
answer, logits only where the loss needs them) is sepit's in both, so the ratio isolates the protein-token scheme.
Proteins are given without structure here (the O(L²) structure cost is bench_scaling's).

Shapes (``--shapes``): ``default`` is the default model, with its installed weights when ``sepit models fetch`` has
run and no ``--tokenizer`` is given, else its architecture with random weights; ``paper`` is always random weights
of ESM-2 650M (esm2_t33_650M_UR50D) + TinyLlama-1.1B-Chat, architectures from ``sepit.model._known`` (no download:
no such weights exist here; throughput does not depend on the weights' values). Random models get the real ESM-2
alphabet and, for the LLM, the tokenizer in ``--tokenizer DIR`` (any Hugging Face tokenizer folder), else the
installed default LLM's (SmolLM2's BPE), else a byte-level one (about 4× the text tokens of a trained BPE: noted in
the result). The LLM's vocabulary is its architecture's + the 3 protein tokens, grown to the tokenizer's size when
larger (TinyLlama's 32,000 → 49,155 with SmolLM2's tokenizer, about 4% more parameters). On CUDA the steps run
under bf16 autocast with fp32 master weights, as ``precision: auto`` trains there; on a CPU in fp32.

MFU (``--peak-tflops``): model FLOPs of the useful work ÷ time ÷ peak, where a step's FLOPs are, per sequence,
6·N·T + 12·layers·hidden·T² (PaLM appendix B) for the LLM's blocks (N without embeddings and LM head) and for
ESM's (over each protein's residues, projector included), plus 6·(LM head) per answer token (sepit computes logits
only there). Each step includes the AdamW update of every stage-1 parameter, which at batch 2 is a large share of a
GPU step.
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/bench_tokens.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (
    Result,
    caption,
    crop,
    interleave,
    mean_length,
    mfu,
    pick_device,
    real_proteins,
    say,
    transformer_train_flops,
)

STAGE1_LR = {"plm": 1e-5, "structure": 1e-5, "projector": 1e-4, "llm": 1e-5}  # configs/train/stage1_paper.yaml
QUESTION = "<protein>\nDescribe this protein: its function, the processes it takes part in and where it is found."


def conversations(proteins: list[Any]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": QUESTION}, {"role": "assistant", "content": caption(p)}] for p in proteins]


def length_grouped_batches(table: list[Any], batches: int, batch_size: int, max_len: int) -> list[list[Any]]:
    """``batches`` batches of ``batch_size`` proteins of about the same length (neighbours in the length-sorted
    table, as sepit's length-grouped sampler forms them from a large dataset), anchored at the midpoints of
    ``batches`` length-quantile bins so that the batches follow the table's length distribution."""
    pool = sorted(table, key=lambda p: (min(len(p.sequence), max_len), p.accession))
    out = []
    for k in range(batches):
        i = min(len(pool) - batch_size, int((k + 0.5) / batches * len(pool)))
        out.append(pool[max(0, i):max(0, i) + batch_size])
    return out


def reference_batch(model: Any, convs: list[list[dict[str, str]]], proteins: list[str], pad_to: int
                    ) -> dict[str, Any]:
    """The research code's batch: every ``<protein>`` marker expanded to ``pad_to`` slots, protein inputs padded to
    ``pad_to`` ESM positions (``<cls>`` residues ``<eos>`` ``<pad>``…, padding masked in ESM)."""
    import torch

    proc = model.processor
    examples = []
    for conv, seq in zip(convs, proteins):
        ex = proc.encode_chat(conv, [seq])
        ids, labels, out_ids, out_labels, i = ex.input_ids, ex.labels, [], [], 0
        while i < len(ids):
            if ids[i] == proc.protein_token_id:  # a run of n slots → pad_to slots
                j = i
                while j < len(ids) and ids[j] == proc.protein_token_id:
                    j += 1
                out_ids += [proc.protein_token_id] * pad_to
                out_labels += [-100] * pad_to
                i = j
                continue
            out_ids.append(ids[i])
            out_labels.append(labels[i])
            i += 1
        ex.input_ids, ex.labels = out_ids, out_labels
        examples.append(ex)
    batch = proc.collate(examples)
    width = batch["protein_input_ids"].shape[1]
    if width > pad_to:
        raise ValueError(f"a protein needs {width} ESM positions, more than pad_to={pad_to}")
    extra = pad_to - width
    if extra:
        pad = proc.protein_tokenizer.pad_token_id
        p = batch["protein_input_ids"].shape[0]
        batch["protein_input_ids"] = torch.cat([batch["protein_input_ids"],
                                                torch.full((p, extra), pad, dtype=torch.long)], 1)
        for k in ("protein_attention_mask", "protein_residue_mask", "coord_mask"):
            batch[k] = torch.cat([batch[k], torch.zeros((p, extra), dtype=torch.bool)], 1)
        batch["coords"] = torch.cat([batch["coords"], torch.zeros((p, extra, 3))], 1)
    return batch


def reference_loss(model: Any, batch: dict[str, Any]):
    """Forward of the research scheme: the penultimate ESM states of ALL ``pad_to`` positions (special tokens and
    padding included) become LLM inputs; sepit's forward does the rest."""
    enc = model.encode(batch)
    feats = enc.penultimate.reshape(-1, enc.penultimate.shape[-1])  # (P·pad_to, D_plm)
    return model({**batch, "protein_features": feats}).loss


SHAPES = ("default", "paper")


def llm_tokenizer(tokenizer: str | None = None) -> tuple[Any, str]:
    """(tokenizer with the protein tokens, what it is): ``tokenizer`` (a folder), else the installed default LLM's,
    else byte-level."""
    from transformers import AutoTokenizer

    from sepit.errors import SepitError
    from sepit.model import add_protein_tokens, default
    from sepit.model._tiny import tiny_llm_tokenizer

    if tokenizer:
        tok, what = AutoTokenizer.from_pretrained(tokenizer), str(tokenizer)
    else:
        try:
            from sepit.assets import model_path

            path = model_path(default().llm)
            tok, what = AutoTokenizer.from_pretrained(path), f"{default().llm} (installed)"
        except SepitError:
            tok, what = tiny_llm_tokenizer(), "byte-level (no BPE tokenizer here: text ≈ 4× its BPE tokens)"
    add_protein_tokens(tok)
    return tok, what


def random_model(shapes: str = "default", *, device: Any = "cpu", tokenizer: str | None = None, seed: int = 0):
    """A SepitModel of the ``shapes`` preset's architectures with random weights, built where it will run (``meta``:
    no memory, for counting), without any download: ESM-2 and LLM configs from ``sepit.model._known``, the real ESM-2
    alphabet, the LLM tokenizer of :func:`llm_tokenizer`, and a random BERT at the text encoder's width and depth
    as the frozen stage-0 text encoder (config ``text_encoder: tiny``); homolog context off."""
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM, EsmModel

    from sepit.model import PRESETS, assemble
    from sepit.model._known import known_config
    from sepit.model._tiny import tiny_esm_tokenizer
    from sepit.model.config import TINY
    from sepit.model.processor import SPECIAL_TOKENS

    if shapes not in SHAPES:
        raise ValueError(f"shapes must be one of {SHAPES}, got {shapes!r}")
    cfg = PRESETS[shapes]()
    plm_conf, llm_conf, text_conf = (known_config(n) for n in (cfg.plm, cfg.llm, cfg.text_encoder))
    plm_conf.hidden_dropout_prob = plm_conf.attention_probs_dropout_prob = 0.0  # as in ESM-2's published configs
    tok, tok_what = llm_tokenizer(tokenizer)
    llm_conf.vocab_size = max(int(llm_conf.vocab_size) + len(SPECIAL_TOKENS), len(tok))
    llm_conf.eos_token_id, llm_conf.pad_token_id = tok.eos_token_id, tok.pad_token_id
    llm_conf.bos_token_id = tok.bos_token_id
    cfg = dataclasses.replace(  # no homolog context: there is no index to search
        cfg, text_encoder=TINY, retrieval=dataclasses.replace(cfg.retrieval, enabled=False),
        tiny=dataclasses.replace(cfg.tiny, text_hidden=int(text_conf.hidden_size),
                                 text_layers=int(text_conf.num_hidden_layers)))
    sources = {"plm": f"{PRESETS[shapes]().plm} architecture, random weights",
               "llm": f"{PRESETS[shapes]().llm} architecture, random weights", "llm_tokenizer": tok_what,
               "text_encoder": "random BERT at the text encoder's width and depth"}
    torch.manual_seed(seed)
    with torch.device(device):  # initialised where it runs: seconds on a GPU, never a 1.75B-parameter CPU copy
        esm = EsmModel(plm_conf, add_pooling_layer=False)
        llm = AutoModelForCausalLM.from_config(llm_conf)
        return assemble(cfg, esm, llm, tiny_esm_tokenizer(), tok, int(text_conf.hidden_size), seed=seed,
                        sources=sources)


def shaped_model(shapes: str, device: Any, tokenizer: str | None = None) -> tuple[Any, str]:
    """(model, where its weights come from) for ``--shapes``: the installed default model for ``default`` when
    there is one, else :func:`random_model`."""
    from sepit.errors import SepitError

    if shapes == "default" and not tokenizer and str(device) != "meta":
        from sepit.model import build_model, default

        try:
            say("tokens: loading the default model")
            return build_model(default()), "installed default models"
        except SepitError as e:
            say(f"tokens: {e}; random weights of its architecture instead")
    say(f"tokens: random weights of the {shapes} architectures on {device}")
    model = random_model(shapes, device=device, tokenizer=tokenizer)
    return model, f"random ({model.sources.get('llm_tokenizer', '')} LLM tokenizer)"


@dataclass
class FlopCounter:
    """Model FLOPs of stage-1 training (see the module docstring): sizes read once from the model."""

    llm_body: int  # LLM parameters without input embeddings and LM head
    lm_head: int
    llm_layers: int
    llm_hidden: int
    esm_body: int  # ESM parameters without embeddings, plus the projector (both run once per residue)
    esm_layers: int
    esm_hidden: int

    @classmethod
    def of(cls, model: Any) -> FlopCounter:
        llm = model.llm
        emb, head = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
        n_llm = sum(p.numel() for p in llm.parameters())  # a tied weight is counted once
        esm = model.encoder.esm
        n_esm = sum(p.numel() for p in esm.parameters()) - sum(p.numel() for p in esm.embeddings.parameters())
        return cls(llm_body=n_llm - emb.numel() - (0 if head is emb else head.numel()), lm_head=head.numel(),
                   llm_layers=int(llm.config.num_hidden_layers), llm_hidden=int(llm.config.hidden_size),
                   esm_body=n_esm + sum(p.numel() for p in model.projector.parameters()),
                   esm_layers=int(esm.config.num_hidden_layers), esm_hidden=int(esm.config.hidden_size))

    def step(self, text_lengths: list[int], protein_lengths: list[int], answer_tokens: int) -> float:
        """Training FLOPs of the useful work of one batch: its sequences' real tokens (``text_lengths``, protein
        slots included), its proteins' residues, its answer tokens."""
        llm = sum(transformer_train_flops(self.llm_body, self.llm_layers, self.llm_hidden, t, t)
                  for t in text_lengths)
        esm = sum(transformer_train_flops(self.esm_body, self.esm_layers, self.esm_hidden, n, n)
                  for n in protein_lengths)
        return llm + esm + 6.0 * self.lm_head * answer_tokens


def run(model: Any = None, *, quick: bool = False, shapes: str = "default", tokenizer: str | None = None,
        dry_run: bool = False, batches: int | None = None, batch_size: int | None = None, rounds: int | None = None,
        pad_to: int = 1024, proteins: list[Any] | None = None, device: Any = None,
        peak_tflops: float | None = None, precision: str = "auto", warmup: bool = True) -> Result:
    """Interleaved stage-1 steps of both schemes over ``batches`` length-grouped batches of ``batch_size`` real
    proteins → Result (headline ratio = sepit's useful tokens/s ÷ the reference's over all batches).

    ``dry_run``: the model on the meta device, the batches and their FLOPs, no steps (checks a shape on any
    machine). ``precision``: the training loop's rule (``auto``: bf16 autocast on CUDA, fp32 on a CPU)."""
    import torch

    from sepit.model.precision import autocast_dtype
    from sepit.train.loop import make_optimizer, set_trainable

    device = torch.device("meta") if dry_run else pick_device(device)
    weights = "given"
    if model is None:
        model, weights = shaped_model(shapes, device, tokenizer)
    if not dry_run:
        model.to(device)
    model.train()
    amp = None if dry_run else autocast_dtype(precision, device)
    batches = batches or (1 if quick else 4)
    batch_size = batch_size or 2
    rounds = rounds or (1 if quick else 2)
    max_len = min(model.config.max_residues, pad_to - 2)
    table = proteins if proteins is not None else real_proteins(with_structures=False)
    groups = [[crop(p, max_len) for p in g] for g in length_grouped_batches(table, batches, batch_size, max_len)]
    sample = [p for g in groups for p in g]
    proc = model.processor
    counter = FlopCounter.of(model)
    n_params = {"plm": sum(p.numel() for p in model.encoder.esm.parameters()),
                "llm": sum(p.numel() for p in model.llm.parameters())}

    info: dict[str, list[Any]] = {"useful": [], "sepit_positions": [], "ref_positions": [], "flops": []}
    for g in groups:
        b = proc(conversations(g), [[p.sequence] for p in g])
        info["useful"].append(int(b["attention_mask"].sum()))
        info["sepit_positions"].append(int(b["input_ids"].numel()))
        rb = reference_batch(model, conversations(g), [p.sequence for p in g], pad_to)
        info["ref_positions"].append(int(rb["input_ids"].numel()))
        info["flops"].append(counter.step([int(t) for t in b["attention_mask"].sum(1)],
                                          [len(p.sequence) for p in g], int((b["labels"][:, 1:] != -100).sum())))
    useful, flops = sum(info["useful"]), sum(info["flops"])
    ref_name = f"reference (pad to {pad_to})"
    params = {"shapes": shapes, "weights": weights, "batches": batches, "batch_size": batch_size, "rounds": rounds,
              "pad_to": pad_to, "device": str(device), "autocast": str(amp) if amp else "none (fp32)",
              "parameters": n_params, "sources": dict(getattr(model, "sources", {}) or {}),
              "lengths": [len(p.sequence) for p in sample]}
    shape_note = (f"shapes {shapes}: ESM {n_params['plm'] / 1e6:,.0f}M ({counter.esm_layers} layers × "
                  f"{counter.esm_hidden}) + LLM {n_params['llm'] / 1e6:,.0f}M ({counter.llm_layers} layers × "
                  f"{counter.llm_hidden}, vocabulary {model.llm.config.vocab_size:,}); weights: {weights}")
    if dry_run:
        rows = [[name, statistics.mean(pos), useful / batches, flops / batches / 1e9]
                for name, pos in ((ref_name, info["ref_positions"]), ("sepit (unpadded)", info["sepit_positions"]))]
        return Result(name="tokens", title="1. Protein tokens in the LLM: stage-1 step sizes (dry run, no timing)",
                      columns=["approach", "LLM positions/step", "useful tokens/step", "useful GFLOP/step"],
                      rows=rows, notes=[shape_note, f"batch {batch_size}, lengths {params['lengths']}"],
                      params=params)

    opt_groups = set_trainable(model, {k: v for k, v in STAGE1_LR.items() if model.param_groups().get(k)})
    trainable = [p for g in opt_groups for p in g["params"]]
    opt = make_optimizer(opt_groups, 0.0)  # fused AdamW where torch has it, as the training loop uses

    def step(loss_fn) -> float:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    # CUDA: one untimed pass over every batch first (kernel selection, allocator growth); CPU: one short step
    n_warm = (batches if device.type == "cuda" else 1) if warmup else 0

    def batch_of(r: int) -> int:  # pass 1 forwards, pass 2 backwards: each batch runs once in each order
        k = r % (2 * batches)
        return k if k < batches else 2 * batches - 1 - k

    def group(r: int) -> list[Any]:
        if r >= 0:
            return groups[batch_of(r)]
        return groups[(-1 - r) % batches] if device.type == "cuda" else groups[0][:1]

    def sepit_step(r: int) -> float:
        g = group(r)
        return step(lambda: model(model.to_device(proc(conversations(g), [[p.sequence] for p in g]))).loss)

    def reference_step(r: int) -> float:
        g = group(r)
        return step(lambda: reference_loss(model, model.to_device(
            reference_batch(model, conversations(g), [p.sequence for p in g], pad_to))))

    say(f"tokens: {batches} batch(es) of {batch_size} proteins (lengths {params['lengths']}), "
        f"reference pads to {pad_to}; {shape_note}; autocast {params['autocast']}")
    t = interleave({ref_name: reference_step, "sepit (unpadded)": sepit_step}, batches * rounds,
                   warmup=n_warm, device=device, progress="tokens")
    losses = [v for tm in t.values() for v in tm.values]
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"tokens: a loss was not finite ({losses})")
    # per batch: the median over its rounds; totals over the batches
    med = {n: [statistics.median(tm.seconds[r] for r in range(batches * rounds) if batch_of(r) == k)
               for k in range(batches)] for n, tm in t.items()}
    ref, sep = t[ref_name], t["sepit (unpadded)"]
    ref_total, sep_total = sum(med[ref_name]), sum(med["sepit (unpadded)"])
    ratio = ref_total / sep_total
    per_batch = [a / b for a, b in zip(med[ref_name], med["sepit (unpadded)"])]

    rows = []
    for name, tm, total, pos in ((ref_name, ref, ref_total, info["ref_positions"]),
                                 ("sepit (unpadded)", sep, sep_total, info["sepit_positions"])):
        row = [name, statistics.mean(pos), useful / batches, total / batches, useful / total,
               flops / total / 1e9, tm.peak_mb]
        if peak_tflops:
            row.append(100 * mfu(flops, total, peak_tflops))
        rows.append(row)
    columns = ["approach", "LLM positions/step", "useful tokens/step", "mean step s", "useful tokens/s",
               "useful GFLOP/s", "peak mem +MiB"] + ([f"MFU % (peak {peak_tflops:g} TFLOP/s)"] if peak_tflops else [])
    summary: dict[str, Any] = {
        "per-batch ratios (short → long)": ", ".join(f"{x:.2f}" for x in per_batch),
        "median per-batch ratio": statistics.median(per_batch),
        "sample mean length (table mean)": f"{mean_length(sample, max_len):.0f} ({mean_length(table, max_len):.0f})",
        "LLM positions ref ÷ sepit": sum(info["ref_positions"]) / sum(info["sepit_positions"])}
    if peak_tflops:
        summary["sepit MFU %"] = 100 * mfu(flops, sep_total, peak_tflops)
    return Result(
        name="tokens", title="1. Protein tokens in the LLM: stage-1 training throughput (useful tokens/s)",
        columns=columns, rows=rows, ratio=ratio, target=2.5, summary=summary,
        notes=[("ratio = Σ reference step time ÷ Σ sepit step time over the same batches (each batch: median of "
                f"{rounds} round(s)) = ratio of useful tokens/s"),
               ("useful GFLOP/s: per sequence 6·N·T + 12·layers·hidden·T² for the LLM blocks (T real tokens) and "
                "the ESM blocks + projector (T residues), + 6·(LM head) per answer token; one step = forward, "
                "backward, clip, AdamW")
               + ("" if peak_tflops else "; MFU: pass --peak-tflops"),
               shape_note,
               f"device {device}, autocast {params['autocast']}, batch {batch_size}, lengths {params['lengths']}"],
        params=params)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shapes", choices=SHAPES, default="default",
                    help="default: the default model (random weights when not installed); paper: ESM-2 650M + "
                         "TinyLlama-1.1B architectures, random weights")
    ap.add_argument("--tokenizer", help="LLM tokenizer folder for random-weight models (default: the installed "
                                        "SmolLM2's, else byte-level)")
    ap.add_argument("--dry-run", action="store_true", help="build on the meta device and count; no steps")
    ap.add_argument("--batches", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--rounds", type=int, help="passes over the batches (default 2; quick 1)")
    ap.add_argument("--device")
    ap.add_argument("--peak-tflops", type=float, help="hardware peak for MFU (e.g. 989 for H100 SXM bf16)")
    a = ap.parse_args(argv)
    print(run(quick=a.quick, shapes=a.shapes, tokenizer=a.tokenizer, dry_run=a.dry_run, batches=a.batches,
              batch_size=a.batch_size, rounds=a.rounds, device=a.device, peak_tflops=a.peak_tflops).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
