"""GPU checks (``pytest -m gpu``; ``scripts/gpu_check.sh`` runs them on a GPU machine, CI never does).

On one CUDA device: every training stage in bf16 autocast, with the tiny config and with the default model's
architectures at random weights (no weights need to travel); DDP and FSDP on a one-process NCCL group, which must
compute what the plain run computes, with every collective's tensors on the GPU; the loop's scalar collectives
with CPU or GPU tensors under NCCL and gloo; generation (``sepit.api`` and ``model.chat``) on CUDA. Every test
skips where torch sees no CUDA device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: `benchmarks` is not installed

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA device here: GPU tests run on a GPU machine (scripts/gpu_check.sh)")]

AA = "ACDEFGHIKLMNPQRSTVWY"
#: Collectives of torch.distributed's Python API that the loop, DDP's set-up and FSDP2 may call (those this torch
#: has are recorded).
COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter",
               "reduce_scatter_tensor", "all_to_all_single", "all_gather_single", "reduce_scatter_single")


def protein_items(n: int = 8, seed: int = 0):
    """``n`` conversations about random proteins of 40–110 residues, every other one with Cα coordinates."""
    from test_train import make_items

    return make_items(n, seed, lengths=lambda i: 40 + 10 * i)


def make_model(shapes: str):
    """The tiny model, or the default model's architectures with random weights (built on the GPU)."""
    if shapes == "tiny":
        from sepit.model import build_model, tiny

        return build_model(tiny())
    from benchmarks.bench_tokens import random_model

    return random_model(shapes, device="cuda")


def linear_output_dtypes(model: torch.nn.Module) -> dict[str, set[torch.dtype]]:
    """Record the output dtype of every Linear layer's forward, per top-level part (``encoder``, ``llm``, …)."""
    seen: dict[str, set[torch.dtype]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            part = name.split(".")[0]
            mod.register_forward_hook(lambda m, i, o, part=part: seen.setdefault(part, set()).add(o.dtype))
    return seen


def record_collectives(monkeypatch) -> list[tuple[str, str]]:
    """Wrap torch.distributed's collectives: every call appends (name, device type) per tensor argument."""
    calls: list[tuple[str, str]] = []

    def tensors(x):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, (list, tuple)):
            for y in x:
                yield from tensors(y)

    for name in COLLECTIVES:
        fn = getattr(tdist, name, None)
        if fn is None:
            continue

        def wrapped(*args, _fn=fn, _name=name, **kw):
            for t in tensors([*args, *kw.values()]):
                calls.append((_name, t.device.type))
            return _fn(*args, **kw)

        monkeypatch.setattr(tdist, name, wrapped)
    return calls


@pytest.fixture
def one_process_group(request):
    """A one-process group of backend ``request.param`` on GPU 0, left at the end."""
    backend = request.param
    if backend == "nccl" and not tdist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    torch.cuda.set_device(0)
    tdist.init_process_group(backend, store=tdist.HashStore(), rank=0, world_size=1)
    try:
        yield backend
    finally:
        tdist.destroy_process_group()


# ---- training ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize("shapes", ["tiny", "default"])
def test_each_stage_trains_in_bf16_on_one_gpu(shapes, stage, tmp_path) -> None:
    """A few steps of every stage under ``precision: auto`` (bf16 autocast on CUDA, fp32 master weights); the saved
    model holds the trained CUDA weights."""
    from test_train import cfg_for

    from sepit.model import load_model
    from sepit.train.loop import train

    model = make_model(shapes)
    seen = linear_output_dtypes(model)
    kw = {"upcycle_experts": 2} if stage == 2 and shapes != "tiny" else {}  # 2 experts: a smaller checkpoint to write
    res = train(cfg_for(stage, tmp_path / "run", max_steps=3, save_every=3, precision="auto", **kw),
                items=protein_items(), model=model)
    assert res.steps == 3 and all(np.isfinite(res.losses)), res.losses
    params = list(model.parameters())
    assert {p.device.type for p in params} == {"cuda"}
    assert {p.dtype for p in params} == {torch.float32}  # master weights stay fp32 under autocast
    assert torch.bfloat16 in seen["encoder" if stage == 0 else "llm"], seen  # the matmuls ran in bf16
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["tokens_per_s"] > 0 and np.isfinite(r["grad_norm"]) for r in records)
    loaded = load_model(res.final_dir)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n1 == n2 and torch.equal(p1.detach().cpu(), p2), n1


# ---- generation ----------------------------------------------------------------------------------------------------
def test_fitted_model_answers_on_cuda(fitted_model_dir) -> None:
    """The tiny model fitted to one answer (tests/_sepit_qa.py) gives it back on CUDA in fp32, one question or a
    ragged batch; in bf16 (``auto`` on CUDA) the weights are bf16 and the yes/no probability keeps its side."""
    from _sepit_qa import ANSWER, QUESTION, SEQUENCE, YES_QUESTION

    from sepit.api import load

    qa = load(fitted_model_dir, device="cuda", precision="fp32")
    assert {p.device.type for p in qa.model.parameters()} == {"cuda"}
    assert qa.ask(SEQUENCE, QUESTION, max_new_tokens=24) == ANSWER
    assert qa.yes_no(SEQUENCE, YES_QUESTION) > 0.9
    seqs = [SEQUENCE, SEQUENCE[:9], SEQUENCE * 3]  # different lengths: one ragged batch
    batched = qa.ask_many(seqs, [QUESTION] * 3, max_new_tokens=24)
    assert batched == [qa.ask(s, QUESTION, max_new_tokens=24) for s in seqs] and batched[0] == ANSWER

    bf16 = load(fitted_model_dir, device="cuda", precision="auto")
    assert bf16.model.dtype == torch.bfloat16
    assert isinstance(bf16.ask(SEQUENCE, QUESTION, max_new_tokens=24), str)
    assert bf16.yes_no(SEQUENCE, YES_QUESTION) > 0.5


def test_default_architecture_generates_on_cuda_in_bf16() -> None:
    """The default model's architectures (random weights) decode a ragged batch on CUDA in bf16 and stop within
    ``max_new_tokens`` steps."""
    model = make_model("default").eval().to_precision("bf16")
    assert model.dtype == torch.bfloat16
    conv = [{"role": "user", "content": "<protein>\nWhat does this protein do?"}]
    steps: list[int] = []
    answers = model.chat([conv, conv], [["MKTAYIAKQRQISFVKSHFSRQ"], ["M" + AA * 12]], max_new_tokens=6,
                         callback=lambda texts: steps.append(len(texts)))
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert 1 <= len(steps) <= 6


def test_yes_no_pairs_share_their_prefix_on_cuda() -> None:
    """A yes/no pair scored together on CUDA (the protein encoded once, the shared prefix run once, each question's
    end from its KV cache) gives each prompt's P(yes) alone."""
    model = make_model("tiny").to("cuda").eval()
    ctx = "Homologs (MMseqs2) and their functions: 1. P12345, 48% identity over 92%: DNA binding and repair."
    convs = [[{"role": "user", "content": f"<protein>\n{ctx}\n{q}"}]
             for q in ("Is it an enzyme?", "Does it bind DNA? Answer yes or no.")]
    prots = [["MKTAYIAKQRQISFVKSHF"], ["MKTAYIAKQRQISFVKSHF"]]
    with torch.no_grad():
        together = model.yes_no_probability(model.to_device(model.processor(convs, prots,
                                                                            add_generation_prompt=True)))
        alone = torch.cat([model.yes_no_probability(model.to_device(model.processor([c], [p],
                                                                                   add_generation_prompt=True)))
                           for c, p in zip(convs, prots)])
    assert together.device.type == "cuda"
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


# ---- process groups (last: should NCCL's set-up hang, the tests above have run) -----------------------------------
@pytest.mark.parametrize("one_process_group", ["nccl"], indirect=True)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_ddp_and_fsdp_on_one_gpu_match_the_plain_run(strategy, one_process_group, tmp_path, monkeypatch) -> None:
    """DDP and FSDP forced on a one-process NCCL group (``resolve_strategy`` picks ``single`` for one process, so
    the test overrides it) compute the plain run's losses (fp32: the arithmetic is the same), and every collective
    of a training step (the loop's own and the engines') gets its tensors on the GPU: NCCL refuses CPU tensors."""
    from test_train import cfg_for

    from sepit.model import build_model, tiny
    from sepit.train import distributed, fsdp
    from sepit.train.config import DistributedSection
    from sepit.train.loop import train

    monkeypatch.setattr(distributed, "resolve_strategy",
                        lambda requested, world: requested if requested in ("ddp", "fsdp") else "single")
    plain = train(cfg_for(1, tmp_path / "plain", max_steps=3, save_every=3, precision="fp32"),
                  items=protein_items(), model=build_model(tiny()))
    calls = record_collectives(monkeypatch)
    model = build_model(tiny())
    res = train(cfg_for(1, tmp_path / strategy, max_steps=3, save_every=3, precision="fp32",
                        distributed=DistributedSection(strategy=strategy)), items=protein_items(), model=model)
    assert fsdp.is_sharded(model) == (strategy == "fsdp")
    assert res.losses == pytest.approx(plain.losses, rel=1e-4)
    assert calls, "no collective went through torch.distributed"
    assert {dev for _, dev in calls} == {"cuda"}, sorted(set(calls))


@pytest.mark.parametrize("one_process_group", ["nccl"], indirect=True)
def test_fsdp_in_bf16_on_one_gpu(one_process_group, tmp_path, monkeypatch) -> None:
    """FSDP's bf16 path on one GPU: blocks gathered and computed in bf16 (``MixedPrecisionPolicy``), gradients
    reduced in fp32; sharding, stage 1 with the default model's architectures, a checkpoint gathered to one file."""
    from test_train import cfg_for

    from sepit.model import load_model
    from sepit.train import distributed, fsdp
    from sepit.train.config import DistributedSection
    from sepit.train.loop import train

    monkeypatch.setattr(distributed, "resolve_strategy", lambda requested, world: requested)
    model = make_model("default")
    seen = linear_output_dtypes(model)
    res = train(cfg_for(1, tmp_path / "run", max_steps=3, save_every=3, precision="auto",
                        distributed=DistributedSection(strategy="fsdp")), items=protein_items(), model=model)
    assert fsdp.is_sharded(model)
    assert res.steps == 3 and all(np.isfinite(res.losses)), res.losses
    assert torch.bfloat16 in seen["llm"] and torch.bfloat16 in seen["encoder"], seen
    trained = fsdp.full_model_state(model)  # gathered from the shards
    saved = load_model(res.final_dir).state_dict()
    assert sorted(trained) == sorted(saved)
    for k, v in trained.items():
        assert torch.equal(v, saved[k]), k


@pytest.mark.parametrize("one_process_group", ["nccl", "gloo"], indirect=True)
def test_scalar_collectives_take_cpu_or_gpu_tensors(one_process_group, monkeypatch) -> None:
    """The loop's scalar collectives (``all_reduce_mean``) accept a tensor on either device under either backend and
    give the result back on the tensor's own device; under NCCL the collective itself runs on the GPU."""
    from sepit.train import distributed

    calls = record_collectives(monkeypatch)
    for device in ("cpu", "cuda"):
        t = torch.tensor([3.0, -1.5], device=device)
        out = distributed.all_reduce_mean(t)
        assert out.device.type == device and out.tolist() == [3.0, -1.5]
    assert calls
    if one_process_group == "nccl":
        assert {dev for _, dev in calls} == {"cuda"}, calls
