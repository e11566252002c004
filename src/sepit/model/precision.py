"""Precision: which dtype the weights take for inference (``auto`` | ``fp32`` | ``bf16``, never fp16), casting them,
float32 logits whatever that dtype is, and the training loop's autocast dtype. The names themselves live in the
torch-free :mod:`sepit.precisions` (the command line offers them without importing torch).

    dtype = inference_dtype("auto", "cpu")   # bf16 on CPUs with AMX / AVX512-BF16, else fp32
    cast_parameters(model, dtype)            # what SepitModel.to_precision does
    amp = autocast_dtype("auto", device)     # training: bf16 autocast on CUDA with bf16, else None (fp32)

Training on a CPU stays in fp32 under ``auto``: ``python -m benchmarks train_precision`` measures fp32 against bf16
autocast step by step on the same batches (figures: docs/benchmarks.md, section 6; docs/architecture.md, Training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepit.precisions import PRECISIONS, check_precision

__all__ = ["PRECISIONS", "autocast_dtype", "cast_parameters", "check_precision", "cpu_has_native_bf16",
           "inference_dtype", "logits_fp32"]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16). Elsewhere bf16 is emulated and slower
    than fp32, so ``auto`` stays in fp32 there."""
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # a torch build without the CPU capability probe
            pass
    return False


def inference_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The weights' dtype for inference: ``auto`` is bf16 where the hardware runs it natively (CUDA with bf16, CPUs
    with AMX / AVX512-BF16) and fp32 elsewhere; never fp16 (the training loop's rule, extended to bf16 CPUs)."""
    check_precision(precision)
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else torch.float32
    device = torch.device(device)
    if device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation flag
            native = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The training loop's autocast dtype: bf16 where the hardware has it (``auto``: CUDA with bf16), None (fp32,
    no autocast) otherwise; never fp16. The master weights and the AdamW state stay fp32 either way.

    Unlike :func:`inference_dtype`, ``auto`` stays fp32 on every CPU, native bf16 or not: on a 2-core AMD EPYC
    without AMX / AVX512-BF16, bf16 autocast made stage-1 steps 10× and stage-2 steps 7× slower (bf16 matmuls are
    emulated there), and no CPU with native bf16 has measured a gain yet (``python -m benchmarks train_precision``
    measures one; ``precision: bf16`` asks for bf16 autocast on any device)."""
    check_precision(precision)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def cast_parameters(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast ``module``'s floating-point parameters to ``dtype`` in place; returns it. Buffers stay as they are:
    RoPE frequencies rounded to bf16 would shift every position."""
    for p in module.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)  # in place: tied weights (embeddings = LM head) stay one tensor
    return module


def logits_fp32(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(B, D) hidden states → (B, V) float32 logits: the LM ``head`` in float32 whatever the weights' dtype."""
    if head.weight.dtype == torch.float32:
        return head(hidden)
    bias = None if getattr(head, "bias", None) is None else head.bias.float()
    return F.linear(hidden.float(), head.weight.float(), bias)
