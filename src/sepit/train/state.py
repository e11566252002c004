"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

A checkpoint directory holds ``model/`` (``SepitModel.save_pretrained``), ``optimizer.safetensors`` +
``trainer_state.json`` (optimizer scalars, scheduler, step, data position, RNG states). It is built under a temp name
and renamed into place, and ``latest`` (a one-line file) is replaced atomically after it, so a kill at any moment
leaves the last good checkpoint usable.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sepit.errors import CheckpointError

OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def optimizer_to_flat(opt: torch.optim.Optimizer | dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` (or such a dict, e.g. gathered from FSDP shards) into tensors
    (``state.<param>.<key>``) and JSON-safe scalars/param groups."""
    sd = opt if isinstance(opt, dict) else opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_flat`: the ``opt.state_dict()``-shaped dict."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, NumPy and torch RNG states (tensors separate from JSON-safe parts)."""
    np_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_trainer_state(path: Path, opt: torch.optim.Optimizer | dict[str, Any], state: dict[str, Any]) -> None:
    """Write optimizer tensors + RNG to safetensors and ``state`` (+ optimizer meta) to JSON inside ``path``.
    ``opt``: the optimizer, or its full state dict (FSDP gathers one, see ``sepit.train.fsdp``)."""
    opt_t, opt_meta = optimizer_to_flat(opt)
    rng_t, rng_meta = rng_state()
    save_file({**opt_t, **rng_t}, str(path / OPTIM_FILE))
    (path / STATE_FILE).write_text(json.dumps({**state, "optimizer": opt_meta, "rng": rng_meta}, indent=1))


def load_trainer_state(path: Path, opt: torch.optim.Optimizer,
                       load_optimizer: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Restore optimizer + RNG from ``path``; returns the JSON state (step, data position, scheduler ...).
    ``load_optimizer(state_dict)`` replaces ``opt.load_state_dict`` (FSDP shards the full state while loading)."""
    try:
        tensors = load_file(str(path / OPTIM_FILE))
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"{path}: unreadable training state ({e})") from None
    opt_t = {k: v for k, v in tensors.items() if k.startswith("state.")}
    rng_t = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    try:
        (load_optimizer or opt.load_state_dict)(optimizer_from_flat(opt_t, state["optimizer"]))
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: optimizer state does not match this run's trainable parameters ({e})") from None
    set_rng_state(rng_t, state["rng"])
    return state
