"""Stage 2's bounded encoder cache: least recently used out first, never above its byte bound, and training with a
cache too small to hold every protein gives the losses of an unbounded one (an evicted protein is encoded again)."""

from __future__ import annotations

import pytest
import torch
from test_train import cfg_for, make_items

from sepit.model import build_model, tiny
from sepit.train.encoder_cache import EncoderCache
from sepit.train.loop import train


def _t(rows: int) -> torch.Tensor:
    return torch.full((rows, 4), float(rows))  # rows × 4 fp32 = 16·rows bytes


def test_lru_by_bytes() -> None:
    c = EncoderCache(max_bytes=100, device=torch.device("cpu"))
    c.put("a", _t(2))  # 32 B
    c.put("b", _t(2))  # 64 B
    assert c.get("a") is not None  # a is now the most recently used
    c.put("c", _t(3))  # 112 B > 100: b (least recently used) goes
    assert "b" not in c and "a" in c and "c" in c and c.bytes == 80 and c.evictions == 1
    c.put("big", _t(10))  # 160 B: larger than the whole bound, not kept, nothing evicted for it
    assert "big" not in c and len(c) == 2
    assert torch.equal(c.get("c"), _t(3)) and c.get("b") is None
    assert (c.hits, c.misses) == (2, 1)
    assert "2 proteins" in c.describe()


def test_zero_bound_caches_nothing() -> None:
    c = EncoderCache(max_bytes=0, device=torch.device("cpu"))
    c.put("a", _t(1))
    assert len(c) == 0 and c.bytes == 0


def test_negative_bound_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="cache_max_gb"):
        cfg_for(2, "unused", cache_max_gb=-1)


def test_tiny_cache_trains_like_an_unbounded_one(tmp_path, monkeypatch) -> None:
    caches: list[EncoderCache] = []
    init = EncoderCache.__init__

    def remember(self, *a, **kw):
        init(self, *a, **kw)
        caches.append(self)

    monkeypatch.setattr(EncoderCache, "__init__", remember)
    items = make_items()
    kw = dict(max_steps=4, structure_dropout=0.5, cache_encoder=True)
    # 2e-6 GiB ≈ 2 KiB: one or two of the tiny model's (L ≤ 12, D = 32) encodings at a time
    small = train(cfg_for(2, tmp_path / "s", cache_max_gb=2e-6, **kw), items=items, model=build_model(tiny()))
    assert caches[-1].evictions > 0 and caches[-1].bytes <= caches[-1].max_bytes
    big = train(cfg_for(2, tmp_path / "b", **kw), items=items, model=build_model(tiny()))
    assert caches[-1].evictions == 0 and caches[-1].hits > 0
    assert small.losses == pytest.approx(big.losses, rel=1e-6)
