"""FSDP set-up without any process holding the whole model (``distributed.strategy=fsdp``, two gloo processes): the
model is built on the meta device, sharded, and each rank fills its own shards from where the weights are (a resumed
checkpoint, ``init_from``, or pretrained checkpoint folders plus seeded new modules). The sharded model equals, bit
for bit, the model one process builds; and each rank's peak memory during set-up stays well below the whole model's.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
import torch
from _distributed import join as _join
from _distributed import leave as _leave
from _distributed import spawn as _spawn
from safetensors.torch import load_file, save_file
from test_train import cfg_for, make_items

from sepit.model import build_model, save_model, tiny
from sepit.model.config import TinySizes
from sepit.train import fsdp
from sepit.train import loop as train_loop
from sepit.train.config import DistributedSection
from sepit.train.stages import make_runner

FSDP = DistributedSection(strategy="fsdp")


class _SetUpDone(Exception):
    """Raised after the set-up of a run under test: nothing more is needed from it."""


def _after_setup(rank: int, out: Path, *, dump: bool) -> None:
    """Make ``train`` stop once set up: each rank records its peak memory (``ru_maxrss``) in ``out/rank{r}.json``;
    with ``dump``, rank 0 writes the gathered model (``out/state.safetensors``)."""
    real = train_loop._start

    def start(*args, **kwargs):
        run = real(*args, **kwargs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        (out / f"rank{rank}.json").write_text(json.dumps({"peak": peak, "sharded": fsdp.is_sharded(run.model)}))
        if dump:
            state = fsdp.full_model_state(run.model)  # collective
            if rank == 0:
                save_file({k: v.contiguous() for k, v in state.items()}, str(out / "state.safetensors"))
        train_loop._start = real
        raise _SetUpDone

    train_loop._start = start


def _set_up(rank: int, out: Path, cfg, *, resume: bool = False, dump: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _after_setup(rank, out, dump=dump)
    with pytest.raises(_SetUpDone):
        train_loop.train(cfg, items=make_items(), resume=resume)


def _setup_worker(rank: int, port: int, runs: list[tuple[str, dict]]) -> None:
    _join(rank, port)
    for out, kw in runs:
        resume = kw.pop("resume", False)
        _set_up(rank, Path(out) / "setup", cfg_for(kw.pop("stage"), out, distributed=FSDP, **kw), resume=resume)
    _leave()


def _hf_folders(tmp: Path) -> list[str]:
    """A random ESM-2 saved as ``EsmForMaskedLM`` (``esm.``-prefixed names, an LM head the encoder does not use)
    and a random Llama with untied output embeddings, saved with their tokenizers the way Hugging Face checkpoints
    are: the LLM's tokenizer has no protein tokens yet, so building the model grows both of its embeddings.
    Returns the model overrides that use them."""
    from transformers import EsmForMaskedLM, LlamaForCausalLM

    from sepit.model._tiny import tiny_esm_config, tiny_esm_tokenizer, tiny_llama_config, tiny_llm_tokenizer

    sizes = TinySizes()
    torch.manual_seed(1)
    EsmForMaskedLM(tiny_esm_config(sizes)).save_pretrained(tmp / "plm")
    tiny_esm_tokenizer().save_pretrained(tmp / "plm")
    tok = tiny_llm_tokenizer()
    conf = tiny_llama_config(sizes, tok)
    conf.tie_word_embeddings = False
    LlamaForCausalLM(conf).save_pretrained(tmp / "llm")
    tok.save_pretrained(tmp / "llm")
    return [f"plm={tmp / 'plm'}", f"llm={tmp / 'llm'}"]


def _one_process(cfg) -> dict[str, torch.Tensor]:
    """The model one process starts this run from (make_runner: built or loaded, upcycled), by name."""
    runner = make_runner(cfg, model=None, device=torch.device("cpu"))
    return {k: v.detach() for k, v in runner.model.state_dict().items()}


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(got) == sorted(want), what
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), f"{what}: {k}"


@pytest.mark.dist
def test_sharded_setup_equals_the_one_process_model(tmp_path) -> None:
    """Each way a run starts, set up sharded over two processes without either building the whole model, gives the
    one-process model exactly: ``init_from`` (stage 1), ``init_from`` upcycled to an MoE whose frozen encoder stays
    whole on each rank (stage 2, cached encoder), pretrained Hugging Face folders (the ESM's prefixed names, the
    LLM's untied embeddings grown by the protein tokens, the new modules and routers drawn from the seed; stage 2),
    the random ``tiny`` preset (stage 0, tied embeddings) and a resumed checkpoint (rows of its file)."""
    init = save_model(build_model(tiny(), seed=3), tmp_path / "init")
    hf = _hf_folders(tmp_path)
    resumed = tmp_path / "resumed"
    train_loop.train(cfg_for(1, resumed, init_from=str(init), max_steps=1, save_every=1, batch_size=2, grad_accum=1),
                     items=make_items())  # one process: its step-1 checkpoint is what the resume starts from
    runs = {
        "init": {"stage": 1, "init_from": str(init)},
        "moe": {"stage": 2, "init_from": str(init), "cache_encoder": True},
        "hf": {"stage": 2, "model_overrides": hf, "upcycle_experts": 2, "seed": 5},
        "tiny": {"stage": 0, "seed": 7},
        "resumed": {"stage": 1, "init_from": str(init), "max_steps": 2, "batch_size": 2, "grad_accum": 1,
                    "resume": True},
    }
    _spawn(_setup_worker, [(str(tmp_path / "resumed" if n == "resumed" else tmp_path / n), dict(kw))
                           for n, kw in runs.items()])
    for name, kw in runs.items():
        out = tmp_path / name / "setup"
        assert all(json.loads((out / f"rank{r}.json").read_text())["sharded"] for r in (0, 1))
        got = load_file(str(out / "state.safetensors"))
        if name == "resumed":
            want = load_file(str(resumed / "checkpoints" / "step-0000001" / "model" / "model.safetensors"))
            want["llm.model.embed_tokens.weight"] = want["llm.lm_head.weight"]  # tied: stored once
        else:
            kw = {k: v for k, v in kw.items() if k != "resume"}
            want = _one_process(cfg_for(kw.pop("stage"), tmp_path / "ref", **kw))
        _assert_same(got, want, name)


# ---- memory ---------------------------------------------------------------------------------------------------------
#: A tiny-architecture model widened to ~340 MB of float32 weights: big enough that the shards dominate what a set-up
#: allocates besides them (a few MB of tokenizers, buffers, slices being copied).
WIDE = TinySizes(plm_hidden=1024, plm_layers=5, plm_heads=8, llm_hidden=1024, llm_layers=5, llm_heads=8,
                 llm_kv_heads=4)


def _memory(key: str) -> int:
    """Bytes of ``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _memory_worker(rank: int, port: int, init: str, runs: list[tuple[str, dict]]) -> None:
    """Each rank sets up each run in turn and records its resident memory before and its peak during the set-up
    (``run_dir/setup/memory{rank}.json``)."""
    _join(rank, port)
    # what set-up allocates once per process (imported modules, the process group) is not the model's memory: a
    # first set-up of the tiny model does it
    _set_up(rank, Path(init).parent / "warm" / "setup", cfg_for(1, Path(init).parent / "warm", distributed=FSDP),
            dump=False)
    for out, kw in runs:
        resume = kw.pop("resume", False)
        # the peak so far (VmHWM, which ru_maxrss reports) back to what is resident now: Linux's clear_refs
        Path("/proc/self/clear_refs").write_text("5")
        before = _memory("VmRSS")
        _set_up(rank, Path(out) / "setup", cfg_for(1, out, distributed=FSDP, **kw), resume=resume, dump=False)
        peak = _memory("VmHWM")
        (Path(out) / "setup" / f"memory{rank}.json").write_text(json.dumps({"before": before, "peak": peak}))
    _leave()


@pytest.mark.dist
def test_no_rank_holds_the_whole_model_during_setup(tmp_path) -> None:
    """Two gloo processes set up a ~340 MB model (FSDP) from ``init_from`` and from a resumed checkpoint: each
    rank's peak resident memory during set-up (``train`` from its start to the end of ``_start``: model built on the
    meta device, sharded, shards allocated and read from the files, optimizer state read) exceeds what it held
    before by less than 70% of the whole model's float32 bytes: about half of it, its shards, and never all of it.

    Resident memory is what a process holds on the CPU (gloo's shards are CPU tensors), and its peak (``VmHWM``) is
    kept by the kernel, so no transient allocation can escape the measure; reading a shard's rows through
    safetensors adds only those rows (the file's pages are read, not mapped into the process)."""
    from sepit.model.config import TINY, ModelConfig

    model = build_model(ModelConfig(plm=TINY, llm=TINY, text_encoder=TINY, tiny=WIDE), seed=1)
    tensors = {id(t): t for t in model.state_dict().values()}  # tied weights once
    whole = sum(t.numel() * t.element_size() for t in tensors.values())
    init = save_model(model, tmp_path / "init")
    del model, tensors
    small = {"projector": 1e-3, "structure": 1e-4}  # a small optimizer state: the model's memory is what is measured
    resumed = tmp_path / "resumed"
    train_loop.train(cfg_for(1, resumed, init_from=str(init), lr=small, max_steps=1, save_every=1, batch_size=2,
                             grad_accum=1), items=make_items())  # one process: the checkpoint to resume from
    runs = {"init": {"init_from": str(init)},
            "resumed": {"init_from": str(init), "lr": small, "max_steps": 2, "batch_size": 2, "grad_accum": 1,
                        "resume": True}}
    _spawn(_memory_worker, str(init), [(str(resumed if n == "resumed" else tmp_path / n), dict(kw))
                                       for n, kw in runs.items()])
    for name in runs:
        for rank in (0, 1):
            out = (resumed if name == "resumed" else tmp_path / name) / "setup"
            m = json.loads((out / f"memory{rank}.json").read_text())
            grown = m["peak"] - m["before"]
            print(f"{name} rank {rank}: set-up peak +{grown / 2**20:.0f} MiB = {grown / whole:.0%} of the whole "
                  f"model ({whole / 2**20:.0f} MiB)")
            assert grown < 0.7 * whole, (name, rank, grown, whole)


@pytest.mark.slow
def test_default_preset_read_in_parts_equals_build_model() -> None:
    """The installed default models (``sepit models fetch``): every weight of the meta-device build's sources (the
    ESM-2 and SmolLM2 files, read through transformers' renamings; SmolLM2's tied embeddings grown by the protein
    tokens, whose rows build_model draws from the whole matrix's mean and covariance; the new modules drawn from the
    seed) is what build_model gives."""
    from sepit.model import default
    from sepit.model.checkpoint import StoredTensor
    from sepit.train import fsdp_init

    want = build_model(default(), seed=4).state_dict()
    model, weights = fsdp_init.build_on_meta(default(), seed=4)
    sources = fsdp_init.resolve(model, weights, "default")
    assert sorted(sources) == sorted(want)
    for name, t in want.items():
        src = sources[name]
        got = src.read() if isinstance(src, StoredTensor) else src
        assert torch.equal(got.to(t.dtype), t), name
