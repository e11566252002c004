#!/usr/bin/env bash
# GPU check of sepit on one CUDA GPU (an H100 or H200), offline, in under 8 minutes (issue #19):
#   1. env      nvidia-smi, Python, torch (CUDA, NCCL, bf16), transformers; sepit importable from src/
#   2. tests    pytest -m gpu (tests/test_gpu.py): bf16 training of stages 0, 1, 2 (tiny config and the default
#               model's architectures with random weights), DDP and FSDP on one GPU (a one-process NCCL group),
#               collectives' tensors on the GPU, generation on CUDA
#   3. default  python -m benchmarks tokens --device cuda --peak-tflops 989 --shapes default   (MFU)
#   4. paper    the same with --shapes paper: ESM-2 650M + TinyLlama-1.1B architectures, random weights
# Each part has its own time limit inside one overall budget (GPU_CHECK_BUDGET_S, default 460 s); a part that
# fails or runs out of time is reported and the next one still runs; the exit code is 1 if any part failed.
#
# What it needs on the GPU machine (the device image 'cuda' has all of it; nothing is fetched, no network):
#   python3 with a CUDA build of torch (NCCL included), transformers >= 5.24 (carried, see below), tokenizers, safetensors,
#   numpy, pyyaml, tqdm, jinja2, psutil and pytest (seen there: torch 2.11.0+cu130, transformers 5.17.0, Python 3.12).
#   sepit runs from this checkout (PYTHONPATH=src), not installed; its dependencies gguf and gemmi are not in that
#   image and are not needed here (only model conversion and structure-file parsing import them). No weights:
#   the default models (~630 MB) cannot travel, so every model here has random weights.
#   Carried: .gpu_assets/ (git-ignored, ~20 MB), made on the development machine by
#       bash scripts/gpu_check.sh --prepare
#   It holds (a) wheels of the transformers this checkout is developed and tested with and of what that version
#   imports and the image lacks or may hold older (huggingface_hub 2.x, httpx2, httpcore2, truststore, kernels,
#   tomlkit, anyio, idna, typing_extensions), installed there with pip --no-index into a temporary folder ahead of
#   the image's own (if they do not import, the run goes on with the image's, and says so): the image's
#   transformers 5.17 lacks the `cache` argument and output that sepit's generation uses (5.25 here: with 5.17,
#   tests/test_generation.py fails on a CPU too); and (b) the installed default LLM's
#   tokenizer (SmolLM2's BPE, ~3.5 MB, no weights), so that the tokens benchmark tokenizes text as the default
#   model does. Without .gpu_assets the image's own transformers runs and the benchmark uses a byte-level
#   tokenizer (about 4x the text tokens; its notes say so).
#
# The one device-tool call (15 minutes of device time per session; the machine's start takes a minute or two):
#   run(command="bash scripts/gpu_check.sh", carry=[".gpu_assets"], timeout_s=600)
# Results come back under files_at: gpu_check.log (everything printed), summary.txt (per part: status, seconds),
# pytest-gpu.xml, tokens-default/*.json and tokens-paper/*.json (the benchmark runner's JSON, machine included).
# To rerun only some parts at once on the still-warm machine: bash scripts/gpu_check.sh tests paper
#
# Usage: bash scripts/gpu_check.sh [--prepare] [env] [tests] [default] [paper]   (no part named: all four)
# Environment: OUT (results folder; default ./gpu_check_out), PYTHON (default python3), PEAK_TFLOPS (default 989:
#   H100/H200 SXM dense bf16), GPU_CHECK_BUDGET_S (default 460), GPU_CHECK_SMOKE=1 (no GPU: the benchmark parts
#   become meta-device dry runs and no CUDA is required; checks this script's plumbing on any machine).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ASSETS="$ROOT/.gpu_assets"
LLM_NAME=smollm2_135m_instruct

#: Wheels carried for the GPU machine's image (Python 3.12; see the header), at this checkout's .venv versions.
CARRIED_WHEELS=(transformers huggingface_hub httpx2 httpcore2 truststore kernels tomlkit anyio idna typing_extensions)

if [[ "${1:-}" == "--prepare" ]]; then
  # Development machine: .gpu_assets/ for `carry`: the wheels above and the default LLM's tokenizer files.
  PY_PREP="${PYTHON:-$ROOT/.venv/bin/python}"
  rm -rf "$ASSETS"
  mkdir -p "$ASSETS/wheels" "$ASSETS/$LLM_NAME"
  mapfile -t pins < <("$PY_PREP" -c "import importlib.metadata as m, sys
for n in sys.argv[1:]: print(f'{n}=={m.version(n)}')" "${CARRIED_WHEELS[@]}")
  "$PY_PREP" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$ASSETS/wheels" "${pins[@]}"
  src=$(PYTHONPATH="$ROOT/src" "$PY_PREP" -c "from sepit.assets import model_path; print(model_path('$LLM_NAME'))")
  find "$src" -maxdepth 1 -type f ! -name '*.safetensors' ! -name '*.bin' ! -name '*.gguf' \
    -exec cp {} "$ASSETS/$LLM_NAME/" \;
  ls -l "$ASSETS/wheels" "$ASSETS/$LLM_NAME"
  echo "[gpu_check] $ASSETS: $(du -sh "$ASSETS" | cut -f1); carry it: run(..., carry=[\".gpu_assets\"])"
  exit 0
fi

OUT_DIR="${OUT:-$ROOT/gpu_check_out}"
PY="${PYTHON:-python3}"
PEAK="${PEAK_TFLOPS:-989}"
BUDGET="${GPU_CHECK_BUDGET_S:-460}"
SMOKE="${GPU_CHECK_SMOKE:-0}"
PARTS=("$@")
[[ ${#PARTS[@]} -gt 0 ]] || PARTS=(env tests default paper)
for p in "${PARTS[@]}"; do
  case "$p" in env|tests|default|paper) ;; *) echo "unknown part '$p' (env, tests, default, paper)" >&2; exit 2;; esac
done
mkdir -p "$OUT_DIR"
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 SEPIT_NO_PROGRESS=1 TOKENIZERS_PARALLELISM=false
SITE=""

# The carried wheels ahead of the image's own packages, for this run only (a smoke run keeps its own: the wheels
# are for Python 3.12). Sets SITE and PYTHONPATH.
use_carried_wheels() {
  [[ $SMOKE != 1 ]] && compgen -G "$ASSETS/wheels/*.whl" >/dev/null || return 0
  SITE=$(mktemp -d)
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$ASSETS"/wheels/*.whl \
     && PYTHONPATH="$SITE:$PYTHONPATH" "$PY" -c "import transformers, huggingface_hub, sepit.model.generation"; then
    export PYTHONPATH="$SITE:$PYTHONPATH"
  else
    echo "[gpu_check] WARNING: the carried wheels did not install or import: going on with the image's packages"
    SITE=""
  fi
}
START=$SECONDS
FAILED=()
SUMMARY="$OUT_DIR/summary.txt"

# run_part NAME LIMIT_S CMD...: CMD under `timeout`, within what is left of the budget; records status and time.
run_part() {
  local name=$1 limit=$2 left rc=0 t0
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  ((limit < left)) || limit=$left
  if ((limit < 15)); then
    echo "[gpu_check] $name: SKIPPED (${left}s of the ${BUDGET}s budget left)"
    printf '%-8s skipped (budget)\n' "$name" >>"$SUMMARY"
    FAILED+=("$name")
    return 0
  fi
  echo "[gpu_check] ==== $name (limit ${limit}s): $*"
  t0=$SECONDS
  # bash -c: a part may be one of the functions below (exported); timeout ends the part's whole process group
  timeout --kill-after=15 "$limit" bash -c '"$@"' _ "$@" || rc=$?
  local took=$((SECONDS - t0)) status=ok
  if ((rc == 124 || rc == 137)); then status="TIMED OUT after ${limit}s"; elif ((rc != 0)); then status="FAILED (exit $rc)"; fi
  [[ $status == ok ]] || FAILED+=("$name")
  echo "[gpu_check] ==== $name: $status in ${took}s (total $((SECONDS - START))s)"
  printf '%-8s %-28s %4ds\n' "$name" "$status" "$took" >>"$SUMMARY"
}

env_info() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv || true
  else
    echo "nvidia-smi: not found"
  fi
  "$PY" - "$SMOKE" <<'EOF'
import platform, sys
import torch, torch.distributed as dist, transformers, tokenizers
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__} (CUDA {torch.version.cuda}); "
      f"transformers {transformers.__version__}; tokenizers {tokenizers.__version__}")
import benchmarks.bench_tokens, sepit.api, sepit.train.loop  # noqa: E401,F401 - sepit and the benchmark import
ok = torch.cuda.is_available()
if ok:
    p = torch.cuda.get_device_properties(0)
    v = torch.cuda.nccl.version() if dist.is_nccl_available() else "none"
    nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    print(f"GPU {p.name}: {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, capability "
          f"{p.major}.{p.minor}; bf16 {torch.cuda.is_bf16_supported()}; NCCL {nccl}; {torch.cuda.device_count()} device(s)")
else:
    print("torch sees NO CUDA device" + (" (smoke run: going on)" if sys.argv[1] == "1" else ""))
sys.exit(0 if ok or sys.argv[1] == "1" else 3)
EOF
}

tokens_bench() {  # tokens_bench SHAPES: the benchmark runner on the GPU, JSON into $OUT_DIR/tokens-SHAPES/
  local shapes=$1 tok=()
  [[ -d "$ASSETS/$LLM_NAME" ]] && tok=(--tokenizer "$ASSETS/$LLM_NAME")
  if [[ $SMOKE == 1 ]]; then
    "$PY" -m benchmarks.bench_tokens --shapes "$shapes" --dry-run "${tok[@]}"
  else
    mkdir -p "$OUT_DIR/tokens-$shapes"
    "$PY" -m benchmarks tokens --device cuda --peak-tflops "$PEAK" --shapes "$shapes" "${tok[@]}" \
      --results-dir "$OUT_DIR/tokens-$shapes"
  fi
}

main() {
  use_carried_wheels
  echo "[gpu_check] $(date -u +%FT%TZ) parts: ${PARTS[*]}; budget ${BUDGET}s; out $OUT_DIR; peak ${PEAK} TFLOP/s;" \
       "$([[ -n ${SITE:-} ]] && echo "carried wheels: $(ls "$SITE" | grep -c dist-info) in $SITE;" || echo "no carried wheels;")" \
       "$([[ -d $ASSETS/$LLM_NAME ]] && echo "tokenizer $ASSETS/$LLM_NAME" || echo "no tokenizer carried: byte-level")"
  : >"$SUMMARY"
  local p gpu_tests
  gpu_tests=$(grep -lE '(^pytestmark.*|@)pytest\.mark\.gpu' tests/test_*.py | tr '\n' ' ' || true)
  for p in "${PARTS[@]}"; do
    case "$p" in
      env) run_part env 60 env_info ;;
      # -o timeout*: with pytest-timeout (in the image), a hung test is stopped with its stack printed, not
      # silently by this part's limit (without the plugin pytest only warns about the two options);
      # $gpu_tests unquoted: the file list splits on purpose
      tests) run_part tests 240 "$PY" -m pytest -m gpu -q -rfEs --durations=15 -p no:cacheprovider \
               -o timeout=100 -o timeout_method=thread --junitxml="$OUT_DIR/pytest-gpu.xml" $gpu_tests ;;
      default) run_part default 80 tokens_bench default ;;
      paper) run_part paper 120 tokens_bench paper ;;
    esac
    # a failed env check means no usable GPU: nothing else can pass
    if [[ $p == env && ${#FAILED[@]} -gt 0 ]]; then echo "[gpu_check] env failed: stopping"; break; fi
  done
  echo "[gpu_check] done in $((SECONDS - START))s; summary:"
  cat "$SUMMARY"
  if ((${#FAILED[@]})); then echo "[gpu_check] FAILED: ${FAILED[*]}"; return 1; fi
  echo "[gpu_check] all parts passed"
}

export -f env_info tokens_bench
export PY PEAK SMOKE OUT_DIR ASSETS LLM_NAME
set -o pipefail
main 2>&1 | tee "$OUT_DIR/gpu_check.log"
