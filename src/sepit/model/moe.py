"""Sparse upcycling of a causal LM: every decoder FFN (``layer.mlp``) → a top-1 mixture of copies of itself.

Pure PyTorch; the whole ``mlp`` submodule of each decoder layer is replaced (public module replacement, no
patched ``forward``). Gating: the chosen expert's output is multiplied by ``p / p.detach()`` — exactly 1 in the
forward pass, so at initialisation (identical experts) the upcycled model computes the dense model's outputs, while
the router still receives the gradient of its top-1 probability (d(p/sg(p)) = dp / p). The Switch-style
load-balancing loss E · Σ_e f_e · P_e (f: fraction of real tokens routed to e, P: mean router probability) is
summed over layers, as in the research code, and weighted by ``aux_loss_weight`` (0.01) in the model's loss.
No token is ever dropped (no capacity limit), in training or inference.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Routing:
    """What one forward of a :class:`MoEFeedForward` decided: ``probs`` (*, E) float32 router probabilities and
    ``choice`` (*) the expert each token went to, over the input's leading shape * (e.g. (B, T))."""

    probs: torch.Tensor
    choice: torch.Tensor


class MoEFeedForward(nn.Module):
    """Top-1 mixture of expert FFNs. Input/output (B, T, D) like the dense FFN it replaces.

    Every token is routed the same whatever the padding; after each forward ``last_routing`` holds what it decided
    (:class:`Routing`), from which :meth:`aux_loss` and :meth:`expert_counts` take the real tokens given as a mask.
    (The decoder layer calls its ``mlp`` with the hidden states only, so the mask cannot come with the forward; it
    comes afterwards, to the loss, and the forward keeps no per-call input of its own.)
    """

    def __init__(self, experts: list[nn.Module], router: nn.Linear) -> None:
        super().__init__()
        if router.out_features != len(experts):
            raise ValueError(f"router has {router.out_features} outputs for {len(experts)} experts")
        self.experts = nn.ModuleList(experts)
        self.router = router
        self.num_experts = len(experts)
        self.last_routing: Routing | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(flat).float(), dim=-1)  # (N, E)
        top_p, top_i = probs.max(dim=-1)
        gate = (top_p / top_p.detach()).to(x.dtype)  # == 1 exactly; carries the router's gradient
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            idx = torch.nonzero(top_i == e, as_tuple=True)[0]
            if idx.numel():
                out = out.index_copy(0, idx, expert(flat[idx]) * gate[idx, None])
        self.last_routing = Routing(probs.view(*shape[:-1], self.num_experts), top_i.view(shape[:-1]))
        return out.view(shape)

    def _routed(self, token_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(probs (N, E), choice (N,)) of the last forward's tokens where ``token_mask`` is True (all if None)."""
        routing = self.last_routing
        if routing is None:
            raise RuntimeError("this MoE layer has not run a forward yet")
        probs, choice = routing.probs, routing.choice
        if token_mask is None:
            return probs.reshape(-1, self.num_experts), choice.reshape(-1)
        if tuple(token_mask.shape) != tuple(choice.shape):
            raise ValueError(f"token mask of shape {tuple(token_mask.shape)} does not fit the last forward's tokens "
                             f"of shape {tuple(choice.shape)}")
        keep = token_mask.to(probs.device).bool()
        return probs[keep], choice[keep]

    def aux_loss(self, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Switch load-balancing loss E · Σ_e f_e · P_e of the last forward over the tokens where ``token_mask``
        (the input's leading shape, e.g. (B, T) bool) is True, all tokens if None; 0 without tokens. A scalar that
        carries the router's gradient."""
        probs, choice = self._routed(token_mask)
        if probs.shape[0] == 0:
            return probs.sum() * 0.0
        frac = torch.bincount(choice, minlength=self.num_experts).float() / probs.shape[0]
        return self.num_experts * (frac * probs.mean(0)).sum()

    def expert_counts(self, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(E,) how many of the last forward's tokens (where ``token_mask`` is True) each expert received."""
        _, choice = self._routed(token_mask)
        return torch.bincount(choice, minlength=self.num_experts)


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama-family causal LM (``llm.get_decoder().layers``), each with an ``mlp``."""
    decoder = llm.get_decoder() if hasattr(llm, "get_decoder") else llm
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not all(hasattr(layer, "mlp") for layer in layers):
        raise TypeError(f"{type(llm).__name__} is not a Llama-family decoder (no layers[i].mlp to upcycle)")
    return layers


def upcycle_mlp(mlp: nn.Module, hidden_size: int, num_experts: int = 4, router_std: float = 0.02) -> MoEFeedForward:
    """One dense FFN → MoE of ``num_experts`` exact copies + a router ``Linear(d, E, bias=False)``.

    The dense module is not modified. Raises if a copy differs from the dense FFN.
    """
    experts = [_copy.deepcopy(mlp) for _ in range(num_experts)]
    weight = next(iter(mlp.parameters()))
    if weight.device.type != "meta":  # meta tensors (parameter counting) have no values to compare
        dense = mlp.state_dict()
        for expert in experts:
            for name, tensor in expert.state_dict().items():
                if not torch.equal(tensor, dense[name]):
                    raise AssertionError(f"expert copy differs from the dense FFN at {name}")
    router = nn.Linear(hidden_size, num_experts, bias=False, device=weight.device, dtype=weight.dtype)
    if weight.device.type != "meta":
        nn.init.normal_(router.weight, std=router_std)
    return MoEFeedForward(experts, router)


def upcycle_to_moe(llm: nn.Module, num_experts: int = 4, *, copy: bool = True) -> nn.Module:
    """Every decoder layer's ``mlp`` → :class:`MoEFeedForward`. Returns the upcycled model.

    ``copy=True`` (default) leaves ``llm`` untouched and returns an upcycled deep copy; ``copy=False`` replaces the
    FFNs in place (no second copy of the rest of the model in memory).
    """
    target = _copy.deepcopy(llm) if copy else llm
    hidden_size = int(target.config.hidden_size)
    for layer in decoder_layers(target):
        if isinstance(layer.mlp, MoEFeedForward):
            raise ValueError("the model is already a mixture of experts")
        layer.mlp = upcycle_mlp(layer.mlp, hidden_size, num_experts)
    return target


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """All MoE FFNs inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


def is_moe(model: nn.Module) -> bool:
    return any(isinstance(m, MoEFeedForward) for m in model.modules())
