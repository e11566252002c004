"""Training items stream from disk through the record index that `sepit data build` writes: the same items, in the
same order, as reading every record up front; one epoch's order is a permutation held once; an old dataset without
an index gets one built once; a damaged index is a one-line error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sepit.data.dataset import InstructionDataset
from sepit.data.record_index import COLUMNS, RecordIndex
from sepit.errors import InputError
from sepit.model import build_model, tiny
from sepit.train.batching import epoch_batches
from sepit.train.config import DataSection, TrainConfig
from sepit.train.item_source import ItemSource
from sepit.train.stages import ChatRunner, Stage0Runner


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from sepit.data.build import build_dataset, default_config
    from sepit.data.config import DataConfig

    out = tmp_path_factory.mktemp("data") / "ds"
    build_dataset(default_config(DataConfig(max_proteins=40)), out)
    return out


def _runner(cls, stage: int, data: Path, **data_kw):
    cfg = TrainConfig(stage=stage, out_dir="unused", lr={"projector": 1e-3},
                      data=DataSection(dir=str(data), eval_records=0, max_protein_len=50, **data_kw))
    return cls(cfg, build_model(tiny()), torch.device("cpu"))


@pytest.mark.parametrize("cls,stage,kinds", [(Stage0Runner, 0, ["caption"]), (ChatRunner, 2, ["open", "yesno"])])
def test_streamed_items_equal_the_records_read_up_front(dataset, cls, stage, kinds) -> None:
    r = _runner(cls, stage, dataset, kinds=kinds)
    streamed = r.load_items()
    assert isinstance(streamed, ItemSource)
    upfront = r._items(InstructionDataset(dataset), "train", 0)
    assert len(streamed) == len(upfront) > 10
    for i, want in enumerate(upfront):
        got = streamed[i]
        assert (got.id, got.task, got.messages, got.caption, got.protein_ids, got.length) == \
               (want.id, want.task, want.messages, want.caption, want.protein_ids, want.length)
        assert got.proteins[0].sequence == want.proteins[0].sequence and len(got.proteins[0].sequence) <= 50
    assert streamed.lengths[np.arange(len(upfront))].tolist() == [i.length for i in upfront]
    assert streamed.task_counts() == r.task_counts(upfront)


def test_filters_and_max_records(dataset) -> None:
    r = _runner(ChatRunner, 2, dataset, kinds=["yesno"], tasks=["go_mf"], max_records=5)
    items = r.load_items()
    assert 0 < len(items) <= 5 and {items[i].task for i in range(len(items))} == {"go_mf"}


def test_select_structured_keeps_the_records_whose_proteins_have_a_structure(dataset, tmp_path, monkeypatch) -> None:
    """The builder's column, and the one an older dataset's index gets from proteins.jsonl (here with every third
    protein marked as having a structure: the first proteins of the embedded data have none)."""

    def expected(ds: InstructionDataset) -> list[int]:
        return [n for n, r in enumerate(ds.records(split="train"))
                if all(ds.protein_info(p)["has_structure"] for p in r.protein_ids)]

    ds = InstructionDataset(dataset)
    assert ds.record_index("train").select(structured=True).tolist() == expected(ds)
    monkeypatch.setenv("SEPIT_HOME", str(tmp_path / "home"))
    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    shutil.rmtree(old / "records" / "train.index")
    rows = [json.loads(line) for line in (old / "proteins.jsonl").read_text().splitlines()]
    for n, r in enumerate(rows):
        r["has_structure"] = n % 3 == 0
    (old / "proteins.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = InstructionDataset(old)
    want = expected(ds)
    assert 0 < len(want) < len(ds.record_index("train"))
    assert ds.record_index("train").select(structured=True).tolist() == want
    caption = [n for n, r in enumerate(ds.records(split="train")) if r.kind == "caption"]
    assert ds.record_index("train").select(["caption"], structured=True).tolist() == sorted(set(want) & set(caption))


def test_an_old_dataset_gets_its_index_built_once(dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEPIT_HOME", str(tmp_path / "home"))
    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    for f in (old / "records").glob("*.index"):
        shutil.rmtree(f)
    new, built = InstructionDataset(dataset).record_index("train"), InstructionDataset(old).record_index("train")
    assert all(np.array_equal(new.col[k], built.col[k]) for k in COLUMNS) and new.tasks == built.tasks
    assert built.read(3) == new.read(3)
    assert list((tmp_path / "home" / "record-index").glob("*/records/train.index/meta.json"))  # kept for next time


def test_a_damaged_index_is_a_one_line_error(dataset, tmp_path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "records" / "train.index" / "task.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match=r"task\.npy.*unreadable record index"):
        InstructionDataset(bad).record_index("train")
    offsets = np.array(RecordIndex.open(dataset, "train").col["offset"])
    np.save(bad / "records" / "train.index" / "task.npy", np.array(RecordIndex.open(dataset, "train").col["task"]))
    offsets[0] += 3  # points into the middle of a line
    np.save(bad / "records" / "train.index" / "offset.npy", offsets)
    with pytest.raises(InputError, match="does not match the shard"):
        InstructionDataset(bad).record_index("train").read(0)


def test_epoch_order_is_a_seeded_permutation_grouped_by_length() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 500, size=1000)
    a = epoch_batches(lengths, 8, seed=1, epoch=0)
    batches = [a[k] for k in range(len(a))]
    assert len(a) == 125 and all(len(b) == 8 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(1000))  # each item once
    assert [a[k] for k in range(3)] == [epoch_batches(lengths, 8, seed=1, epoch=0)[k] for k in range(3)]
    assert [a[k] for k in range(3)] != [epoch_batches(lengths, 8, seed=1, epoch=1)[k] for k in range(3)]
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    plain = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=False)
    assert spread < 0.25 * np.mean([np.ptp(lengths[plain[k]]) for k in range(len(plain))])  # similar lengths
    partial = epoch_batches(lengths[:20], 8, seed=0, epoch=0)
    assert len(partial) == 2 and sum(len(partial[k]) for k in range(2)) == 16  # the partial last batch goes
    assert [len(epoch_batches(lengths[:5], 8, seed=0, epoch=0)[0])] == [5]  # fewer than a batch: one batch


def test_epoch_order_over_several_windows_holds_one() -> None:
    """Global batch 2: blocks of 512 items, windows of 8,192; 20,001 items → 3 windows, the last batch dropped."""
    lengths = np.random.default_rng(1).integers(10, 500, size=20_001)
    order = epoch_batches(lengths, 2, seed=3, epoch=0)
    assert len(order) == 10_000
    seen = [i for k in range(len(order)) for i in order[k]]
    assert len(seen) == len(set(seen)) == 20_000 and set(seen) <= set(range(20_001))
    assert len(order._held[1]) <= 8_192  # only the current window's order is held
    first = [order[k] for k in range(0, 10_000, 997)]
    again = epoch_batches(lengths, 2, seed=3, epoch=0)
    assert [again[k] for k in range(0, 10_000, 997)] == first  # any batch, in any order, is the same
    with pytest.raises(IndexError):
        order[10_000]


def test_index_counts_match_the_manifest(dataset) -> None:
    idx = RecordIndex.open(dataset, "train")
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert len(idx) == manifest["counts"]["records"]["train"]
