"""Named parameter groups and parameter counts.

Groups: ``plm`` (the ESM weights), ``structure`` (Gaussian basis, attention-bias MLP, node encoding), ``heads``
(stage-0 heads), ``projector``, ``llm`` (the causal LM except MoE experts/routers, incl. the resized embeddings),
``experts`` (MoE expert FFNs), ``router`` (MoE routers), ``lora`` (LoRA adapters on the LLM while a stage trains
with them; empty otherwise: saved models hold merged weights). Every parameter is in exactly one group.
"""

from __future__ import annotations

from torch import nn

from sepit.model.moe import moe_layers

GROUPS: tuple[str, ...] = ("plm", "structure", "heads", "projector", "llm", "experts", "router", "lora")

#: What each training stage trains (METHOD.md §2); the training stages may declare their own, this is the reference
#: used by ``sepit model info``.
STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "stage0": ("plm", "structure", "heads"),
    "stage1": ("plm", "structure", "projector", "llm"),
    "stage2": ("projector", "llm", "experts", "router"),
}


def param_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """``SepitModel`` → {group: [(parameter name, parameter)]} covering every parameter once (tied weights once).

    LoRA adapters are recognised by peft's naming (``…q_proj.lora_A.default.weight``: every adapter parameter of
    peft's LoRA layers has a ``lora_`` part), without importing peft; their frozen base weights stay in their group.
    """
    experts, router = set(), set()
    for layer in moe_layers(model.llm):
        experts.update(id(p) for p in layer.experts.parameters())
        router.update(id(p) for p in layer.router.parameters())
    out: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in GROUPS}
    prefixes = (("encoder.esm.", "plm"), ("encoder.structure.", "structure"), ("heads.", "heads"),
                ("projector.", "projector"))
    for name, p in model.named_parameters():
        group = next((g for pre, g in prefixes if name.startswith(pre)), None)
        if group is None and name.startswith("llm."):
            if any(part.startswith("lora_") for part in name.split(".")):
                group = "lora"
            else:
                group = "experts" if id(p) in experts else "router" if id(p) in router else "llm"
        if group is None:
            raise AssertionError(f"parameter {name} belongs to no group")
        out[group].append((name, p))
    return out


def count(params) -> int:
    return sum(p.numel() for _, p in params)


def parameter_counts(model: nn.Module) -> dict:
    """Counts for ``sepit model info``: total, per group, trainable per stage, activated per LLM token.

    ``activated_per_token``: LLM parameters one token passes through — for a MoE LLM all non-expert weights plus
    one expert per layer (router included and excluded); for a dense LLM all of them.
    """
    groups = param_groups(model)
    # LoRA adapters exist only while a stage trains them: not a part of any saved model's architecture
    per_group = {g: count(v) for g, v in groups.items() if g != "lora" or v}
    total = sum(per_group.values())
    stages = {s: sum(per_group[g] for g in gs) for s, gs in STAGE_GROUPS.items()}
    layers = moe_layers(model.llm)
    one_expert = sum(sum(p.numel() for p in m.experts[0].parameters()) for m in layers)
    llm_all = per_group["llm"] + per_group["experts"] + per_group["router"]
    active_no_router = per_group["llm"] + one_expert if layers else llm_all
    return {
        "total": total,
        "groups": per_group,
        "trainable": stages,
        "llm_total": llm_all,
        "activated_per_token": active_no_router + per_group["router"],
        "activated_per_token_without_router": active_no_router,
        "moe_layers": len(layers),
        "experts_per_layer": layers[0].num_experts if layers else 0,
    }
