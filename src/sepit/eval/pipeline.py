"""``sepit eval`` as a function: a checkpoint (and/or baselines, second checkpoints) on a built dataset's split.

Reads the dataset through its contract (docs/architecture.md): ``InstructionDataset(DIR)`` for records and proteins,
``DIR/proteins.jsonl`` for each protein's ``max_identity_to_train`` and ``has_structure``. The nearest-homolog
baseline searches the test proteins against the training proteins with MMseqs2; yes/no claims are read with the
instruction templates, so the homolog's own annotations decide its answer.

    results = evaluate_dataset(EvalConfig(), "data/default", "runs/eval", checkpoint="runs/stage2/final")

Models are evaluated in fp32 by default, so reported figures stay comparable across machines; ``precision="auto"``
or ``"bf16"`` casts them after loading (faster on bf16 hardware; bf16 changes some greedy answers). The precision
and the weights' dtype are recorded in the report's header.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sepit.errors import InputError, SepitError
from sepit.eval.baselines import ClaimOf, claim_extractor, search_training_hits, top_identity
from sepit.eval.config import EvalConfig
from sepit.eval.items import EvalItem, items_from_records, record_dict, with_local_identity
from sepit.eval.predictions import PredictionLog
from sepit.eval.run import _slug, evaluate, predict_with_model, prediction_fingerprint, select_items
from sepit.log import get_logger
from sepit.tools.mmseqs import Hit

log = get_logger(__name__)


def open_dataset(path: str | Path) -> Any:
    """``sepit.data.dataset.InstructionDataset(path)``, with a one-line error when it cannot be opened."""
    try:
        from sepit.data.dataset import InstructionDataset
    except ImportError as e:
        raise SepitError(f"cannot read built datasets in this installation ({e})") from None
    if not Path(path).is_dir():
        raise InputError(path, "no such dataset folder (build one with `sepit data build -o DIR`)")
    return InstructionDataset(path)


def read_protein_rows(dataset_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``DIR/proteins.jsonl`` by protein id ({} when the file is absent: identities are then taken from hits)."""
    p = Path(dataset_dir) / "proteins.jsonl"
    if not p.is_file():
        log.warning("%s not found: identity bins come from the MMseqs2 search instead", p)
        return {}
    rows: dict[str, dict[str, Any]] = {}
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows[str(row["id"])] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(p, f"line {n}: not a protein row with an 'id'") from None
    return rows


def default_claim_extractor() -> ClaimOf | None:
    """Claims of yes/no questions, read with the shipped instruction templates (None if they cannot be loaded)."""
    try:
        from sepit.data.instructions.templates import load_templates

        t = load_templates()
    except (ImportError, SepitError) as e:
        log.warning("instruction templates unavailable (%s): the homolog baseline copies identical questions only",
                    e)
        return None
    return claim_extractor({name: tt.yesno for name, tt in t.tasks.items()})


def _with_identity(items: list[EvalItem], hits: Mapping[str, list[Hit]]) -> list[EvalItem]:
    """Fill identities the dataset did not record from the search's best hit."""
    best = top_identity(hits)
    return [it if it.identity is not None or it.protein_id not in best
            else dataclasses.replace(it, identity=best[it.protein_id]) for it in items]


def evaluate_dataset(cfg: EvalConfig, dataset_dir: str | Path, out_dir: str | Path, *,
                     checkpoint: str | Path | None = None, others: Mapping[str, str | Path] | None = None,
                     device: str = "cpu", dataset: Any = None, precision: str = "fp32", retrieval: bool = True
                     ) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (optional), the baselines of ``cfg`` and any ``others`` (name → checkpoint, e.g. the
    sequence-only or dense ablation) on the dataset's ``cfg.split``; writes the report into ``out_dir``.

    A model trained with homolog context gets it from the dataset's own training-split index (never a bigger one:
    held-out figures stay honest), and is also run without it (``generation.no_retrieval_ablation``);
    ``retrieval=False`` runs it with the paper's prompt only.

    Every model is cast with ``model.to_precision(precision)`` after loading: ``fp32`` (default), ``auto`` (bf16
    where the hardware runs it natively) or ``bf16``; anything else is a one-line ConfigError."""
    from sepit.model.precision import check_precision, inference_dtype

    check_precision(precision)
    ds = dataset if dataset is not None else open_dataset(dataset_dir)
    rows = read_protein_rows(dataset_dir)
    test = list(ds.records(split=cfg.split, kinds=cfg.kinds, tasks=cfg.tasks or None))
    if not test:
        raise InputError(dataset_dir, f"no {cfg.split} records of kinds {cfg.kinds}"
                                      f"{' and tasks ' + str(cfg.tasks) if cfg.tasks else ''}")
    items = select_items(items_from_records(test, rows, source=str(dataset_dir)), cfg)
    train = list(ds.records(split="train")) if cfg.baselines.run else []
    hits: dict[str, list[Hit]] | None = None
    if "nearest_homolog" in cfg.baselines.run:
        test_ids = sorted({p for it in items for p in it.all_protein_ids})
        train_ids = sorted({p for r in map(record_dict, train) for p in r.get("protein_ids") or []})
        log.info("MMseqs2: %d test proteins against %d training proteins", len(test_ids), len(train_ids))
        hits = search_training_hits({p: ds.protein(p).sequence for p in test_ids},
                                    {p: ds.protein(p).sequence for p in train_ids},
                                    evalue=cfg.baselines.mmseqs_evalue, sensitivity=cfg.baselines.mmseqs_sensitivity,
                                    max_hits=cfg.baselines.max_hits)
        items = with_local_identity(_with_identity(items, hits), hits)
    meta: dict[str, Any] = {"checkpoint": str(checkpoint) if checkpoint else "–", "dataset": str(dataset_dir),
                            "split": cfg.split, "device": device,
                            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        from sepit import __version__

        meta["sepit"] = __version__
    except ImportError:
        pass
    if checkpoint or others:  # what the models ran in (``auto`` resolved for this device)
        meta["precision"] = precision
        meta["weights_dtype"] = str(inference_dtype(precision, device)).removeprefix("torch.")
    from sepit.model import load_model
    from sepit.model.packing import PrefixStore

    out = Path(out_dir)
    extra = {}
    if others:
        g = cfg.generation
        for name, path in others.items():
            other = load_model(path, device=device).to_precision(precision)
            ret = dataset_retriever(other, dataset_dir) if retrieval else None
            plog = PredictionLog(out / "predictions" / f"{_slug(name)}.jsonl",
                                 prediction_fingerprint(other, path, dataset_dir, cfg, retriever=ret))
            store = PrefixStore(g.prefix_store_gb) if g.prefix_store_gb > 0 else None
            extra[name] = predict_with_model(other, items, ds.protein, plog, max_new_tokens=g.max_new_tokens,
                                             batch_size=g.batch_size, yesno_likelihood=g.yesno_likelihood, desc=name,
                                             retriever=ret, store=store)
            del other
    model = load_model(checkpoint, device=device).to_precision(precision) if checkpoint else None
    retriever = dataset_retriever(model, dataset_dir) if model is not None and retrieval else None
    if retriever is not None:
        meta["retrieval"] = {"k": retriever.cfg.k, "evalue": retriever.cfg.evalue,
                             "min_identity": retriever.cfg.min_identity, "min_coverage": retriever.cfg.min_coverage,
                             "index": f"{dataset_dir}/index (training split, {len(retriever.index)} proteins)"}
    # Report order: this checkpoint (with, then without structure), the other checkpoints, the baselines.
    return evaluate(cfg, items, out_dir=out, model=model, proteins=ds.protein, train_records=train, hits=hits,
                    claim_of=default_claim_extractor(), extra=extra, meta=meta, retriever=retriever)


def dataset_retriever(model: Any, dataset_dir: str | Path) -> Any:
    """The retriever for evaluating ``model`` on a dataset: its retrieval settings over the dataset's own
    training-split index; None for a model without homolog context."""
    rc = model.config.retrieval
    if not rc.enabled:
        return None
    from sepit.retrieval.index import RetrievalIndex
    from sepit.retrieval.retriever import Retriever

    path = Path(dataset_dir) / "index"
    if not (path / "index.json").is_file():
        raise InputError(dataset_dir, "the model uses homolog context but this dataset has no retrieval index "
                                      "(index/); rebuild it with `sepit data build` or evaluate with --no-retrieval")
    return Retriever(RetrievalIndex.load(path), rc)
