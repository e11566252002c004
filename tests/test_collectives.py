"""The loop's own collectives (loss normaliser, logged loss, stop-together flags, zero-gradient check) place their
tensors on the backend's device: NCCL refuses CPU tensors, and these scalars are made on the CPU. Checked without a
GPU by pretending to be in a two-process NCCL group: every collective must then try to move its tensor to CUDA
(which fails here, with torch's "not compiled with CUDA" / "no NVIDIA driver" error) before NCCL could see it."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist

from sepit.train import distributed as dist


def test_comm_device_per_backend(monkeypatch) -> None:
    assert dist.comm_device("gloo") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert dist.comm_device("nccl") == torch.device("cuda", 1)


@pytest.fixture
def fake_nccl_group(monkeypatch):
    """A pretend two-process NCCL group whose all_reduce records the devices it is handed (and fails the test on
    a CPU tensor, as NCCL would refuse it)."""
    seen: list[torch.device] = []

    def all_reduce(t, op=None, **_):
        seen.append(t.device)
        assert t.device.type != "cpu", "a CPU tensor reached an NCCL collective"

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(tdist, "get_backend", lambda *a, **k: "nccl")
    monkeypatch.setattr(tdist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(tdist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(tdist, "all_reduce", all_reduce)
    return seen


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the placement without CUDA (tests/test_gpu.py has CUDA)")
@pytest.mark.parametrize("call", [
    lambda: dist.all_reduce_mean(torch.tensor(3.0)),  # the logged loss, the token normaliser
    lambda: dist.any_rank(True),  # the NaN guard and the checkpoint-write agreement
    lambda: dist.any_rank(False, device="cpu"),
    lambda: dist.average_whole([torch.nn.Parameter(torch.ones(()))]),  # FSDP's whole 0-d parameters
], ids=["all_reduce_mean", "any_rank", "any_rank_cpu", "average_whole"])
def test_collectives_move_cpu_tensors_to_cuda_under_nccl(fake_nccl_group, call) -> None:
    with pytest.raises((AssertionError, RuntimeError), match="(?i)cuda|nvidia"):  # moving to CUDA, not NCCL
        call()
    assert fake_nccl_group == []


def test_gloo_collectives_stay_on_cpu(monkeypatch) -> None:
    seen: list[torch.device] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(tdist, "get_backend", lambda *a, **k: "gloo")
    monkeypatch.setattr(tdist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(tdist, "all_reduce", lambda t, op=None, **_: seen.append(t.device))
    assert dist.all_reduce_mean(torch.tensor(4.0)).item() == 2.0  # the fake sums nothing: 4 / 2
    assert seen == [torch.device("cpu")]
