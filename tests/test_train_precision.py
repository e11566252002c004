"""Training precision: which autocast ``precision: auto`` picks (CPU with and without native bf16), a tiny run under
bf16 autocast (finite losses, fp32 master weights, fp32 structure kernels and loss), and the train_precision
benchmark's code path on the tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_train import cfg_for, make_items

from sepit.errors import ConfigError
from sepit.model import build_model, load_model, tiny
from sepit.model import precision as P
from sepit.train import loop
from sepit.train.loop import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: `benchmarks` is not installed


@pytest.mark.parametrize("native", [True, False])
def test_auto_trains_in_fp32_on_any_cpu(monkeypatch, native) -> None:
    """Measured (benchmarks/bench_train_precision.py, docs/architecture.md): bf16 autocast made CPU training steps
    slower, so ``auto`` keeps CPU training in fp32 whatever the probe says; inference still follows it."""
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: native)
    assert P.autocast_dtype("auto", "cpu") is None and loop.autocast_dtype("auto", torch.device("cpu")) is None
    assert P.inference_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert P.autocast_dtype("bf16", "cpu") == torch.bfloat16  # asked for: bf16 autocast on any CPU
    assert P.autocast_dtype("fp32", "cpu") is None
    with pytest.raises(ConfigError, match="precision must be one of"):
        P.autocast_dtype("fp16", "cpu")


def test_tiny_stage1_under_bf16_autocast(tmp_path) -> None:
    model = build_model(tiny())
    plan = train(cfg_for(1, tmp_path / "plan", precision="bf16"), items=make_items(), model=model, dry_run=True)
    assert plan["precision"] == "torch.bfloat16"
    res = train(cfg_for(1, tmp_path / "run", precision="bf16"), items=make_items(), model=model)
    assert res.steps == 4 and all(torch.isfinite(torch.tensor(res.losses)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # fp32 master weights (and AdamW state)
    assert {p.dtype for p in load_model(res.final_dir).parameters()} == {torch.float32}


def test_under_bf16_autocast_structure_and_loss_stay_fp32() -> None:
    model = build_model(tiny()).eval()
    items = make_items(4)
    batch = model.processor([list(i.messages) for i in items], [list(i.proteins) for i in items])
    assert bool(batch["coord_mask"].any())
    with torch.no_grad():
        ref = model(batch).lm_loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bias, node, kernels = model.encoder.structure(batch["coords"], batch["coord_mask"])
            out = model(batch)
    assert kernels.dtype == bias.dtype == torch.float32  # Gaussian distance kernels and the attention bias
    assert out.lm_loss.dtype == torch.float32 and torch.isfinite(out.lm_loss)
    assert abs(float(out.lm_loss) - float(ref)) < 0.05 * float(ref)

    text_encoder = model.load_text_encoder().eval()  # stage 0: contrastive, denoising and masked-residue losses
    s0 = model.processor.stage0_batch([i.proteins[0] for i in items], [i.caption for i in items], text_encoder)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        s0["text_features"] = text_encoder(s0.pop("text_input_ids"), s0.pop("text_attention_mask"))
        losses = model.stage0_losses(s0, {"contrastive": 1.0, "denoise": 1.0, "mlm": 1.0},
                                     generator=torch.Generator().manual_seed(0))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values()), losses


def test_train_precision_benchmark_reports_its_rows() -> None:
    """The benchmark's code path on the tiny model (timings are not checked: see benchmarks/results)."""
    from benchmarks import TEST_TABLE, crop, real_proteins
    from benchmarks.bench_train_precision import run

    pytest.importorskip("peft")
    proteins = [crop(p, 24) for p in real_proteins(TEST_TABLE)]
    res = run(build_model(tiny()), steps=2, batch_size=1, max_len=24, lora_rank=4, lora_stages=(1, 2),
              proteins=proteins)
    assert [r[:2] for r in res.rows] == [[s, n] for s in (1, 2) for n in ("fp32", "bf16 autocast", "fp32 + LoRA r4")]
    assert res.ratio > 0 and all(r[2] > 0 and r[3] > 0 for r in res.rows)
    assert res.rows[2][2] < res.rows[0][2]  # LoRA trains fewer parameters
    assert res.summary["precision: auto trains in"] in ("float32", "bfloat16")
