"""What differs between stages, kept out of the loop: the model to start from, the items, collation and losses.

- stage 0: (protein, caption) pairs → contrastive + coordinate denoising + masked-residue losses (frozen text
  encoder);
- stage 1: caption conversations → next-token loss on the answer;
- stage 2: open-ended and yes/no QA → next-token loss + 0.01 × MoE load-balancing loss; the LLM is upcycled to
  MoE first, and the frozen encoder's outputs are cached (exact: the encoder is frozen and in eval mode).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepit.errors import CheckpointError, SepitError
from sepit.log import get_logger
from sepit.proteins import Protein
from sepit.train import distributed as dist
from sepit.train.batching import Item
from sepit.train.config import TrainConfig
from sepit.train.item_source import ItemSource, task_counts

log = get_logger(__name__)


def resolve_model_config(spec: str, overrides: list[str] | tuple[str, ...] = ()):
    """A preset name (``tiny``/``default``/``paper``) or a model YAML file (+ ``key=value`` overrides) →
    ModelConfig."""
    from sepit.config import from_dict, load_config, to_dict
    from sepit.model import PRESETS, ModelConfig

    if spec in PRESETS:
        return from_dict(ModelConfig, to_dict(PRESETS[spec]()), overrides) if overrides else PRESETS[spec]()
    if Path(spec).is_file():
        return load_config(spec, ModelConfig, overrides)
    raise SepitError(f"model {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a model config file")


def resolve_init(path: str) -> Path:
    """``init_from`` may be a model directory or a training run directory (its ``final/`` model is used)."""
    p = Path(path)
    for cand in (p, p / "final"):
        if (cand / "sepit_config.json").is_file():
            return cand
    if (p / "checkpoints").is_dir():
        raise CheckpointError(f"{p}: that training run has no final model yet (finish or resume it first)")
    raise CheckpointError(f"{p}: not a sepit model directory (no sepit_config.json); check init_from")


def _question(item: Item) -> str:
    """The text of an item's first user turn (its question, after the protein marker)."""
    return next((m["content"] for m in item.messages if m["role"] == "user"), "")


def protein_input(ds: Any, pid: str, max_len: int) -> Protein:
    """The dataset's protein ``pid`` cut to its first ``max_len`` residues."""
    p = ds.protein(pid)
    coords = None if p.coords is None else p.coords[:max_len]
    mask = None if p.coord_mask is None else p.coord_mask[:max_len]
    return Protein(p.sequence[:max_len], coords, mask, id=pid)


def has_structure(ds: Any, rec: Any) -> bool:
    """Whether every protein of record ``rec`` has a structure (``has_structure`` in the dataset's proteins.jsonl)."""
    return all(ds.protein_info(p).get("has_structure", False) for p in rec.protein_ids)


class StageRunner:
    """Owns the model of a stage and knows its items, collation and loss: the parts every stage shares. A stage's
    own parts live in :class:`Stage0Runner` (stage 0) and :class:`ChatRunner` (stages 1 and 2); ``make_runner``
    picks one, and the loop only sees this interface."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, device: torch.device) -> None:
        self.cfg = cfg
        self.model = model
        self.device = device
        self.use_cache = False  # the frozen encoder's outputs are cached (then FSDP leaves the encoder whole)
        self._valid: list[Item] = []

    # -- data ---------------------------------------------------------------------------------------------------------
    def _dataset(self):
        from sepit.data.dataset import InstructionDataset

        if not self.cfg.data.dir:
            raise SepitError("data.dir is empty: point it at a dataset built with `sepit data build`")
        return InstructionDataset(self.cfg.data.dir)

    def load_items(self) -> Sequence[Item]:
        """The training split's items, streamed from disk (:class:`~sepit.train.item_source.ItemSource`), and the
        validation items (a few, read now)."""
        ds = self._dataset()
        d = self.cfg.data
        items = self._source(ds)
        if not items:
            have = ds.manifest.get("counts", {}) if hasattr(ds, "manifest") else {}
            raise SepitError(f"{d.dir}: no {d.split} records of kinds {d.kinds}"
                             f"{' and tasks ' + str(d.tasks) if d.tasks else ''}"
                             f"{' with structure (data.require_structure)' if d.require_structure else ''} "
                             f"(the dataset has: {have})")
        self._valid = self._items(ds, d.eval_split, d.eval_records) if d.eval_records else []
        return items

    def _source(self, ds: Any) -> ItemSource:
        """The training items of ``cfg.data`` through the split's record index: read when a batch needs them."""
        d = self.cfg.data
        index = ds.record_index(d.split)
        rows = index.select(d.kinds, d.tasks or None, structured=d.require_structure)
        if d.max_records:
            rows = rows[:d.max_records]

        return ItemSource(index, rows, lambda rec: self._record_item(ds, rec), d.max_protein_len)

    def _items(self, ds: Any, split: str, limit: int) -> list[Item]:
        d = self.cfg.data
        out: list[Item] = []
        proteins: dict[str, Any] = {}
        for rec in ds.records(split=split, kinds=d.kinds, tasks=d.tasks or None):
            if d.require_structure and not has_structure(ds, rec):
                continue
            out.append(self._record_item(ds, rec, proteins))
            if limit and len(out) >= limit:
                break
        return out

    def _record_item(self, ds: Any, rec: Any, proteins: dict[str, Any] | None = None) -> Item:
        """Record ``rec`` as this stage's item: its proteins cropped to ``data.max_protein_len`` (kept in
        ``proteins`` when given, for reuse), its length = their residues + the text's characters / 4 (what length
        grouping orders by; ``ItemSource`` computes the same from the record index)."""
        cache = {} if proteins is None else proteins
        for pid in rec.protein_ids:
            if pid not in cache:
                cache[pid] = protein_input(ds, pid, self.cfg.data.max_protein_len)
        prots = tuple(cache[p] for p in rec.protein_ids)
        text_len = sum(len(m["content"]) for m in rec.messages) // 4
        return self._item(rec, prots, length=sum(len(p.sequence) for p in prots) + text_len)

    def _item(self, rec: Any, proteins: tuple[Any, ...], length: int) -> Item:
        """One dataset record as this stage's training item."""
        raise NotImplementedError

    def task_counts(self, items: Sequence[Item]) -> dict[str, int]:
        return task_counts(items)

    def memory_estimate_gb(self, shards: int = 1) -> float:
        """Per process: weights (fp32) + grads and two AdamW moments for the trainable part, split over ``shards``
        FSDP processes (a frozen encoder that stage 2 caches stays whole on each); activations not included."""
        total = sum(p.numel() for p in self.model.parameters())
        trainable_groups = self.model.param_groups()
        trainable = sum(p.numel() for g in self.cfg.lr for _, p in trainable_groups.get(g, []))
        whole = sum(p.numel() for p in self.model.encoder.parameters()) if shards > 1 and self._caches_encoder() else 0
        return ((total - whole) * 4 / shards + whole * 4 + trainable * 12 / shards) / 1e9

    def _caches_encoder(self) -> bool:
        return False

    # -- per stage ----------------------------------------------------------------------------------------------------
    def notes(self) -> str:
        """A line for the log at the end of the stage ("" for none)."""
        return ""

    def prepare(self, items: list[Item]) -> None:
        """Once, after the model is on its device and before the first step."""

    def objective(self, model: nn.Module) -> nn.Module:
        """The module whose ``forward(batch)`` computes this stage's losses (the loop wraps it in DDP under the
        ``ddp`` strategy and hands it to :meth:`loss`): the model itself, whose forward is the next-token loss."""
        return model

    def collate(self, items: list[Item], step: int) -> dict[str, Any]:
        """A micro-batch of ``items`` as model inputs (+ ``num_tokens_processed``); ``step`` seeds random choices."""
        raise NotImplementedError

    def normaliser(self, collated: list[dict[str, Any]]) -> float:
        """What the loss of one optimizer step is divided by (over its micro-batches ``collated``)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, Any], denom: float, n_micro: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to back-propagate for one micro-batch, computed through ``model`` (the :meth:`objective`,
        possibly DDP-wrapped), and its logged parts."""
        raise NotImplementedError

    def _validation_terms(self, batch: dict[str, Any], n_items: int) -> tuple[float, int]:
        """(summed loss, count) of one validation batch, for a mean over the whole validation set."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        if not self._valid:
            return None
        self.model.eval()
        total, n = 0.0, 0
        bs = self.cfg.batch_size
        for s in range(0, len(self._valid), bs):
            chunk = self._valid[s:s + bs]
            loss_sum, count = self._validation_terms(self.model.to_device(self.collate(chunk, step=-1)), len(chunk))
            total += loss_sum
            n += count
        self.model.train()
        return total / max(n, 1)


class Stage0Objective(nn.Module):
    """Stage 0's losses as a module, the unit the loop runs (and wraps in DDP under the ``ddp`` strategy):
    ``forward(batch)`` → ``model.stage0_losses`` with the stage's loss weights (the training config's
    ``loss_weights``, for training and validation alike)."""

    def __init__(self, model: nn.Module, weights: dict[str, float]) -> None:
        super().__init__()
        self.model = model
        self.weights = dict(weights)

    def forward(self, batch: dict[str, Any], *, gather: bool = False, generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
        """batch: protein keys + ``text_features`` (B, Dt) → ``{"loss", "contrastive", "denoise", "mlm"}`` scalars.
        ``gather``: contrastive negatives from every process (training with several; see ``ContrastiveHead``)."""
        return self.model.stage0_losses(batch, self.weights, gather=gather, generator=generator)


class Stage0Runner(StageRunner):
    """Stage 0: (protein, caption) pairs; contrastive + coordinate denoising + masked-residue losses against a
    frozen text encoder, which runs in :meth:`collate` (the batch carries its pooled captions)."""

    LOSSES = ("contrastive", "denoise", "mlm")

    def __init__(self, cfg: TrainConfig, model: nn.Module, device: torch.device) -> None:
        super().__init__(cfg, model, device)
        self.text_encoder: nn.Module | None = None
        self._valid_parts: dict[str, Any] | None = None  # the last validation_parts(), for notes()

    def _item(self, rec: Any, proteins: tuple[Any, ...], length: int) -> Item:
        return Item(rec.id, proteins, caption=rec.answer, task=rec.task, length=length,
                    protein_ids=tuple(rec.protein_ids))

    def prepare(self, items: list[Item]) -> None:
        self.text_encoder = self.model.load_text_encoder().to(self.device).eval()
        for p in self.text_encoder.parameters():
            p.requires_grad_(False)

    def objective(self, model: nn.Module) -> nn.Module:
        return Stage0Objective(model, self.cfg.loss_weights)

    def collate(self, items: list[Item], step: int) -> dict[str, Any]:
        """Protein keys + ``text_features`` (B, Dt) on the runner's device: the captions pooled by the frozen text
        encoder (its tokens are dropped; nothing downstream needs them)."""
        proc = self.model.processor
        batch = proc.stage0_batch([i.proteins[0] for i in items], [i.caption for i in items], self.text_encoder)
        ids, mask = batch.pop("text_input_ids"), batch.pop("text_attention_mask")
        with torch.no_grad():  # frozen: no graph to keep
            batch["text_features"] = self.text_encoder(ids.to(self.device), mask.to(self.device))
        batch["num_tokens_processed"] = int(batch["protein_attention_mask"].sum())
        return batch

    def normaliser(self, collated: list[dict[str, Any]]) -> float:
        """Micro-batches: each one's losses are already means over its pairs. Each micro-batch also gets
        ``denoise_share``, its share of the step's structured residues: the weight of its denoising loss in the
        step's logged denoise (a mean over the residues that have a structure)."""
        from sepit.model.heads import denoise_mask

        counts = [int(denoise_mask(b).sum()) for b in collated]
        for b, c in zip(collated, counts):
            b["denoise_share"] = c / max(sum(counts), 1)
        return float(len(collated))

    def loss(self, model: nn.Module, batch: dict[str, Any], denom: float, n_micro: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """``model``: :meth:`objective` (in DDP with several processes), whose contrastive negatives then come from
        every process. The logs leave ``denoise`` out for a micro-batch without structure (its 0 is no score);
        otherwise it enters by ``batch["denoise_share"]`` (:meth:`normaliser`; 1 / ``n_micro`` without it)."""
        from sepit.model.heads import denoise_mask

        parts = model(batch, gather=dist.world_info()[1] > 1)
        loss = parts["loss"] / n_micro  # the training loss itself is unchanged: its denoising term is 0 there
        logs = {"loss": float(loss.detach()), **{k: float(parts[k].detach()) / n_micro for k in self.LOSSES}}
        if bool(denoise_mask(batch).any()):
            logs["denoise"] = float(parts["denoise"].detach()) * batch.get("denoise_share", 1.0 / n_micro)
        else:
            del logs["denoise"]
        return loss, logs

    @torch.no_grad()
    def validation_parts(self) -> dict[str, Any] | None:
        """The validation set's losses (None without validation items): ``contrastive`` and ``mlm`` (means over
        items), ``denoise`` (a mean over the residues that have a structure; None when none has), ``loss`` (their
        sum with the config's ``loss_weights``; no denoising term without structure), and ``denoise_residues`` /
        ``denoise_proteins`` (what the denoise mean is over)."""
        from sepit.model.heads import denoise_mask

        if not self._valid:
            return None
        self.model.eval()
        objective = self.objective(self.model)
        sums = {"contrastive": 0.0, "mlm": 0.0, "denoise": 0.0}
        n = residues = proteins = 0
        bs = self.cfg.batch_size
        # One generator per pass, seeded the same each time: the set gets the same corruption each time it is
        # scored (and the training RNG is left alone), and each batch its own draws (one seed per batch would
        # repeat one batch's noise on every batch).
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        for s in range(0, len(self._valid), bs):
            chunk = self._valid[s:s + bs]
            batch = self.model.to_device(self.collate(chunk, step=-1))
            # every process scores the whole validation set, so no negatives from the others
            parts = objective(batch, gather=False, generator=gen)
            mask = denoise_mask(batch)
            r = int(mask.sum())
            sums["contrastive"] += float(parts["contrastive"]) * len(chunk)
            sums["mlm"] += float(parts["mlm"]) * len(chunk)
            sums["denoise"] += float(parts["denoise"]) * r  # the batch's mean over its r structured residues
            n, residues, proteins = n + len(chunk), residues + r, proteins + int(mask.any(dim=1).sum())
        self.model.train()
        w = self.cfg.loss_weights
        out: dict[str, Any] = {"contrastive": sums["contrastive"] / n, "mlm": sums["mlm"] / n,
                               "denoise": sums["denoise"] / residues if residues else None}
        out["loss"] = w["contrastive"] * out["contrastive"] + w["mlm"] * out["mlm"] \
            + (w["denoise"] * out["denoise"] if residues else 0.0)
        out.update(denoise_residues=residues, denoise_proteins=proteins)
        return out

    def validation_loss(self) -> float | None:
        """:meth:`validation_parts`' ``loss``; the parts are kept for :meth:`notes`."""
        self._valid_parts = self.validation_parts()
        return None if self._valid_parts is None else self._valid_parts["loss"]

    def notes(self) -> str:
        v = self._valid_parts
        if not v:
            return ""
        d = (f"denoise {v['denoise']:.4f} over {v['denoise_residues']} residues of {v['denoise_proteins']} "
             f"proteins with structure (predicting zero scores 1.0)" if v["denoise"] is not None
             else "denoise: no validation protein has a structure")
        return f"stage 0 validation: contrastive {v['contrastive']:.4f}, mlm {v['mlm']:.4f}, {d}"


class ChatRunner(StageRunner):
    """Stages 1 and 2: conversations with proteins; next-token loss on the answers (+ the MoE load-balancing loss
    in stage 2, whose frozen encoder's outputs are cached)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, device: torch.device) -> None:
        super().__init__(cfg, model, device)
        from sepit.train.encoder_cache import EncoderCache

        # (protein id, with structure) → (L, D_plm) features; bounded, on the host (see EncoderCache)
        self.cache = EncoderCache(int(cfg.cache_max_gb * 2**30), device)

    def _item(self, rec: Any, proteins: tuple[Any, ...], length: int) -> Item:
        return Item(rec.id, proteins, messages=tuple(rec.messages), task=rec.task, length=length,
                    protein_ids=tuple(rec.protein_ids))

    def load_items(self) -> Sequence[Item]:
        items = super().load_items()
        rc = self.model.config.retrieval
        if rc.enabled:
            items = self._with_homologs(items, rc.train_max_identity)
            self._valid = self._with_homologs(self._valid, 1.0)
        return items

    def _with_homologs(self, items: Sequence[Item], max_identity: float) -> Sequence[Item]:
        """Items whose first user turn carries the homolog context of their protein (the model's retrieval
        settings, the dataset's training-split index): one MMseqs2 search for all their proteins. Training items
        leave out hits above ``max_identity`` (and always the protein itself); the model then records the index, so
        its checkpoints carry it."""
        import dataclasses

        from sepit.data.instructions.record import add_context
        from sepit.retrieval.index import RetrievalIndex
        from sepit.retrieval.retriever import Retriever

        if not items:
            return items
        path = Path(self.cfg.data.dir) / "index"
        if not (path / "index.json").is_file():
            raise SepitError(f"{self.cfg.data.dir}: the model uses homolog context (retrieval.enabled) but the "
                             "dataset has no retrieval index; rebuild it with `sepit data build`, or train without "
                             "it (model_overrides=[retrieval.enabled=false])")
        retriever = Retriever(RetrievalIndex.load(path), self.model.config.retrieval, max_identity=max_identity)
        ds = self._dataset()  # whole sequences, as inference searches them (items hold cropped ones)
        self.model.retrieval_index = path
        if isinstance(items, ItemSource):
            return self._stream_homologs(items, retriever, ds)
        queries = [Protein(ds.protein_info(i.protein_ids[0])["sequence"], id=i.protein_ids[0]) for i in items]
        contexts = retriever.contexts(queries, [i.task for i in items], [_question(i) for i in items])
        with_hits = sum(not c.endswith("none found.") for c in contexts)
        log.info(f"homolog context for {len(items)} items: {with_hits} with hits (max identity {max_identity:g}; "
                 f"index {path}, {len(retriever.index)} proteins)")
        return [dataclasses.replace(i, messages=tuple(add_context(i.messages, c)), length=i.length + len(c) // 4)
                for i, c in zip(items, contexts)]

    def _stream_homologs(self, items: ItemSource, retriever: Any, ds: Any) -> ItemSource:
        """Streamed items get their context as they are read: the split's proteins are searched now, in one
        MMseqs2 call (the retriever keeps their hits, a few per protein), and each item read builds its block."""
        import dataclasses

        from sepit.data.instructions.record import add_context

        split = ds.protein_ids(self.cfg.data.split)
        seqs = {pid: ds.protein_info(pid)["sequence"] for pid in split}
        hits = retriever.hits([Protein(s, id=pid) for pid, s in seqs.items()])
        log.info(f"homolog context: {len(split)} {self.cfg.data.split} proteins searched, {sum(map(bool, hits))} "
                 f"with hits (max identity {retriever.max_identity:g}; index {retriever.index.path}, "
                 f"{len(retriever.index)} proteins)")

        def with_context(item: Item) -> Item:
            pid = item.protein_ids[0]
            c = retriever.contexts([Protein(seqs[pid], id=pid)], [item.task], [_question(item)])[0]
            return dataclasses.replace(item, messages=tuple(add_context(item.messages, c)),
                                       length=item.length + len(c) // 4)

        items.transform = with_context
        return items

    def prepare(self, items: Sequence[Item]) -> None:
        self.use_cache = self._caches_encoder()
        if self.use_cache:
            log.info(f"stage 2: the frozen encoder's outputs are cached as proteins are first seen, at most "
                     f"{self.cfg.cache_max_gb:g} GiB on the host (cache_max_gb), least recently used out first")

    def notes(self) -> str:
        return f"stage 2 encoder cache: {self.cache.describe()}" if self.use_cache else ""

    def _caches_encoder(self) -> bool:
        return self.cfg.stage == 2 and self.cfg.cache_encoder and not self._encoder_trains()

    def _encoder_trains(self) -> bool:
        return any(g in self.cfg.lr for g in ("plm", "structure"))

    def _drop_structure(self, item: Item, step: int) -> list[Any]:
        """Structure dropout: each protein loses its coordinates with probability ``structure_dropout``
        (seeded by seed, step and item id, so resumed runs see the same choices)."""
        import dataclasses

        p = self.cfg.structure_dropout
        rng = random.Random(f"{self.cfg.seed}/{step}/{item.id}")
        out = []
        for prot in item.proteins:
            if prot.coords is not None and p > 0 and rng.random() < p:
                prot = dataclasses.replace(prot, coords=None, coord_mask=None)
            out.append(prot)
        return out

    def collate(self, items: list[Item], step: int) -> dict[str, Any]:
        prots = [self._drop_structure(i, step) for i in items]
        batch = self.model.processor([list(i.messages) for i in items], prots)
        if self.use_cache:
            keys = [((pid, p.coords is not None), p)
                    for i, ps in zip(items, prots) for pid, p in zip(i.protein_ids, ps)]
            got = self._ensure_cached(keys)
            feats = [got[k] for k, _ in keys]
            batch["protein_features"] = torch.cat(feats) if feats else torch.zeros(0)
        batch["num_tokens_processed"] = int(batch["attention_mask"].sum())
        return batch

    def normaliser(self, collated: list[dict[str, Any]]) -> float:
        """Label tokens of the whole optimizer step over all ranks (exact mean over tokens)."""
        n = sum(int((b["labels"][:, 1:] != -100).sum()) for b in collated)
        return float(dist.all_reduce_mean(torch.tensor(float(n))).item() * dist.world_info()[1])

    def loss(self, model: nn.Module, batch: dict[str, Any], denom: float, n_micro: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        world = dist.world_info()[1]
        out = model(batch)
        lm = out.lm_loss * out.num_tokens * world / max(denom, 1.0)
        loss = lm
        logs = {"loss": float(lm.detach()), "lm": float(lm.detach())}
        if out.aux_loss is not None:
            aux_w = self.cfg.loss_weights.get("aux", self.model.config.moe.aux_loss_weight)
            aux = aux_w * out.aux_loss / n_micro
            loss = loss + aux
            logs["aux"] = float(out.aux_loss.detach()) / n_micro
        return loss, logs

    @torch.no_grad()
    def _ensure_cached(self, keys: list[tuple[tuple[str, bool], Any]]) -> dict[tuple[str, bool], torch.Tensor]:
        """The features of ``keys`` ((protein id, with structure) → (L, D_plm) features of the real residues, on
        the model's device): from the cache, else encoded now and cached. The encoder is frozen, so a cached
        encoding equals a recomputed one, and a protein evicted from the bounded cache is simply encoded again.

        Each protein is encoded alone, without padding (as inference encodes it): batched with others, its features
        would depend on their lengths in the last bits (padded shapes change the kernels' sums), so a run resumed
        from a checkpoint, which first meets its proteins in other company, would not repeat the run it continues.
        One forward per protein, once per run."""
        got: dict[tuple[str, bool], torch.Tensor] = {}
        todo: dict[tuple[str, bool], Any] = {}
        for k, p in keys:
            if k not in got and k not in todo:
                hit = self.cache.get(k)
                if hit is None:
                    todo[k] = p
                else:
                    got[k] = hit
        if todo:
            was_training = self.model.encoder.training
            self.model.encoder.eval()
            for k, p in todo.items():
                batch = self.model.to_device(self.model.processor.protein_batch([p]))
                got[k] = self.model.encoder_features(batch)[0].detach()
                self.cache.put(k, got[k])
            self.model.encoder.train(was_training)
        return got

    def _validation_terms(self, batch: dict[str, Any], n_items: int) -> tuple[float, int]:
        out = self.model(batch)
        return float(out.lm_loss) * out.num_tokens, out.num_tokens


def make_runner(cfg: TrainConfig, model: nn.Module | None, device: torch.device, *,
                on_meta: bool = False) -> StageRunner:
    """Build or load the model for a stage: ``init_from`` (a previous stage) or the ``model`` preset/config; then
    upcycle it (stage 2) and add LoRA adapters (``lora.rank`` > 0) as the stage asks.

    ``on_meta`` (FSDP set-up, when no ``model`` is given): the model is built on the meta device, no weight read,
    and the runner's ``weights`` say where each weight's values are (:mod:`sepit.train.fsdp_init`), for each
    process to read its shards once the model is sharded; otherwise ``weights`` is None."""
    from sepit.model import build_model, load_model
    from sepit.model.build import _seeded
    from sepit.train import fsdp_init

    weights = None
    if model is None:
        if cfg.init_from:
            init = resolve_init(cfg.init_from)
            model, weights = fsdp_init.load_on_meta(init) if on_meta else (load_model(init), None)
            log.info(f"stage {cfg.stage}: starting from {init}")
        elif on_meta:
            model, weights = fsdp_init.build_on_meta(resolve_model_config(cfg.model, cfg.model_overrides),
                                                     seed=cfg.seed)
        else:
            model = build_model(resolve_model_config(cfg.model, cfg.model_overrides), seed=cfg.seed)
    if cfg.stage == 2 and cfg.upcycle_experts and not model.is_moe:
        if cfg.upcycle_experts != model.config.moe.num_experts:
            import dataclasses

            model.config = dataclasses.replace(
                model.config, moe=dataclasses.replace(model.config.moe, num_experts=cfg.upcycle_experts))
        # the routers' draw depends on the seed alone, not on what loading the model drew: a meta-device model
        # (FSDP) draws the same ones on the CPU
        with _seeded(cfg.seed + 1):
            model.upcycle()
        if weights is not None:
            fsdp_init.add_routers(model, weights, seed=cfg.seed + 1)
        log.info(f"stage 2: LLM upcycled to a mixture of {cfg.upcycle_experts} experts (top-1)")
    if cfg.lora.rank:  # after upcycling: the experts are copies of plain FFNs (LoRA adapts attention by default)
        from sepit.train.lora import add_lora

        add_lora(model.llm, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets)
        log.info(f"stage {cfg.stage}: LoRA rank {cfg.lora.rank} on the LLM's {', '.join(cfg.lora.targets)}; its own "
                 "weights stay frozen")
    if cfg.grad_checkpointing:
        enable = getattr(model.llm, "activation_checkpointing_enable", None) or model.llm.gradient_checkpointing_enable
        enable()
    runner = (Stage0Runner if cfg.stage == 0 else ChatRunner)(cfg, model, device)
    runner.weights = weights
    return runner
