"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

A checkpoint directory holds ``model/`` (``SepitModel.save_pretrained``), ``optimizer.safetensors`` +
``trainer_state.json`` (optimizer scalars, scheduler, step, data position, RNG states, and the sha256 of every
``*.safetensors`` file beside it, checked before a resume loads them). It is built under a temp name and renamed into
place, and ``latest`` (a one-line file) is replaced atomically after it, so a kill at any moment leaves the last good
checkpoint usable. :func:`latest_checkpoint` picks the checkpoint a resume starts from (the newest readable one when
``latest`` names one that is gone), :func:`prune_checkpoints` the ones rotation removes.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sepit._io import sha256_file
from sepit.errors import CheckpointError
from sepit.log import get_logger
from sepit.model.checkpoint import REQUIRED, verify_sums

log = get_logger(__name__)

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
    # Last, with the sums of the tensor files written before it (this one's and e.g. LoRA's lora.safetensors).
    sums = {f.name: sha256_file(f) for f in sorted(path.glob("*.safetensors"))}
    (path / STATE_FILE).write_text(json.dumps({**state, "optimizer": opt_meta, "rng": rng_meta, "sha256": sums},
                                              indent=1))


def read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's ``trainer_state.json``; a one-line CheckpointError when it is missing or unreadable."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / STATE_FILE}: unreadable training state ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path / STATE_FILE}: unreadable training state (no step: not a sepit trainer state)")
    return state


def verify_state_files(path: Path, state: dict[str, Any] | None = None) -> None:
    """Check the tensor files of the checkpoint ``path`` against the sha256 sums its ``trainer_state.json`` recorded
    (``state``: that file's content, read here when None); a file that differs is a one-line CheckpointError naming
    it. Checkpoints from before the sums were recorded are not checked."""
    state = read_state(path) if state is None else state
    verify_sums(path, state.get("sha256"), STATE_FILE)


def load_trainer_state(path: Path, opt: torch.optim.Optimizer,
                       load_optimizer: Callable[[dict[str, Any]], None] | None = None, *,
                       verify: bool = True) -> dict[str, Any]:
    """Restore optimizer + RNG from ``path``; returns the JSON state (step, data position, scheduler ...).
    ``load_optimizer(state_dict)`` replaces ``opt.load_state_dict`` (FSDP shards the full state while loading).
    ``verify``: check the files' sha256 first (:func:`verify_state_files`; False when the caller just did)."""
    state = read_state(path)
    if verify:
        verify_state_files(path, state)
    try:
        tensors = load_file(str(path / OPTIM_FILE))
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"{path / OPTIM_FILE}: unreadable training state ({e})") from None
    opt_t = {k: v for k, v in tensors.items() if k.startswith("state.")}
    rng_t = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    try:
        (load_optimizer or opt.load_state_dict)(optimizer_from_flat(opt_t, state["optimizer"]))
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: optimizer state does not match this run's trainable parameters ({e})") from None
    set_rng_state(rng_t, state["rng"])
    return state


# ---- checkpoint folders ---------------------------------------------------------------------------------------------
def step_of(path: Path) -> int | None:
    """N of a ``step-N`` checkpoint folder, None for anything else."""
    tail = path.name.removeprefix("step-")
    return int(tail) if tail != path.name and tail.isdigit() else None


def is_readable(path: Path) -> bool:
    """A checkpoint folder with all its files and a training state that parses (cheap: no weights are read; their
    sha256 is checked when a resume loads them)."""
    if not (path / OPTIM_FILE).is_file() or not all((path / "model" / f).is_file() for f in REQUIRED):
        return False
    try:
        read_state(path)
    except CheckpointError:
        return False
    return True


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint a resume starts from: the one ``checkpoints/latest`` names; if that one is gone or unreadable
    (or ``latest`` is), the newest readable ``step-N`` folder, with a warning saying which. None when there is none."""
    root = Path(out_dir) / "checkpoints"
    ptr = root / "latest"
    name = ""
    if ptr.is_file():
        try:
            name = ptr.read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            name = ""
        if name and "/" not in name and is_readable(root / name):
            return root / name
    found = sorted((p for p in root.glob("step-*") if step_of(p) is not None and p.is_dir() and is_readable(p)),
                   key=lambda p: step_of(p) or 0)
    said = f"{ptr} names {name!r}, which is missing or unreadable" if ptr.is_file() else f"{root} has no 'latest' file"
    if not found:
        if ptr.is_file():
            log.warning(f"{said}, and no other checkpoint in {root} is readable")
        return None
    log.warning(f"{said}; using {found[-1].name}, the newest readable checkpoint (the others are kept)")
    return found[-1]


def prune_checkpoints(new: Path, keep: int) -> None:
    """Checkpoint rotation after ``new`` (a ``step-N`` folder) was written: keep it and the ``keep - 1`` newest
    readable checkpoints before it, remove older readable ones. Folders of later steps and unreadable ones (left where a
    run resumed from an older checkpoint, see :func:`latest_checkpoint`) are the user's to look at, never removed."""
    step = step_of(new) or 0
    older = {p: n for p in new.parent.glob("step-*") if (n := step_of(p)) is not None and n < step and p.is_dir()}
    old = sorted((p for p in older if is_readable(p)), key=older.__getitem__)
    for p in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
