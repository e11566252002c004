#!/usr/bin/env bash
# Build the instruction dataset from the full 2014 Swiss-Prot GO set (516,371 proteins; Debian metastudent-data).
# Usage: bash scripts/build_full_2014.sh [OUT_DIR (default runs/data-full)] [sepit data build options...]
# About 2 h on 2 cores (2 h 05 min, AMD EPYC, 2026-11-29): the split's leak searches (DIAMOND, realigned by MMseqs2
# near the threshold) dominate; docs/benchmarks.md (4a) has the measured figures. Needs ~6 GB of disk for the output.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/data-full}"; shift || true
if ! command -v blastdbcmd >/dev/null || [ ! -d /usr/share/metastudent-data/dataset_201401 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y metastudent-data ncbi-blast+
  elif command -v sudo >/dev/null; then sudo apt-get install -y metastudent-data ncbi-blast+
  else echo "error: install the data first: apt-get install metastudent-data ncbi-blast+" >&2; exit 1; fi
fi
mkdir -p runs
[ -s runs/sprot2014_full.tsv.gz ] || .venv/bin/sepit data import-metastudent -o runs/sprot2014_full.tsv.gz
exec .venv/bin/sepit data build -o "$out" --source runs/sprot2014_full.tsv.gz "$@"
