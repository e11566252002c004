"""Run the benchmarks: one table each on stdout, all results in benchmarks/results/<machine>-<date>.json.

    python -m benchmarks              # the default set: tokens stage2_cache inference yesno structures scaling data
    python -m benchmarks tokens inference         # some of them
    python -m benchmarks --quick                  # shorter: fewer batches, rounds and lengths
    python -m benchmarks --threads 1              # torch threads (1 is steadier on a machine shared with other work)
    python -m benchmarks tokens --peak-tflops 989 # also MFU of stage-1 training against that peak (GPU)
    python -m benchmarks tokens --shapes paper --device cuda --peak-tflops 989  # ESM-2 650M + TinyLlama-1.1B
    python -m benchmarks train_precision --threads 1  # fp32 vs bf16 autocast (and LoRA) training steps (opt-in)

Each benchmark runs sepit's approach and the reference in the same process, alternating, and reports the ratio of
medians (or totals over the same inputs) plus absolute figures and peak memory. A failing benchmark is reported
and the others still run (exit code 1). See docs/benchmarks.md for the latest tables.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import BENCHMARKS, OPT_IN, REPO, RESULTS_DIR, Result, machine_info, machine_slug, say, today


def run_data_script(quick: bool) -> Result:
    """bench_data.py (dataset build speed, another module's script) as a subprocess; its table kept verbatim."""
    script = REPO / BENCHMARKS["data"]
    cmd = [sys.executable, str(script), "--only", "default"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False,
                       env={**os.environ, "SEPIT_NO_PROGRESS": "1"})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    return Result(name="data", title="4a. Data: building the instruction dataset (benchmarks/bench_data.py)",
                  columns=[], rows=[], text=r.stdout, summary={"wall s": wall},
                  notes=[("the 50k shared-table build: `python benchmarks/bench_data.py --only 50k` (needs "
                          "/work/shared/data; not part of the default set)")],
                  params={"command": " ".join(["python", *cmd[1:]])})


def run_one(name: str, args: argparse.Namespace, plot_path: Path | None) -> Result:
    if name == "data":
        return run_data_script(args.quick)
    mod = importlib.import_module(BENCHMARKS[name])
    kw: dict[str, Any] = {"quick": args.quick}
    if name in ("tokens", "stage2_cache", "inference", "yesno", "scaling", "train_precision") and args.device:
        kw["device"] = args.device
    if name == "tokens" and args.peak_tflops:
        kw["peak_tflops"] = args.peak_tflops
    if name == "tokens":
        kw.update(shapes=args.shapes, tokenizer=args.tokenizer)
    if name == "scaling":
        kw["plot"] = plot_path
    return mod.run(**kw)


def available() -> list[str]:
    """Benchmarks whose code is present (``data`` only when bench_data.py exists)."""
    return [n for n, m in BENCHMARKS.items() if not m.endswith(".py") or (REPO / m).is_file()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"benchmarks to run (default: all of {', '.join(n for n in BENCHMARKS if n not in OPT_IN)}; "
                         f"only when named: {', '.join(OPT_IN)})")
    ap.add_argument("--quick", action="store_true", help="a much shorter run")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--peak-tflops", type=float, help="hardware peak TFLOP/s for MFU (tokens benchmark)")
    ap.add_argument("--shapes", choices=("default", "paper"), default="default",
                    help="tokens benchmark: default model, or ESM-2 650M + TinyLlama-1.1B architectures with random "
                         "weights (paper)")
    ap.add_argument("--tokenizer", help="tokens benchmark: LLM tokenizer folder for random-weight models")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON (and PNG) go")
    ap.add_argument("--no-write", action="store_true", help="print the tables only")
    args = ap.parse_args(argv)
    have = available()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    missing = [n for n in args.names if n not in have]
    if missing:
        ap.error(f"{', '.join(missing)}: its script is not in this checkout")
    names = args.names or [n for n in have if n not in OPT_IN]

    os.environ.setdefault("SEPIT_NO_PROGRESS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from sepit.log import setup_logging

    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    # a named subset gets its own file (…-inference.json), so it never replaces the whole set's results of the day
    stem = (f"{machine_slug(info)}-{today()}{'-quick' if args.quick else ''}"
            + (f"-{'-'.join(args.names)}" if args.names else "")
            + (f"-{args.shapes}-shapes" if args.shapes != "default" else ""))  # not over the default shapes' file
    plot = None if args.no_write else args.results_dir / f"{stem}{'' if args.names else '-scaling'}.png"
    say(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
        f"GPU {info['gpu'] or 'none'}; running {', '.join(names)}{' (quick)' if args.quick else ''}")
    results: dict[str, Any] = {}
    failed = []
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        try:
            res = run_one(name, args, plot)
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            failed.append(name)
            say(f"{name} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        finally:
            gc.collect()
        res.seconds = time.perf_counter() - t0
        results[name] = res.to_dict()
        print(res.table() + f"\n_({res.seconds:.0f} s)_\n", flush=True)
    total = time.perf_counter() - t_all
    print(f"all: {total / 60:.1f} min" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if not args.no_write:
        from sepit._io import write_json

        out = args.results_dir / f"{stem}.json"
        write_json(out, {"date": today(), "command": " ".join(["python -m benchmarks", *(argv if argv is not None
                                                                                          else sys.argv[1:])]),
                         "quick": args.quick, "machine": info, "total_seconds": round(total, 1),
                         "results": results})
        say(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
