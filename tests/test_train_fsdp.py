"""FSDP (``distributed.strategy=fsdp``) on CPU with two gloo processes and the tiny model: it computes what one
process computes with the same global batch, writes the one-process checkpoint format (so each loads and resumes
the other's), and resumes exactly."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from _distributed import join as _join
from _distributed import leave as _leave
from _distributed import spawn as _spawn
from safetensors import safe_open
from safetensors.torch import load_file
from test_train import cfg_for, make_items

from sepit.model import build_model, load_model, tiny
from sepit.train.config import DistributedSection, TrainConfig
from sepit.train.loop import train
from sepit.train.stages import ChatRunner, Stage0Runner

FSDP = DistributedSection(strategy="fsdp")


def _dump(path: Path, losses: list[float]) -> None:
    path.write_text(json.dumps(losses))


def _with_validation(prepare):
    def wrapped(self, items):
        prepare(self, items)
        self._valid = items[:5]  # what load_items takes from the eval split

    return wrapped


def _run_worker(rank: int, port: int, runs: list[tuple[int, str, dict]], validate: bool = False) -> None:
    """Each rank trains ``runs`` (stage, out_dir, config overrides) in turn; rank 0 writes out_dir/losses.json."""
    _join(rank, port)
    if validate:
        for runner in (Stage0Runner, ChatRunner):
            runner.prepare = _with_validation(runner.prepare)
    for stage, out, kw in runs:
        res = train(cfg_for(stage, out, **kw), items=make_items(), model=build_model(tiny()))
        if rank == 0:
            _dump(Path(out) / "losses.json", res.losses)
    _leave()


def _assert_same_model_file(a: Path, b: Path, atol: float) -> None:
    """Same tensor names, shapes and file metadata (tied weights stored once, the same way), values within atol."""
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert sorted(wa) == sorted(wb)
    with safe_open(str(a / "model.safetensors"), "pt") as fa, safe_open(str(b / "model.safetensors"), "pt") as fb:
        assert fa.metadata() == fb.metadata()
    for k in wa:
        assert wa[k].shape == wb[k].shape and torch.allclose(wa[k], wb[k], atol=atol), k


def _metric(run: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.dist
def test_fsdp_two_processes_match_one_process(tmp_path) -> None:
    """Stage 1 (ESM layers and LLM blocks sharded, tied embeddings trained), 2 processes × 2 × accum 2 vs 1 × 4 × 2."""
    two = tmp_path / "two"
    kw = {"batch_size": 2, "grad_accum": 2, "max_steps": 3, "save_every": 2, "distributed": FSDP}
    _spawn(_run_worker, [(1, str(two), kw)])
    one = train(cfg_for(1, tmp_path / "one", batch_size=4, grad_accum=2, max_steps=3, save_every=2),
                items=make_items(), model=build_model(tiny()))
    assert json.loads((two / "losses.json").read_text()) == pytest.approx(one.losses, rel=1e-4)
    assert _metric(two, "grad_norm") == pytest.approx(_metric(one.out_dir, "grad_norm"), rel=1e-4)  # before clipping
    _assert_same_model_file(two / "final", one.final_dir, atol=1e-5)
    loaded, ref = load_model(two / "final"), load_model(one.final_dir)  # an FSDP checkpoint loads in one process
    for (n, p), (_, q) in zip(loaded.named_parameters(), ref.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n
    # the mid-run checkpoint (step 2) holds the one-process run's optimizer state, under the same keys
    opt_two = load_file(str(two / "checkpoints" / "step-0000002" / "optimizer.safetensors"))
    opt_one = load_file(str(tmp_path / "one" / "checkpoints" / "step-0000002" / "optimizer.safetensors"))
    assert sorted(k for k in opt_two if k.startswith("state.")) == sorted(k for k in opt_one if k.startswith("state."))
    for k in (k for k in opt_one if k.startswith("state.")):
        assert torch.allclose(opt_two[k], opt_one[k], rtol=1e-3, atol=1e-6), k
    meta = [json.loads((d / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())["optimizer"]
            for d in (two, tmp_path / "one")]
    assert meta[0]["param_groups"] == meta[1]["param_groups"]


@pytest.mark.dist
def test_fsdp_matches_ddp(tmp_path) -> None:
    """Stages whose result depends on how the batch is split, compared with DDP over the same two processes:
    stage 0 runs outside ``forward`` (``stage0_losses``) and draws its masks from each rank's RNG; stage 2's
    load-balancing loss is computed per rank, and it is an MoE (an expert one rank does not use still needs the
    collective) whose frozen, cached encoder stays whole on each rank. The validation loss (a sharded forward on
    every rank) is the same too."""
    ddp = DistributedSection(strategy="ddp")
    kw = {"batch_size": 2, "max_steps": 3, "save_every": 100}
    runs = [(stage, str(tmp_path / f"{name}{stage}"), {**kw, "grad_accum": 1 + (stage == 2), "distributed": strategy})
            for stage in (0, 2) for name, strategy in (("fsdp", FSDP), ("ddp", ddp))]
    runs += [(1, str(tmp_path / f"{name}_bf16"), {**kw, "distributed": strategy, "precision": "bf16"})
             for name, strategy in (("fsdp", FSDP), ("ddp", ddp))]
    _spawn(_run_worker, runs, True)
    for stage in (0, 2):
        fsdp_run, ddp_run = tmp_path / f"fsdp{stage}", tmp_path / f"ddp{stage}"
        losses = [json.loads((d / "losses.json").read_text()) for d in (fsdp_run, ddp_run)]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        assert _metric(fsdp_run, "grad_norm") == pytest.approx(_metric(ddp_run, "grad_norm"), rel=1e-5)
        _assert_same_model_file(fsdp_run / "final", ddp_run / "final", atol=1e-6)
        assert load_model(fsdp_run / "final").is_moe == (stage == 2)
        valid = [json.loads((d / "summary.json").read_text())["valid_loss"] for d in (fsdp_run, ddp_run)]
        assert valid[0] is not None and valid[0] == pytest.approx(valid[1], rel=1e-5)
    # bf16: FSDP's blocks gather and compute in bf16 (MixedPrecisionPolicy), DDP autocasts fp32 weights; close
    losses = [json.loads((tmp_path / f"{d}_bf16" / "losses.json").read_text()) for d in ("fsdp", "ddp")]
    assert all(math.isfinite(v) for v in losses[0]) and losses[0] == pytest.approx(losses[1], rel=1e-2)


def _interrupted(cfg: TrainConfig, items, at_step: int = 4) -> None:
    """Train until killed during step ``at_step + 1`` (after the checkpoint of ``at_step``)."""
    real = ChatRunner.collate

    def dying(self, batch_items, step):
        if step == at_step:
            raise KeyboardInterrupt
        return real(self, batch_items, step)

    ChatRunner.collate = dying
    try:
        train(cfg, items=items, model=build_model(tiny()))
    except KeyboardInterrupt:
        pass
    finally:
        ChatRunner.collate = real


def _resume_worker(rank: int, port: int, out: str) -> None:
    _join(rank, port)
    items, out = make_items(), Path(out)
    kw = {"max_steps": 6, "batch_size": 2, "grad_accum": 1, "distributed": FSDP}
    plan = train(cfg_for(1, out / "plan", **kw), items=items, model=build_model(tiny()), dry_run=True)
    full = train(cfg_for(1, out / "full", **kw), items=items, model=build_model(tiny()))
    _interrupted(cfg_for(1, out / "cut", **kw), items)
    if rank == 0:  # a copy of the interrupted run, for one process to resume
        shutil.copytree(out / "cut", out / "cut_for_one")
    resumed = train(cfg_for(1, out / "cut", **kw), items=items, model=build_model(tiny()), resume=True)
    from_one = train(cfg_for(1, out / "one_cut", **kw), items=items, model=build_model(tiny()), resume=True)
    if rank == 0:
        (out / "plan.json").write_text(json.dumps(plan))
        for name, res in (("full", full), ("resumed", resumed), ("from_one", from_one)):
            _dump(out / f"{name}.json", res.losses)
    _leave()


@pytest.mark.dist
def test_fsdp_resume_is_exact_and_crosses_strategies(tmp_path) -> None:
    """An interrupted FSDP run resumes as if uninterrupted; FSDP and one process (same global batch) resume each
    other's checkpoints: same weights, optimizer state, step and data position."""
    one_kw = {"max_steps": 6, "batch_size": 4, "grad_accum": 1}
    _interrupted(cfg_for(1, tmp_path / "one_cut", **one_kw), make_items())
    _spawn(_resume_worker, str(tmp_path))
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["strategy"] == "fsdp" and plan["world_size"] == 2 and plan["global_batch"] == 4
    full = json.loads((tmp_path / "full.json").read_text())
    assert json.loads((tmp_path / "resumed.json").read_text()) == pytest.approx(full, rel=1e-5, abs=1e-6)
    from_one = json.loads((tmp_path / "from_one.json").read_text())  # one process's step-4 checkpoint under FSDP
    assert from_one[:4] == pytest.approx(full[:4], rel=1e-4) and from_one[4:] == pytest.approx(full[4:], rel=1e-4)
    single = train(cfg_for(1, tmp_path / "cut_for_one", **one_kw), items=make_items(), model=build_model(tiny()),
                   resume=True)  # the FSDP checkpoint of step 4 resumed by one process
    assert single.losses[:4] == full[:4]  # the losses recorded before the interruption
    assert single.losses[4:] == pytest.approx(full[4:], rel=1e-4)


def test_one_process_has_nothing_to_shard(tmp_path) -> None:
    plan = train(cfg_for(1, tmp_path, distributed=FSDP), items=make_items(), model=build_model(tiny()), dry_run=True)
    assert plan["strategy"] == "single" and plan["world_size"] == 1


def test_strategy_is_typed() -> None:
    from sepit.config import from_dict
    from sepit.errors import ConfigError

    base = {"stage": 1, "out_dir": "x", "lr": {"llm": 1e-3}}
    assert from_dict(TrainConfig, dict(base, distributed={"strategy": "fsdp"})).distributed.strategy == "fsdp"
    with pytest.raises(ConfigError, match="strategy"):
        from_dict(TrainConfig, dict(base, distributed={"strategy": "zero3"}))
    with pytest.raises(ConfigError, match="shard"):
        from_dict(TrainConfig, dict(base, distributed={"shard": True}))


def _nan_worker(rank: int, port: int, out: str) -> None:
    """Rank 1 alone sees a NaN loss from its third micro-batch (step 3); each rank records how it ended and
    whether ``train`` left the process group (it joined it, so it leaves it when it stops everyone)."""
    import torch.distributed

    from sepit.train.loop import TrainingError

    _join(rank, port)
    orig, calls = ChatRunner.loss, {"n": 0}

    def loss(self, model, batch, denom, n_micro):
        value, parts = orig(self, model, batch, denom, n_micro)
        calls["n"] += 1
        return (value * float("nan") if rank == 1 and calls["n"] > 2 else value), parts

    ChatRunner.loss = loss
    try:
        train(cfg_for(1, out, batch_size=2, grad_accum=1, max_steps=5, save_every=1, distributed=FSDP),
              items=make_items(), model=build_model(tiny()))
        msg = "finished"
    except TrainingError as e:
        msg = str(e)
    left = not torch.distributed.is_initialized()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"message": msg, "left_group": left}))
    # no _leave(): the process exits as `sepit train` does after an error; an abort at exit fails the test (spawn)


@pytest.mark.dist
def test_nan_on_one_process_stops_every_process(tmp_path) -> None:
    """A NaN on one rank stops all ranks at the same step (none left waiting in a collective), naming the
    checkpoint; every rank leaves the process group and exits cleanly (exit code 0, no abort at exit)."""
    _spawn(_nan_worker, str(tmp_path))
    for rank in (0, 1):
        end = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "at step 3" in end["message"] and "step-0000002" in end["message"], (rank, end)
        assert end["left_group"], rank


def _torchrun_train(tmp_path: Path, *overrides: str):
    """``torchrun --nproc_per_node 2 -m sepit.cli train`` (the documented command) on a small built dataset."""
    import subprocess
    import sys

    from test_build import KmerSearch, _cfg, _table_rows

    from sepit.data.build import build_dataset

    header, rows = _table_rows(40)
    table = tmp_path / "table.tsv"
    table.write_text(header + "".join(rows))
    build_dataset(_cfg(table), tmp_path / "data", tool=KmerSearch())
    config = Path(__file__).resolve().parents[1] / "src/sepit/configs/train/stage1_tiny.yaml"
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "sepit.cli",
                           "train", str(config), f"data.dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'run'}",
                           "distributed.strategy=fsdp", *overrides],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _no_abort(stderr: str) -> bool:
    return "terminate called" not in stderr and "SIGABRT" not in stderr and "NOT been destroyed" not in stderr


@pytest.mark.dist
def test_torchrun_runs_the_cli_and_exits_cleanly(tmp_path) -> None:
    """``torchrun --nproc_per_node 2 -m sepit.cli train ...`` (the documented command) trains, prints its result once
    (not once per process) and exits cleanly: exit code 0, no abort message from either process."""
    run = _torchrun_train(tmp_path, "max_steps=2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("done: 2 steps") == 1, run.stdout
    assert _no_abort(run.stderr), run.stderr[-3000:]
    assert (tmp_path / "run" / "final").is_dir()


@pytest.mark.dist
def test_torchrun_cli_stops_on_nan_with_an_error_line(tmp_path) -> None:
    """A NaN loss under torchrun (a huge learning rate: NaN at step 2) ends every process with the one-line error
    and a non-zero exit code, without an abort or a hang."""
    run = _torchrun_train(tmp_path, "max_steps=4", "lr.llm=1e30", "lr.projector=1e30")
    assert run.returncode != 0, run.stdout[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("sepit: error:")]
    assert errors and all("loss is nan at step 2 on some process" in line for line in errors), run.stderr[-3000:]
    assert _no_abort(run.stderr), run.stderr[-3000:]
