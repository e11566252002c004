"""Smoke tests of the benchmarks' code paths with the tiny model and tiny sizes (correctness, not timing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: `benchmarks` is not installed

import benchmarks
from benchmarks import (
    TEST_TABLE,
    PeakMemory,
    Result,
    interleave,
    machine_info,
    machine_slug,
    mfu,
    quantile_sample,
    real_proteins,
    transformer_train_flops,
)


@pytest.fixture(scope="module")
def tiny_model():
    from sepit.model import build_model, tiny

    return build_model(tiny())


@pytest.fixture(scope="module")
def short_proteins():
    """Real Swiss-Prot proteins of the committed test sample, cut to 40 residues (tiny model, fast steps)."""
    return [benchmarks.crop(p, 40) for p in real_proteins(TEST_TABLE)]


def test_real_proteins_and_quantile_sample():
    table = real_proteins(TEST_TABLE)
    assert len(table) > 10 and all(p.sequence.isalpha() for p in table)
    assert any(p.go.get("MF") for p in table), "GO names should be filled from the sample's go_terms file"
    sample = quantile_sample(table, 4)
    lengths = [len(p.sequence) for p in sample]
    assert lengths == sorted(lengths) and len(sample) == 4
    assert min(len(p.sequence) for p in table) <= lengths[0] and lengths[-1] <= max(len(p.sequence) for p in table)
    assert benchmarks.caption(sample[0]).endswith(".")


def test_interleave_alternates_and_measures():
    calls = []
    t = interleave({"a": lambda r: calls.append(("a", r)), "b": lambda r: calls.append(("b", r))}, 3, warmup=1)
    assert calls == [("a", -1), ("b", -1), ("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert len(t["a"].seconds) == 3 and all(s >= 0 for s in t["a"].seconds)


def test_peak_memory_sees_an_allocation():
    with PeakMemory("cpu", interval=0.001) as pm:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x += 1
        del x
    assert pm.delta_mb > 32


def test_flops_and_mfu():
    assert transformer_train_flops(100, 2, 8, 16, 10) == 10 * (600 + 12 * 2 * 8 * 16)
    assert mfu(2e12, 2.0, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mfu(1.0, 0.0, 1.0)


def test_result_table_and_machine():
    r = Result("x", "X", ["a", "b"], [["row", 1.5]], ratio=3.0, target=2.5, notes=["n"])
    text = r.table()
    assert "| row | 1.50 |" in text and "ratio 3.00×" in text and "met" in text and r.met is True
    info = machine_info()
    assert info["cores"] >= 1 and info["torch"] == torch.__version__
    assert machine_slug({"cpu": "Intel(R) Xeon(R) Processor", "cores": 2}) == "intel-xeon-2c"


def test_tokens_reference_scheme(tiny_model, short_proteins):
    from benchmarks.bench_tokens import conversations, reference_batch, run

    pad_to = 48
    group = short_proteins[:2]
    convs = conversations(group)
    sep = tiny_model.processor(convs, [[p.sequence] for p in group])
    ref = reference_batch(tiny_model, convs, [p.sequence for p in group], pad_to)
    slot = tiny_model.processor.protein_token_id
    assert int((ref["input_ids"] == slot).sum()) == 2 * pad_to
    assert int((sep["input_ids"] == slot).sum()) == sum(len(p.sequence) for p in group)
    assert ref["protein_input_ids"].shape == (2, pad_to)
    # the labels (the answer) are the same tokens in both schemes
    assert torch.equal(ref["labels"][ref["labels"] != -100], sep["labels"][sep["labels"] != -100])
    res = run(tiny_model, batches=2, batch_size=2, pad_to=pad_to, proteins=short_proteins, warmup=False)
    assert res.ratio > 0 and len(res.rows) == 2 and res.rows[0][1] > res.rows[1][1]  # more LLM positions padded
    with pytest.raises(ValueError, match="pad_to"):
        reference_batch(tiny_model, convs, ["M" * 60, "M" * 5], pad_to)


def test_stage2_cache_benchmark_reports_its_rows(tiny_model, short_proteins):
    """The benchmark runs and reports; the cache's exactness itself is tested once, in
    tests/test_train.py::test_stage2_encoder_cache_is_exact."""
    from benchmarks.bench_stage2_cache import run
    from sepit.model import build_model, tiny

    res = run(build_model(tiny()), batch_size=1, rounds=1, proteins=short_proteins, warmup=False)
    assert float(res.summary["loss with cache − without (exactness)"]) >= 0.0
    assert res.ratio > 0 and [r[0] for r in res.rows] == ["recompute encoder", "sepit (encoder cache)"]


def test_inference_benchmark_reports_its_rows(tiny_model, short_proteins):
    """The benchmark runs and counts its answers; batched = one at a time is tested once, in tests/test_generation.py
    (test_batched_fp32_equals_one_at_a_time_and_transformers_generate)."""
    from benchmarks.bench_inference import run

    res = run(tiny_model, n_questions=4, batch_size=2, max_new_tokens=3, proteins=short_proteins, warmup=False)
    assert res.summary["identical answers batched vs one at a time"].endswith("/4")
    assert res.ratio > 0 and res.target == 4.0


def test_yesno_benchmark_reports_its_rows(tiny_model, short_proteins):
    """The benchmark runs and compares P(yes); shared prefixes = each prompt alone is tested once, in
    tests/test_model_fusion.py (test_yes_no_pairs_share_their_prefix)."""
    from benchmarks.bench_yesno import run

    res = run(tiny_model, n_proteins=2, batch_size=4, proteins=short_proteins, warmup=False)
    assert float(res.summary["max |P(yes) batched − P(yes) alone|"]) < 1e-4
    assert res.ratio > 0 and [r[0] for r in res.rows] == ["each prompt alone", "sepit batches",
                                                          "sepit batches + prefix store"]
    assert res.summary["beginnings reused / run"] == "2 / 2"  # the questions without context found theirs


def test_records_benchmark_synthesises_streams_and_reports():
    """Two small sizes, each measured in a fresh process: both loaders reported (their memory is the benchmark's to
    measure)."""
    from benchmarks.bench_records import run

    res = run(sizes=(2_000, 6_000))
    assert [(r[0], r[1]) for r in res.rows] == [("sepit (streamed)", "2,000"), ("up front (reference)", "2,000"),
                                                ("sepit (streamed)", "6,000")]
    assert all(r[6] > 0 for r in res.rows) and res.ratio > 0


def test_structures_with_and_without_biopython(monkeypatch):
    from benchmarks import bench_structures as bs

    files = bs.structure_files()
    names = {p.name.lower() for p in files}
    assert {"1crn.cif.gz", "1ppe_l_u.pdb"} <= names
    assert len(names) == len(files), "identical files must be counted once"
    res = bs.run(rounds=1, files=files[:3])
    if bs.biopython_available():
        assert res.ratio > 0 and len(res.rows) == 2
        assert bs.biopython_traces(files[0]) > 0
    else:
        assert "NOT installed" in res.notes[0]
    monkeypatch.setattr(bs, "biopython_available", lambda: False)
    res = bs.run(rounds=1, files=files[:2])
    assert res.ratio is None and len(res.rows) == 1 and "NOT installed" in res.notes[0]


def test_scaling_chunked_structure_equals_sepit(tiny_model, tmp_path):
    from benchmarks.bench_scaling import chunked_structure, inputs, run

    enc = tiny_model.encoder
    _ids, _attn, xyz, on, _off = inputs(20, "MKTAYIAKQR", "cpu")
    on[0, 5] = False  # a residue without structure
    bias, node, _ = enc.structure(xyz, on)
    for chunk in (1, 7, 64):
        b2, n2 = chunked_structure(enc.structure, xyz, on, chunk)
        assert torch.allclose(bias, b2, atol=1e-6) and torch.allclose(node, n2, atol=1e-6)
    # gradients flow through the checkpointed chunks like through the module
    xyz.requires_grad_(True)
    chunked_structure(enc.structure, xyz, on, 7)[0].sum().backward()
    assert xyz.grad is not None and torch.isfinite(xyz.grad).all()
    png = tmp_path / "s.png"
    res = run(enc, lengths=[16, 24], rounds=1, train=True, chunk=8, plot=png, sequence="MKTAYIAKQR")
    assert float(res.summary["chunked vs sepit, max |Δ penultimate|"]) < 1e-5
    assert len(res.rows) == 6 and png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert any(k.startswith("ESTIMATE ESM-2 650M") for k in res.summary)


def test_runner_writes_json(tmp_path, capsys):
    from benchmarks.__main__ import main

    assert main(["structures", "--quick", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Parsing structure files" in out
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["quick"] is True and data["machine"]["cpu"] and "structures" in data["results"]
    assert data["results"]["structures"]["rows"]


def test_runner_rejects_unknown_names():
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["nope"])
    assert e.value.code == 2
