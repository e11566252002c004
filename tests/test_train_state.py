from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sepit.errors import CheckpointError
from sepit.train.schedule import lr_factor
from sepit.train.state import load_trainer_state, save_trainer_state


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW([{"params": model[0].parameters(), "lr": 1e-3},
                             {"params": model[2].parameters(), "lr": 1e-2}])
    return model, opt


def _step(model, opt):
    x = torch.randn(3, 4)
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def test_optimizer_and_rng_round_trip(tmp_path) -> None:
    model, opt = _model_and_opt()
    for _ in range(3):
        _step(model, opt)
    save_trainer_state(tmp_path, opt, {"step": 3, "data_position": [0, 12]})
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    expected = [_step(model, opt) for _ in range(3)] + [random.random(), float(np.random.rand())]

    model2, opt2 = _model_and_opt()
    model2.load_state_dict(weights)
    state = load_trainer_state(tmp_path, opt2)
    assert state["step"] == 3 and state["data_position"] == [0, 12]
    got = [_step(model2, opt2) for _ in range(3)] + [random.random(), float(np.random.rand())]
    assert got == pytest.approx(expected, rel=0, abs=0)  # bit-identical continuation


def test_corrupt_state_is_a_checkpoint_error(tmp_path) -> None:
    _, opt = _model_and_opt()
    (tmp_path / "optimizer.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_trainer_state(tmp_path, opt)


def test_lr_schedule_shape() -> None:
    f = [lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone decay after warm-up
    assert f[-1] == pytest.approx(0.1, abs=1e-3)


def test_state_files_checksums(tmp_path) -> None:
    import json

    from sepit._io import sha256_file

    model, opt = _model_and_opt()
    _step(model, opt)
    (tmp_path / "lora.safetensors").write_bytes(b"")  # written before the state, as LoRA's own state is
    save_trainer_state(tmp_path, opt, {"step": 1})
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    f = tmp_path / "optimizer.safetensors"
    assert state["sha256"] == {"lora.safetensors": sha256_file(tmp_path / "lora.safetensors"), f.name: sha256_file(f)}
    data = f.read_bytes()
    f.write_bytes(data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:])
    with pytest.raises(CheckpointError, match="damaged or changed since it was saved") as e:
        load_trainer_state(tmp_path, _model_and_opt()[1])
    assert "\n" not in str(e.value) and str(e.value).startswith(str(f))
    f.write_bytes(data)
    del state["sha256"]  # a checkpoint from before the checksums: still loads
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    assert load_trainer_state(tmp_path, _model_and_opt()[1])["step"] == 1
