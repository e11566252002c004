"""scripts/gpu_check.sh without a GPU: it parses, every option it passes exists, the GPU tests it runs are
marked, the paper shapes it benchmarks are the published architectures, and (slow) its plumbing runs end to end in
smoke mode (benchmarks as meta-device dry runs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(REPO))  # the repo root: `benchmarks` is not installed

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")


def logical_lines(text: str) -> list[str]:
    """The script's lines with backslash continuations joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def options_of(command: str) -> set[str]:
    """The ``--long`` options on the script's lines that run ``command``."""
    lines = [x for x in logical_lines(SCRIPT.read_text()) if command in x and not x.lstrip().startswith("#")]
    assert lines, f"the script never runs {command!r}"
    return {o for line in lines for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", line.split(command, 1)[1])}


def help_text(*module_args: str) -> str:
    r = subprocess.run([sys.executable, "-m", *module_args, "--help"], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}, check=True)
    return r.stdout


def test_script_parses() -> None:
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_benchmark_options_the_script_passes_exist() -> None:
    runner = options_of("-m benchmarks tokens")
    assert {"--device", "--peak-tflops", "--shapes", "--results-dir"} <= runner
    runner_help = help_text("benchmarks", "tokens")
    assert all(o in runner_help for o in runner), runner - {o for o in runner if o in runner_help}
    assert re.search(r"--shapes \{default,paper\}", runner_help)
    single = options_of("-m benchmarks.bench_tokens")  # the smoke run's dry runs
    single_help = help_text("benchmarks.bench_tokens")
    assert {"--shapes", "--dry-run"} <= single and all(o in single_help for o in single)


def test_pytest_part_selects_registered_gpu_tests(pytestconfig) -> None:
    line = next(x for x in logical_lines(SCRIPT.read_text()) if "-m pytest" in x)
    assert "-m gpu" in line and "--junitxml" in line
    assert any(m.startswith("gpu:") for m in pytestconfig.getini("markers"))  # --strict-markers would refuse it
    # the script runs the test files that grep finds marked: there must be one, holding the GPU tests
    pattern = re.search(r"grep -lE '([^']+)' tests/test_\*\.py", SCRIPT.read_text()).group(1)
    marked = [p.name for p in sorted((REPO / "tests").glob("test_*.py")) if re.search(pattern, p.read_text(), re.M)]
    assert marked == ["test_gpu.py"]


def test_paper_shapes_are_the_published_architectures() -> None:
    """ESM-2 650M and TinyLlama-1.1B with random weights, built on the meta device (no memory, no download)."""
    from benchmarks.bench_tokens import FlopCounter, random_model

    model = random_model("paper", device="meta")
    esm, llm = model.encoder.esm, model.llm
    ec, lc = esm.config, llm.config
    assert (ec.num_hidden_layers, ec.hidden_size, ec.num_attention_heads, ec.intermediate_size) == (33, 1280, 20, 5120)
    assert (lc.num_hidden_layers, lc.hidden_size, lc.num_attention_heads, lc.num_key_value_heads,
            lc.intermediate_size) == (22, 2048, 32, 4, 5632)
    assert not lc.tie_word_embeddings and ec.hidden_dropout_prob == ec.attention_probs_dropout_prob == 0.0
    # each ESM block: q, k, v, out (H² + H each), two LayerNorms, FFN H→4H→H
    h = 1280
    block = 4 * (h * h + h) + 2 * 2 * h + (h * 4 * h + 4 * h) + (4 * h * h + h)
    assert all(sum(p.numel() for p in b.parameters()) == block for b in esm.encoder.layer)
    # TinyLlama-1.1B-Chat has 1,100,048,384 parameters at its 32,000-token vocabulary (untied)
    vocab = lc.vocab_size
    assert vocab >= 32_003 and len(model.processor.llm_tokenizer) <= vocab
    assert sum(p.numel() for p in llm.parameters()) == 1_100_048_384 + (vocab - 32_000) * 2048 * 2
    fc = FlopCounter.of(model)
    assert fc.lm_head == vocab * 2048 and fc.llm_body == sum(p.numel() for p in llm.parameters()) - 2 * vocab * 2048


def test_flop_counter_counts_blocks_attention_and_answer_logits() -> None:
    from benchmarks import transformer_train_flops
    from benchmarks.bench_tokens import FlopCounter
    from sepit.model import build_model, tiny

    model = build_model(tiny())  # tied embeddings: the LM head is the embedding matrix, counted once
    fc = FlopCounter.of(model)
    emb = model.llm.get_input_embeddings().weight
    assert model.llm.get_output_embeddings().weight is emb
    assert fc.llm_body == sum(p.numel() for p in model.llm.parameters()) - emb.numel() and fc.lm_head == emb.numel()
    got = fc.step([30, 20], [12], answer_tokens=5)
    want = (transformer_train_flops(fc.llm_body, fc.llm_layers, fc.llm_hidden, 30, 30)
            + transformer_train_flops(fc.llm_body, fc.llm_layers, fc.llm_hidden, 20, 20)
            + transformer_train_flops(fc.esm_body, fc.esm_layers, fc.esm_hidden, 12, 12) + 6.0 * fc.lm_head * 5)
    assert got == pytest.approx(want)


def test_dry_run_sizes_both_schemes_without_steps() -> None:
    from benchmarks import TEST_TABLE, crop, real_proteins
    from benchmarks.bench_tokens import run

    proteins = [crop(p, 60) for p in real_proteins(TEST_TABLE, with_structures=False) if len(p.sequence) >= 60]
    res = run(shapes="default", dry_run=True, batches=2, proteins=proteins)
    assert res.ratio is None and res.params["device"] == "meta" and res.params["weights"].startswith("random")
    assert res.params["lengths"] == [60] * 4
    (ref, sep) = res.rows
    # each of a batch's 2 rows: its 60 protein slots become 1024 in the reference scheme; the useful work is the same
    assert ref[1] - sep[1] == 2 * (1024 - 60) and ref[2] == sep[2] and ref[3] > 0


@pytest.mark.slow
def test_smoke_run_writes_log_and_summary(tmp_path) -> None:
    """GPU_CHECK_SMOKE=1: no CUDA needed, the benchmark parts are dry runs; the parts, timings and files as on a GPU."""
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(SCRIPT), "env", "default"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[:2] for line in summary] == [["env", "ok"], ["default", "ok"]]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "torch sees NO CUDA device (smoke run: going on)" in log and "stage-1 step sizes (dry run" in log
    r = subprocess.run(["bash", str(SCRIPT), "nope"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown part" in r.stderr
