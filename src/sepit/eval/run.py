"""Running an evaluation: the model's predictions (batched greedy decoding + yes/no likelihood, resumable), the
baselines, scoring, and the report — from plain inputs, so the CLI only loads files and calls :func:`evaluate`.

    items = items_from_records(test_records, proteins_rows)
    results = evaluate(cfg, items, out_dir="runs/eval", model=model, proteins=dataset.protein,
                       train_records=train_records, hits=hits, claim_of=claim_of, meta={"checkpoint": ...})
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sepit.errors import SepitError
from sepit.eval.baselines import (
    NEAREST_HOMOLOG,
    PRIOR,
    TOPK_VOTE,
    ClaimOf,
    nearest_homolog_predictions,
    prior_predictions,
    topk_vote_predictions,
)
from sepit.eval.bootstrap import add_intervals, subset_summaries
from sepit.eval.breakdown import evaluate_system
from sepit.eval.config import EvalConfig, MetricsSection
from sepit.eval.items import EvalItem, Prediction
from sepit.eval.metrics import TextScorer
from sepit.eval.predictions import PredictionLog
from sepit.eval.report import write_report
from sepit.log import get_logger, progress
from sepit.tools.mmseqs import Hit

log = get_logger(__name__)

ProteinLookup = Callable[[str], Any]  # protein id → anything sepit.proteins.as_protein accepts
MODEL = "model"
MODEL_NO_STRUCTURE = "model (no structure)"
MODEL_NO_HOMOLOGS = "model (no homologs)"


def _pair_key(it: EvalItem) -> str:
    """Yes/no items come in (yes, no) pairs ``…/yesno/2k`` and ``…/yesno/2k+1``: one key per pair, so a sample
    keeps both and stays balanced."""
    head, _, n = it.id.rpartition("/")
    return f"{head}/{int(n) // 2}" if it.kind == "yesno" and n.isdigit() else it.id


def _sample(items: list[EvalItem], n: int) -> list[EvalItem]:
    """``n`` items spread over proteins and tasks: whole pairs ranked by a hash of their key (the same ``n``
    always picks the same items)."""
    if not n or len(items) <= n:
        return items
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(_pair_key(it), []).append(i)
    keep: set[int] = set()
    for key in sorted(groups, key=lambda k: hashlib.sha1(k.encode()).hexdigest()):
        if len(keep) >= n:
            break
        keep.update(groups[key])
    return [it for i, it in enumerate(items) if i in keep]


def select_items(items: Sequence[EvalItem], cfg: EvalConfig) -> list[EvalItem]:
    """Items of the configured kinds and tasks; with ``cfg.limits`` (per kind) or ``cfg.limit`` (all kinds
    together), a deterministic sample of that many spread over proteins and tasks, yes/no pairs kept whole."""
    out = [it for it in items if it.kind in cfg.kinds and (not cfg.tasks or it.task in cfg.tasks)]
    if cfg.limits:
        picked = {it.id for kind in {it.kind for it in out}
                  for it in _sample([x for x in out if x.kind == kind], cfg.limits.get(kind, cfg.limit))}
        return [it for it in out if it.id in picked]
    return _sample(out, cfg.limit)


def make_text_scorer(m: MetricsSection) -> TextScorer:
    """The configured TextScorer (tokeniser for BLEU/METEOR, METEOR on/off, BERTScore encoder or none)."""
    from sepit.eval.text import make_tokenizer

    bert = None
    if m.bertscore_model:
        from sepit.eval.bertscore import BertScorer

        bert = BertScorer(m.bertscore_model, num_layers=m.bertscore_layers, batch_size=m.bertscore_batch_size,
                          device=m.device)
    return TextScorer(make_tokenizer(m.tokenizer, m.tokenizer_path), bertscorer=bert, use_meteor=m.meteor)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "system"


def prediction_fingerprint(model: Any, checkpoint: Any, dataset: Any, cfg: EvalConfig, *,
                           use_structure: bool = True, retriever: Any = None) -> dict[str, Any]:
    """The settings a prediction log is tied to (a rerun with other settings is refused, not mixed in).
    The weights' dtype is part of it only when it is not float32, so logs written before precision was a choice
    (all fp32) still resume."""
    g = cfg.generation
    fp = {"checkpoint": str(checkpoint), "dataset": str(dataset), "split": cfg.split,
          "max_new_tokens": g.max_new_tokens, "use_structure": use_structure, "yesno_likelihood": g.yesno_likelihood}
    dtype = str(getattr(model, "dtype", "torch.float32")).removeprefix("torch.")
    if dtype != "float32":
        fp["dtype"] = dtype
    if retriever is not None:  # homolog context: its settings and index are part of what the answers depend on
        import dataclasses

        fp["retrieval"] = {**dataclasses.asdict(retriever.cfg), "index": str(retriever.index.path)}
    return fp


def predict_with_model(model: Any, items: Sequence[EvalItem], proteins: ProteinLookup, plog: PredictionLog, *,
                       max_new_tokens: int = 128, batch_size: int = 8, use_structure: bool = True,
                       yesno_likelihood: bool = True, desc: str = MODEL, retriever: Any = None,
                       store: Any = None) -> dict[str, Prediction]:
    """Answers of ``model`` (a ``SepitModel``) for the items not yet in ``plog``. Yes/no items are scored by
    likelihood alone when ``yesno_likelihood`` (one forward pass: ``p_yes`` from the answer's first token, the
    answer ``yes`` iff p_yes ≥ 0.5); other items are decoded greedily. Each batch is logged as soon as it is done.

    ``use_structure=False`` gives the model sequences only (the structure ablation at inference); ``retriever``
    (a :class:`sepit.retrieval.retriever.Retriever`) puts each item's homolog context in its prompt, searched for
    all items at once; ``store`` (a :class:`sepit.model.packing.PrefixStore`) keeps prompt beginnings across
    calls. Returns the predictions of ``items`` (old and new).
    """
    import torch

    from sepit.proteins import Protein, as_protein

    cache: dict[str, Protein] = {}

    def protein(pid: str) -> Protein:
        if pid not in cache:
            p = as_protein(proteins(pid))
            cache[pid] = p if use_structure else p.without_structure()
        return cache[pid]

    from sepit.data.instructions.record import with_context

    todo = plog.pending(items)
    contexts: dict[str, str] = {}
    if retriever is not None and todo:
        retriever.hits([protein(it.protein_id) for it in todo])  # one MMseqs2 search; batches read the cache
    options: dict[str, list[str]] = {}
    if retriever is not None and retriever.cfg.choose_open:  # open answers chosen among the hits' answers
        open_ = [it for it in todo if it.kind != "yesno"]
        options = dict(zip((it.id for it in open_),
                           retriever.answer_options([protein(it.protein_id) for it in open_],
                                                    [it.task for it in open_], [it.question for it in open_])))

    def how(it: EvalItem) -> int:
        """0 scored by likelihood, 1 chosen among options, 2 written."""
        return 0 if yesno_likelihood and it.kind == "yesno" else 1 if options.get(it.id) else 2

    # Items answered the same way together: a batch of written answers decodes all its rows in one loop (decoding
    # steps cost about the same for 2 rows or 16). Then similar lengths together; a protein's questions of one task
    # side by side, so a yes/no pair shares a batch and its prefix (the order of the log does not matter).
    todo.sort(key=lambda it: (how(it), sum(len(protein(p).sequence) for p in it.all_protein_ids),
                              it.all_protein_ids, it.task, len(it.question)))
    was_training = model.training
    model.eval()
    bar = progress(total=len(todo), desc=desc, unit="item")
    try:
        for s in range(0, len(todo), batch_size):
            batch = todo[s:s + batch_size]
            if retriever is not None:
                contexts = dict(zip((it.id for it in batch),
                                    retriever.contexts([protein(it.protein_id) for it in batch],
                                                       [it.task for it in batch], [it.question for it in batch])))
            convs = [[{"role": "user", "content": with_context(it.question, contexts.get(it.id, ""))}]
                     for it in batch]
            prots = [[protein(p) for p in it.all_protein_ids] for it in batch]
            gen = [i for i, it in enumerate(batch) if how(it) > 0]
            texts = [""] * len(batch)
            opts = {i: options[batch[i].id] for i in gen if options.get(batch[i].id)}
            if gen:
                for i, t in zip(gen, model.answer([convs[i] for i in gen], [prots[i] for i in gen],
                                                  [opts.get(i, []) for i in gen], max_new_tokens=max_new_tokens,
                                                  store=store)):
                    texts[i] = t
            p_yes: list[float | None] = [None] * len(batch)
            yn = [i for i, it in enumerate(batch) if it.kind == "yesno"]
            if yesno_likelihood and yn:
                enc = model.processor([convs[i] for i in yn], [prots[i] for i in yn], add_generation_prompt=True)
                with torch.no_grad():
                    probs = model.yes_no_probability(model.to_device(enc), store).float().cpu()
                if not torch.isfinite(probs).all():  # corrupt or diverged weights: no answer to log, no NaN report
                    bad = batch[yn[int((~torch.isfinite(probs)).nonzero()[0, 0])]]
                    raise SepitError(f"the model gives a non-finite P(yes) for item {bad.id!r}: its weights are "
                                     "corrupt or the training diverged; evaluation stopped (finished items are kept)")
                probs = probs.tolist()
                for i, p in zip(yn, probs):
                    p_yes[i] = min(max(float(p), 0.0), 1.0)
                    if i not in gen:
                        texts[i] = "yes" if p_yes[i] >= 0.5 else "no"
            plog.append(Prediction(it.id, t.strip(), py) for it, t, py in zip(batch, texts, p_yes))
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    done = plog.load()
    return {it.id: done[it.id] for it in items}


def build_results(items: Sequence[EvalItem], systems: Mapping[str, Mapping[str, Prediction] | Sequence[Prediction]],
                  scorer: TextScorer | None, *, cfg: EvalConfig | None = None,
                  stats: Mapping[str, Mapping[str, int]] | None = None, meta: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Score every system on the same items → the ``results`` dict that :func:`write_report` takes."""
    cfg = cfg or EvalConfig()
    out_systems = {}
    for name, preds in systems.items():
        log.info("scoring %s on %d items", name, len(items))
        out_systems[name] = evaluate_system(items, preds, scorer, identity_edges=cfg.identity_bins,
                                            ece_bins=cfg.ece_bins, stats=(stats or {}).get(name))
    extra: dict[str, Any] = {}
    if cfg.bootstrap:
        add_intervals(out_systems, n_boot=cfg.bootstrap)
        from sepit.retrieval.facts import SEQUENCE_TASKS

        tasks = {it.task for it in items}
        if tasks & set(SEQUENCE_TASKS) and tasks - set(SEQUENCE_TASKS):
            # the questions the protein's own sequence answers (its length, mass, composition) apart: how each
            # system does on what only annotations can tell
            extra["without_sequence_tasks"] = subset_summaries(
                out_systems, lambda r: r.get("task") not in SEQUENCE_TASKS, n_boot=cfg.bootstrap)
    m = dict(meta or {})
    m.setdefault("n_items", len(items))
    m.setdefault("identity_bins_percent", list(cfg.identity_bins))
    if scorer is not None:
        m.setdefault("bleu_meteor_tokenizer", getattr(scorer.tokenize, "__name__", str(scorer.tokenize)))
        m.setdefault("bertscore_encoder", str(scorer.bertscorer.model_dir) if scorer.bertscorer else "off")
    return {"meta": m, "systems": out_systems, **extra}


def _has_structure(item: EvalItem, proteins: ProteinLookup) -> bool:
    from sepit.proteins import as_protein

    return any(as_protein(proteins(p)).has_structure for p in item.all_protein_ids)


def _vote_hits(items: Sequence[EvalItem], proteins: ProteinLookup | None, hits: Mapping[str, Sequence[Hit]] | None,
               retriever: Any) -> tuple[int, dict[str, list[Hit]]]:
    """The hits the top-k vote uses: those the model sees (its retriever: same index, cut-offs and k); without
    one, the nearest-homolog search's hits within the default retrieval e-value."""
    if retriever is not None and proteins is not None:
        from sepit.proteins import as_protein

        ids = sorted({it.protein_id for it in items})
        found = retriever.hits([as_protein(proteins(p)) for p in ids])
        return retriever.cfg.k, dict(zip(ids, found))
    from sepit.retrieval.config import RetrievalConfig

    rc = RetrievalConfig()
    return rc.k, {q: [h for h in hs if h.evalue is None or h.evalue <= rc.evalue] for q, hs in (hits or {}).items()}


def evaluate(cfg: EvalConfig, items: Sequence[EvalItem], *, out_dir: str | Path, model: Any = None,
             proteins: ProteinLookup | None = None, train_records: Sequence[Mapping[str, Any]] = (),
             hits: Mapping[str, Sequence[Hit]] | None = None, claim_of: ClaimOf | None = None,
             extra: Mapping[str, Mapping[str, Prediction] | Sequence[Prediction]] | None = None,
             meta: Mapping[str, Any] | None = None, scorer: TextScorer | None = None, retriever: Any = None
             ) -> dict[str, Any]:
    """The whole evaluation: the model (with, and without, structure; with ``retriever``, with and without its
    homolog context), the baselines, any ``extra`` systems (e.g. a second checkpoint's predictions), scored on the
    same items; writes the report into ``out_dir``.

    The model's predictions are logged under ``out_dir/predictions/`` so a rerun skips finished items.
    ``hits`` (test protein → ranked training hits) enables the nearest-homolog baseline; ``train_records`` the
    prior (and the homolog's answers).
    """
    out = Path(out_dir)
    items = select_items(items, cfg)
    meta = dict(meta or {})
    systems: dict[str, Any] = {}
    stats: dict[str, dict[str, int]] = {}
    if model is not None:
        if proteins is None:
            raise ValueError("evaluating a model needs a protein lookup")
        g = cfg.generation
        runs = [(MODEL, True, retriever)]
        if retriever is not None and g.no_retrieval_ablation:
            runs.append((MODEL_NO_HOMOLOGS, True, None))
        if g.no_structure_ablation and any(it.has_structure for it in items):
            runs.append((MODEL_NO_STRUCTURE, False, retriever))
        store = None
        if g.prefix_store_gb > 0:  # one per model: its runs differ after the protein, not before
            from sepit.model.packing import PrefixStore

            store = PrefixStore(g.prefix_store_gb)
        for name, use_structure, ret in runs:
            fp = prediction_fingerprint(model, meta.get("checkpoint", ""), meta.get("dataset", ""), cfg,
                                        use_structure=use_structure, retriever=ret)
            plog = PredictionLog(out / "predictions" / f"{_slug(name)}.jsonl", fp)
            if len(plog):
                log.info("%s: %d predictions already done, resuming", name, len(plog))
            # Without structure, a protein that has none sees exactly the model run's input: reuse its answer.
            todo = items if use_structure else [it for it in items if _has_structure(it, proteins)]
            preds = predict_with_model(model, todo, proteins, plog, max_new_tokens=g.max_new_tokens,
                                       batch_size=g.batch_size, use_structure=use_structure,
                                       yesno_likelihood=g.yesno_likelihood, desc=name, retriever=ret, store=store)
            systems[name] = {it.id: preds.get(it.id) or systems[MODEL][it.id] for it in items}
            if store is not None and store.hits + store.misses:
                log.info("%s: prompt beginnings reused %d times, run %d times (%d kept, %.2f GiB)", name,
                         store.hits, store.misses, len(store), store.bytes / 2**30)
    for name, preds in (extra or {}).items():
        systems[name] = preds
    if PRIOR in cfg.baselines.run and train_records:
        systems[PRIOR], st = prior_predictions(items, train_records)
        stats[PRIOR] = st.to_dict()
    if "nearest_homolog" in cfg.baselines.run and hits is not None:
        systems[NEAREST_HOMOLOG], st = nearest_homolog_predictions(items, train_records, hits, claim_of=claim_of,
                                                                   fallback=cfg.baselines.fallback)
        stats[NEAREST_HOMOLOG] = st.to_dict()
    if "topk_vote" in cfg.baselines.run and train_records and (retriever is not None or hits is not None):
        k, vote_hits = _vote_hits(items, proteins, hits, retriever)
        systems[TOPK_VOTE], st = topk_vote_predictions(items, train_records, vote_hits, k=k, claim_of=claim_of,
                                                       fallback=cfg.baselines.fallback)
        stats[TOPK_VOTE] = st.to_dict()
    if not systems:
        raise ValueError("nothing to evaluate: no model, no extra predictions and no baseline inputs")
    meta.setdefault("split", cfg.split)
    results = build_results(items, systems, scorer if scorer is not None else make_text_scorer(cfg.metrics),
                            cfg=cfg, stats=stats, meta=meta)
    write_report(results, out)
    return results
