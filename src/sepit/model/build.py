"""Builders: ``ModelConfig`` → ``SepitModel`` (with weights), or a weightless skeleton on the meta device (to count
it, or to fill in parts: :func:`build_on_meta`).

Presets are functions returning configs: :func:`tiny` (random, offline, for tests), :func:`default` (ESM-2 t6 8M +
SmolLM2-135M-Instruct + MiniLM, after ``sepit models fetch``) and :func:`paper` (ESM-2 650M + TinyLlama-1.1B-Chat
or Llama-2-7B-chat, the paper's scale: point ``plm``/``llm``/``text_encoder`` at local copies of those
checkpoints to build it with weights).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepit.errors import SepitError
from sepit.log import get_logger
from sepit.model.config import TINY, ModelConfig
from sepit.model.encoder import StructureAwareEsm
from sepit.model.fusion import SepitModel
from sepit.model.generation import use_ragged_attention
from sepit.model.heads import Stage0Heads
from sepit.model.moe import MoEFeedForward, upcycle_mlp, upcycle_to_moe
from sepit.model.processor import SepitProcessor, add_protein_tokens
from sepit.model.projector import Projector
from sepit.model.structure import StructureModule
from sepit.retrieval.config import RetrievalConfig

log = get_logger(__name__)

PAPER_LLMS = {"tinyllama": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "llama2_7b": "meta-llama/Llama-2-7b-chat-hf"}


# ---- presets ------------------------------------------------------------------------------------------------------
def tiny() -> ModelConfig:
    """Random tiny ESM (real 33-token alphabet) + tiny Llama + tiny BERT text encoder; builds offline in < 1 s."""
    return ModelConfig(plm=TINY, llm=TINY, text_encoder=TINY)


def default() -> ModelConfig:
    """ESM-2 t6 8M + SmolLM2-135M-Instruct + all-MiniLM-L6-v2 (``sepit models fetch`` installs them), with homolog
    context in its prompts (the paper's prompt: ``retrieval.enabled=false``), where a yes/no question also gets each
    hit's own answer (``retrieval.claims``), a question about length, mass or composition the protein's own value
    (``retrieval.own_properties``), and an open question about what homologs annotate is answered by choosing among
    their annotations (``retrieval.choose_open``); its answers repeat no 3-token n-gram. All chosen on the valid
    split (docs/retrieval.md, "Choices")."""
    return ModelConfig(no_repeat_ngram=3, retrieval=RetrievalConfig(enabled=True, claims=True, own_properties=True,
                                                                     choose_open=True))


def paper(llm: str = "tinyllama") -> ModelConfig:
    """The paper's scale: ESM-2 650M + TinyLlama-1.1B-Chat (``llm="llama2_7b"``: Llama-2-7B-chat), MoE in stage 2.

    The names are Hugging Face hub ids; sepit never downloads from a hub: set ``plm``/``llm``/``text_encoder``
    to local directories to build it with weights (``sepit model info`` counts it without them).
    """
    return ModelConfig(plm="facebook/esm2_t33_650M_UR50D", llm=PAPER_LLMS[llm],
                       text_encoder="sentence-transformers/all-MiniLM-L6-v2")


PRESETS = {"tiny": tiny, "default": default, "paper": paper}


# ---- helpers ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic initialisation of new modules without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _resolve(name: str) -> Path:
    from sepit.assets import model_path

    return model_path(name)


def _text_hidden_size(cfg: ModelConfig, *, allow_known: bool = False) -> int:
    if cfg.text_encoder == TINY:
        return cfg.tiny.text_hidden
    return int(_hf_config(cfg.text_encoder, allow_known=allow_known)[0].hidden_size)


def _hf_config(name: str, *, allow_known: bool) -> tuple[Any, str]:
    """(transformers config, where it came from) for a model name or directory."""
    from transformers import AutoConfig

    try:
        path = _resolve(name)
    except SepitError:
        if allow_known:
            from sepit.model._known import known_config

            conf = known_config(name)
            if conf is not None:
                return conf, "built-in architecture table, files not installed"
        raise
    where = "config.json of the installed model" if str(name) != str(path) and not Path(name).exists() else str(path)
    return AutoConfig.from_pretrained(path), where


def assemble(cfg: ModelConfig, esm, llm, plm_tokenizer, llm_tokenizer, text_hidden: int, *, seed: int = 0,
             sources: dict[str, Any] | None = None) -> SepitModel:
    """Put a SepitModel together around an ``EsmModel`` and a causal LM (new modules seeded with ``seed``): the one
    place a model is assembled, whether built, loaded (:func:`sepit.model.load_model`) or counted.

    Tokenizers may be None (meta-device skeletons for counting: no processor). An sdpa LLM is switched to sepit's
    decoding attention (:func:`sepit.model.generation.use_ragged_attention`; sdpa except in decoding steps).
    """
    esm.set_attn_implementation(cfg.plm_attn_implementation)
    pc = cfg.projector
    structure, heads, projector = new_modules(cfg, esm.config, int(llm.config.hidden_size), text_hidden, seed=seed)
    processor = None
    if plm_tokenizer is not None and llm_tokenizer is not None:
        processor = SepitProcessor(plm_tokenizer, llm_tokenizer, pool=pc.pool, max_residues=cfg.max_residues)
    if cfg.moe.enabled:
        with _seeded(seed + 1):
            llm = upcycle_to_moe(llm, cfg.moe.num_experts, copy=False)
    use_ragged_attention(llm)  # once, here: generation never switches a shared model's attention
    sources = dict(sources or {})
    sources.setdefault("text_hidden_size", text_hidden)
    return SepitModel(StructureAwareEsm(esm, structure), heads, projector, llm, processor, cfg, sources)


def new_modules(cfg: ModelConfig, esm_config: Any, llm_hidden: int, text_hidden: int, *, seed: int
                ) -> tuple[StructureModule, Stage0Heads, Projector]:
    """sepit's own modules around the ESM and the LLM (structure module, stage-0 heads, projector), drawn from
    ``seed``: the same values whenever they are built with the same arguments, so an FSDP set-up can build a second,
    real copy to fill a meta-device skeleton's (:func:`build_on_meta`)."""
    sc, hc, pc = cfg.structure, cfg.heads, cfg.projector
    ec = esm_config
    with _seeded(seed):
        structure = StructureModule(ec.num_attention_heads, ec.hidden_size, sc.num_kernels, sc.bias_hidden,
                                    sc.node_scale)
        heads = Stage0Heads(ec.hidden_size, text_hidden, ec.vocab_size, sc.num_kernels, hc.contrastive_dim,
                            hc.temperature_init)
        projector = Projector(ec.hidden_size, llm_hidden, pc.hidden_dim or None, pc.num_layers)
    return structure, heads, projector


def _tiny_plm(cfg: ModelConfig):
    from transformers import EsmModel

    from sepit.model._tiny import tiny_esm_config, tiny_esm_tokenizer

    with _seeded(cfg.tiny.seed + 1):
        return EsmModel(tiny_esm_config(cfg.tiny), add_pooling_layer=False), tiny_esm_tokenizer()


def _tiny_llm(cfg: ModelConfig):
    from transformers import LlamaForCausalLM

    from sepit.model._tiny import tiny_llama_config, tiny_llm_tokenizer

    tok = tiny_llm_tokenizer()
    add_protein_tokens(tok)
    with _seeded(cfg.tiny.seed + 2):
        return LlamaForCausalLM(tiny_llama_config(cfg.tiny, tok)), tok


def _plm(cfg: ModelConfig, make: Callable[[Path], Any]) -> tuple[Any, Any, str]:
    """(ESM model, its tokenizer, its source) of ``cfg.plm``: the random tiny one, or ``make(path)`` and the
    tokenizer of the checkpoint folder ``path`` it names."""
    from transformers import AutoTokenizer

    if cfg.plm == TINY:
        esm, tok = _tiny_plm(cfg)
        return esm, tok, TINY
    path = _resolve(cfg.plm)
    return make(path), AutoTokenizer.from_pretrained(path), str(path)


# ---- builders -----------------------------------------------------------------------------------------------------
def build_model(cfg: ModelConfig, *, seed: int = 0) -> SepitModel:
    """``ModelConfig`` → ``SepitModel`` with pretrained (or, for ``tiny``, random) weights, float32 on CPU.

    The LLM tokenizer gets the protein tokens and the embeddings grow to fit them; with ``moe.enabled`` the LLM is
    upcycled right away (normally stage 2 upcycles a trained dense model with ``model.upcycle()``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, EsmModel

    from sepit.assets.convert import safetensors_only

    sources: dict[str, Any] = {}
    esm, plm_tok, sources["plm"] = _plm(cfg, lambda path: EsmModel.from_pretrained(
        path, add_pooling_layer=False, dtype=torch.float32, attn_implementation=cfg.plm_attn_implementation,
        **safetensors_only(path)))
    if cfg.llm == TINY:
        llm, llm_tok = _tiny_llm(cfg)
        sources["llm"] = TINY
    else:
        path = _resolve(cfg.llm)
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **safetensors_only(path))
        llm_tok = AutoTokenizer.from_pretrained(path)
        added = add_protein_tokens(llm_tok)
        if len(llm_tok) > llm.get_input_embeddings().weight.shape[0]:
            with _seeded(seed + 2):
                llm.resize_token_embeddings(len(llm_tok))
        log.debug("added %d protein tokens to the LLM tokenizer", added)
        sources["llm"] = str(path)
    sources["text_encoder"] = cfg.text_encoder
    return assemble(cfg, esm, llm, plm_tok, llm_tok, _text_hidden_size(cfg), seed=seed, sources=sources)


def build_skeleton(cfg: ModelConfig) -> tuple[SepitModel, dict[str, str]]:
    """A weightless SepitModel on the meta device (no processor), for counting parameters of any scale.

    Architectures come from the installed checkpoints' config.json or, when absent, from a built-in table of
    well-known checkpoints. Returns (model, where each architecture came from).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, EsmModel

    origin: dict[str, str] = {}
    if cfg.plm == TINY:
        from sepit.model._tiny import tiny_esm_config

        plm_conf, origin["plm"] = tiny_esm_config(cfg.tiny), TINY
    else:
        conf, where = _hf_config(cfg.plm, allow_known=True)
        plm_conf, origin["plm"] = conf, f"{cfg.plm} ({where})"
    if cfg.llm == TINY:
        from sepit.model._tiny import tiny_llama_config, tiny_llm_tokenizer

        tok = tiny_llm_tokenizer()
        add_protein_tokens(tok)
        llm_conf, origin["llm"] = tiny_llama_config(cfg.tiny, tok), TINY
    else:
        conf, where = _hf_config(cfg.llm, allow_known=True)
        llm_conf, origin["llm"] = conf, f"{cfg.llm} ({where})"
        try:
            tok = AutoTokenizer.from_pretrained(_resolve(cfg.llm))
            size = len(tok) + add_protein_tokens(tok)
        except SepitError:
            size = int(llm_conf.vocab_size) + 3  # the three protein tokens
        llm_conf.vocab_size = max(int(llm_conf.vocab_size), size)
    text_hidden = _text_hidden_size(cfg, allow_known=True)
    origin["text_encoder"] = cfg.text_encoder
    with torch.device("meta"):
        esm = EsmModel(plm_conf, add_pooling_layer=False)
        llm = AutoModelForCausalLM.from_config(llm_conf)
        model = assemble(cfg, esm, llm, None, None, text_hidden)
    return model, origin


# ---- skeletons to fill in parts (FSDP set-up: each process reads or draws its shards) --------------------------------
@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside register their parameters on the meta device (no memory, no values: each is created
    empty, untouched, and moved there before anything could fill it), while their buffers stay real on the CPU.

    Checkpoints do not hold non-persistent buffers (rotary frequencies, position ids), so a skeleton built this way
    keeps the values its modules compute for them, where one built under ``torch.device("meta")`` has none; its
    parameters are filled later (:mod:`sepit.train.fsdp_init`). Nothing is drawn from the RNG: initialising a meta
    tensor draws nothing."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def _parameters_to_meta(model: nn.Module) -> None:
    """Every parameter of ``model`` → an empty one on the meta device (tied parameters stay one)."""
    moved: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) not in moved:
                moved[id(p)] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
            module.register_parameter(name, moved[id(p)])


def router_weights(num_layers: int, hidden_size: int, num_experts: int, *, seed: int) -> list[torch.Tensor]:
    """The router weights (E, D) that :func:`~sepit.model.moe.upcycle_to_moe` draws for the ``num_layers`` decoder
    layers of an LLM when seeded with ``seed`` (as :func:`assemble` and stage 2 upcycle), drawn without the LLM:
    ``upcycle_mlp`` layer after layer, as ``upcycle_to_moe`` calls it, around a stand-in FFN whose copies draw
    nothing."""
    stand_in = nn.Module()
    stand_in.weight = nn.Parameter(torch.zeros(1))
    with _seeded(seed):
        return [upcycle_mlp(stand_in, hidden_size, num_experts).router.weight.detach()
                for _ in range(num_layers)]


def added_token_rows(llm_config: Any, input_weight: torch.Tensor, output_weight: torch.Tensor | None,
                     num_tokens: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows :func:`build_model` (seeded with ``seed``) adds to a pretrained LLM's input embeddings (and untied
    output embeddings) when it grows them to ``num_tokens`` for the protein tokens, from those pretrained matrices
    alone (V_old, D): an LLM of ``llm_config`` with every other parameter on the meta device, whose embeddings are
    these real matrices, is resized as build_model resizes its LLM (same seed, same draws; the new rows' mean and
    covariance need the whole matrix). → ((num_tokens - V_old, D), same or None)."""
    from transformers import AutoModelForCausalLM

    with parameters_on_meta():
        llm = AutoModelForCausalLM.from_config(llm_config)
    llm.set_input_embeddings(nn.Embedding.from_pretrained(input_weight.float(), freeze=False))
    if output_weight is None:
        llm.tie_weights()  # the output embeddings are the input ones, as in the pretrained LLM
    else:
        head = llm.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise SepitError(f"{type(llm).__name__}: an output layer with a bias cannot be resized here")
        head.weight = nn.Parameter(output_weight.float())
    old = input_weight.shape[0]
    with _seeded(seed + 2):  # as build_model
        llm.resize_token_embeddings(num_tokens)
    rows_in = llm.get_input_embeddings().weight.detach()[old:].clone()
    rows_out = None if output_weight is None else llm.get_output_embeddings().weight.detach()[old:].clone()
    return rows_in, rows_out


def build_on_meta(cfg: ModelConfig, *, seed: int = 0) -> tuple[SepitModel, dict[str, torch.Tensor], dict[str, Path]]:
    """:func:`build_model`'s model as a skeleton to fill in parts: every parameter on the meta device, buffers real
    (:func:`parameters_on_meta`); no pretrained weight is read.

    Returns (model, values, pretrained):

    - ``values``: the tensors build_model draws or computes itself, by state-dict name, with the values it gives
      them (same seeds, drawn on the CPU): sepit's new modules, random ``tiny`` parts (which have no checkpoint),
      routers of an MoE (``moe.enabled``) and buffers;
    - ``pretrained``: the Hugging Face directories (``plm``, ``llm``) whose weight files hold the other parameters;
      the LLM's embeddings have their grown shape, the added rows are :func:`added_token_rows`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, EsmModel, GenerationConfig

    sources: dict[str, Any] = {"text_encoder": cfg.text_encoder}
    pretrained: dict[str, Path] = {}

    def esm_on_meta(path: Path) -> EsmModel:
        with parameters_on_meta():
            return EsmModel(AutoConfig.from_pretrained(path), add_pooling_layer=False)

    esm, plm_tok, sources["plm"] = _plm(cfg, esm_on_meta)  # tiny: random, drawn for real, its values kept below
    if cfg.plm != TINY:
        pretrained["plm"] = Path(sources["plm"])
    if cfg.llm == TINY:
        llm, llm_tok = _tiny_llm(cfg)
        sources["llm"] = TINY
    else:
        path = pretrained["llm"] = _resolve(cfg.llm)
        with parameters_on_meta():
            llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
            llm_tok = AutoTokenizer.from_pretrained(path)
            add_protein_tokens(llm_tok)
            if len(llm_tok) > llm.get_input_embeddings().weight.shape[0]:
                llm.resize_token_embeddings(len(llm_tok), mean_resizing=False)  # the shape; values: added_token_rows
        if (path / "generation_config.json").is_file():  # as from_pretrained reads it
            llm.generation_config = GenerationConfig.from_pretrained(path)
        sources["llm"] = str(path)
    model = assemble(cfg, esm, llm, plm_tok, llm_tok, _text_hidden_size(cfg), seed=seed, sources=sources)
    values = {name: t.detach() for name, t in model.state_dict(keep_vars=True).items() if not t.is_meta}
    if cfg.moe.enabled and "llm" in pretrained:  # a meta LLM's routers were not drawn: draw them as assemble does
        moe = [(name, m) for name, m in model.named_modules() if isinstance(m, MoEFeedForward)]
        routers = router_weights(len(moe), int(llm.config.hidden_size), cfg.moe.num_experts, seed=seed + 1)
        values.update({f"{name}.router.weight": w for (name, _), w in zip(moe, routers)})
    _parameters_to_meta(model)
    return model, values, pretrained


def with_moe(cfg: ModelConfig, enabled: bool = True) -> ModelConfig:
    """A copy of ``cfg`` with MoE switched on or off."""
    return dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, enabled=enabled))
