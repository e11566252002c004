"""Stage 2's cache of frozen-encoder outputs, bounded in bytes and kept off the accelerator.

A protein's encoding is (L, D_plm) floats: at the paper's scale (ESM-2 650M, D = 1280, L up to 1022) 5 MB in fp32,
so a cache of every protein of the full 2014 set (~500k) would be terabytes, and on the GPU it would crowd out the
model. The cache therefore lives in host memory (pinned when the model is on CUDA, so the copy to the device is
asynchronous), holds at most ``max_bytes``, and evicts the least recently used entry first. An evicted protein is
simply encoded again when it comes back: the encoder is frozen and each protein is encoded alone, so the result is
the same bits (see ``ChatRunner._ensure_cached``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import torch


class EncoderCache:
    """LRU map key → (L, D) tensor, at most ``max_bytes`` of tensor data (0 = cache nothing) on the host.

    ``get`` returns the tensor on ``device``; hits, misses and evictions are counted for the logs."""

    def __init__(self, max_bytes: int, device: torch.device) -> None:
        self.max_bytes = max(int(max_bytes), 0)
        self.device = device
        self.pin = device.type == "cuda"
        self._data: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def values(self) -> list[torch.Tensor]:
        """The cached host tensors (least recently used first)."""
        return list(self._data.values())

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The cached tensor on ``device`` (most recently used now), or None."""
        t = self._data.get(key)
        if t is None:
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(key)
        return t.to(self.device, non_blocking=self.pin)

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        """Keep a host copy of ``value``, evicting the least recently used entries beyond ``max_bytes``; a tensor
        larger than the whole budget is not kept."""
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        if key in self._data:
            self.bytes -= self._nbytes(self._data.pop(key))
        host = value.detach().to("cpu")
        if self.pin:
            host = host.pin_memory()
        self._data[key] = host
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._data.popitem(last=False)
            self.bytes -= self._nbytes(old)
            self.evictions += 1

    @staticmethod
    def _nbytes(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    def describe(self) -> str:
        """One line for the logs: entries, size against the bound, hits / misses / evictions."""
        return (f"{len(self)} proteins, {self.bytes / 2**20:.1f} MiB of {self.max_bytes / 2**20:.0f} MiB; "
                f"{self.hits} hits, {self.misses} misses, {self.evictions} evictions")
