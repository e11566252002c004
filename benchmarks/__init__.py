"""sepit benchmarks: each one runs a reference approach and sepit's side by side in one process, interleaved and
repeated, and reports the ratio (medians) with absolute figures and peak memory for context.

    python -m benchmarks                      # the default set (2-core CPU: under 15 minutes), writes results/
    python -m benchmarks tokens inference     # some of them
    python -m benchmarks --quick              # a much shorter run (fewer repeats and sizes)

Each ``bench_*.py`` also runs on its own (``python -m benchmarks.bench_tokens``) and exposes
``run(..., quick=False) -> Result`` for the runner and the smoke test (tests/test_benchmarks.py). This module holds
what they share: the interleaved timer, peak-memory measurement, machine description, result tables, the real
Swiss-Prot proteins they sample, and the FLOP/MFU arithmetic.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as _dt
import os
import platform
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
DEFAULT_DATA = REPO / "src" / "sepit" / "resources" / "default_data"
TEST_TABLE = REPO / "tests" / "data" / "uniprot" / "sprot2014_sample.tsv.xz"

#: name → module of every benchmark, in the order the runner runs them. ``data`` belongs to bench_data.py (a script
#: with its own table) and is run as a subprocess when that file exists.
BENCHMARKS: dict[str, str] = {
    "tokens": "benchmarks.bench_tokens",
    "stage2_cache": "benchmarks.bench_stage2_cache",
    "inference": "benchmarks.bench_inference",
    "yesno": "benchmarks.bench_yesno",
    "structures": "benchmarks.bench_structures",
    "scaling": "benchmarks.bench_scaling",
    "data": "benchmarks/bench_data.py",
    "train_precision": "benchmarks.bench_train_precision",
    "records": "benchmarks.bench_records",
}
#: Benchmarks that run only when named (``python -m benchmarks train_precision``), not in the default set.
OPT_IN: tuple[str, ...] = ("train_precision", "records")


# ---- results -------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    """One benchmark's outcome: a table (``columns`` × ``rows``), the headline ``ratio`` (reference time ÷ sepit
    time, or the stated quantity), an optional ``target`` it should reach, free-form ``summary`` figures, ``notes``
    (how it was measured, caveats) and ``files`` it wrote (plots)."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    ratio: float | None = None
    target: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    text: str = ""  # preformatted output (e.g. another script's own table), printed as a code block

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["met"] = self.met
        return d

    def table(self) -> str:
        """The result as a Markdown table plus its headline and notes (what the runner prints)."""
        lines = [f"### {self.title}", ""]
        if self.columns:
            lines.append("| " + " | ".join(self.columns) + " |")
            lines.append("|" + "|".join("---" for _ in self.columns) + "|")
            for row in self.rows:
                lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
            lines.append("")
        if self.text:
            lines += ["```", self.text.strip("\n"), "```", ""]
        if self.ratio is not None:
            head = f"**ratio {self.ratio:.2f}×**"
            if self.target is not None:
                head += f" (target ≥ {self.target:g}×: {'met' if self.met else 'NOT met'})"
            lines.append(head)
        for k, v in self.summary.items():
            lines.append(f"- {k}: {fmt(v)}")
        for n in self.notes:
            lines.append(f"- {n}")
        return "\n".join(lines) + "\n"


def fmt(v: Any) -> str:
    """Numbers with sensible precision for tables."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 100:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.2f}"
        return f"{v:.2e}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# ---- device and memory --------------------------------------------------------------------------------------------
def pick_device(name: str | None = None):
    """``cuda`` when available (or when asked), else ``cpu``."""
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: psutil (slower, still fine at this sampling rate)
        import psutil

        return psutil.Process().memory_info().rss


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS so an RSS rise measures this region, not what an earlier one left."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a region: on CUDA ``torch.cuda.max_memory_allocated`` above the start; on CPU the RSS sampled
    every ``interval`` s by a thread, above the RSS at the start (after returning freed heap pages to the OS).

    >>> with PeakMemory(device) as pm: work()
    >>> pm.delta_mb, pm.peak_mb
    """

    def __init__(self, device: Any = "cpu", interval: float = 0.002) -> None:
        self.cuda = str(device).startswith("cuda")
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = self.peak = torch.cuda.memory_allocated()
            return self
        import gc

        gc.collect()
        _malloc_trim()
        self.start = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak = max(self.peak, torch.cuda.max_memory_allocated())
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def sync(device: Any) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


@dataclass
class Timing:
    """Wall seconds and peak-memory rise (MiB) of every timed call of one approach, plus what each call returned."""

    seconds: list[float] = field(default_factory=list)
    mem_mb: list[float] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def total(self) -> float:
        return sum(self.seconds)

    @property
    def peak_mb(self) -> float:
        return max(self.mem_mb) if self.mem_mb else 0.0


def timed(fn: Callable[[], Any], device: Any = "cpu", memory: bool = True) -> tuple[float, float, Any]:
    """Run ``fn()`` once → (seconds, peak memory rise MiB, its return value)."""
    pm = PeakMemory(device) if memory else None
    if pm is not None:
        pm.__enter__()
    sync(device)
    t0 = time.perf_counter()
    try:
        value = fn()
        sync(device)
        dt = time.perf_counter() - t0
    finally:
        if pm is not None:
            pm.__exit__(None, None, None)
    return dt, (pm.delta_mb if pm is not None else 0.0), value


def interleave(approaches: dict[str, Callable[[int], Any]], rounds: int, *, warmup: int = 1, device: Any = "cpu",
               memory: bool = True, progress: str = "") -> dict[str, Timing]:
    """Call each approach ``fn(round)`` once per round, alternating which goes first (ABAB → BABA), after
    ``warmup`` untimed rounds. Machine noise then hits every approach alike; compare medians."""
    names = list(approaches)
    out = {n: Timing() for n in names}
    for r in range(warmup):
        for n in names:
            approaches[n](-1 - r)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            dt, mem, val = timed(lambda n=n, r=r: approaches[n](r), device, memory)
            out[n].seconds.append(dt)
            out[n].mem_mb.append(mem)
            out[n].values.append(val)
            if progress:
                say(f"{progress}: round {r + 1}/{rounds} {n}: {dt:.2f} s, +{mem:.0f} MiB")
    return out


def say(msg: str) -> None:
    """Progress lines on stderr (the tables go to stdout)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def model_or_default(model: Any, name: str) -> Any:
    """``model``, or the default model with its installed weights when it is None (benchmark ``name`` says so)."""
    if model is None:
        from sepit.model import build_model, default

        say(f"{name}: loading the default model")
        model = build_model(default())
    return model


# ---- machine --------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, torch version and threads, GPU (if any), load average at the start."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "platform": platform.platform(), "gpu": None,
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def machine_slug(info: dict[str, Any]) -> str:
    """A file-name-safe machine name: ``<gpu or cpu model>-<cores>c``."""
    name = info.get("gpu") or info.get("cpu") or "machine"
    name = re.sub(r"\((r|tm)\)|\bprocessor\b|\bcpu\b|@.*", "", name, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "machine"
    return f"{slug}-{info.get('cores', 0)}c"


def today() -> str:
    return _dt.date.today().isoformat()


# ---- real proteins ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealProtein:
    """A Swiss-Prot 2014 protein from the vendored table: sequence, GO term names per aspect, Cα trace if the
    vendored structure store has one."""

    accession: str
    sequence: str
    go: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    coords: Any = field(default=None, compare=False)
    coord_mask: Any = field(default=None, compare=False)

    @property
    def has_structure(self) -> bool:
        return self.coords is not None


def real_proteins(table: str | Path | None = None, *, with_structures: bool = True) -> list[RealProtein]:
    """Real proteins of the vendored 2014 Swiss-Prot table (src/sepit/resources/default_data: 3,047 rows of the
    shared 50k table; tests/data/uniprot's small sample when that is absent), with GO names and vendored Cα traces.
    """
    from sepit.data.readers import read_sprot2014

    if table is None:
        table = DEFAULT_DATA / "proteins.tsv.xz" if (DEFAULT_DATA / "proteins.tsv.xz").is_file() else TEST_TABLE
    table = Path(table)
    go_file = next((table.parent / n for n in ("go_terms.tsv.xz", "go_terms_sample.tsv.xz")
                    if (table.parent / n).is_file()), None)
    store = None
    if with_structures and (table.parent / "structures.npz").is_file():
        from sepit.data.structures import StructureStore

        store = StructureStore.load(table.parent / "structures.npz")
    out = []
    for e in read_sprot2014(table, go_terms=go_file):
        names: dict[str, list[str]] = {"MF": [], "BP": [], "CC": []}
        for t in e.go:
            if t.name:
                names[t.aspect].append(t.name)
        coords = mask = None
        got = store.get(e.accession) if store is not None else None
        if got is not None and len(got[0]) == len(e.sequence):
            coords, mask = got
        out.append(RealProtein(e.accession, e.sequence, {k: tuple(v) for k, v in names.items()}, coords, mask))
    return out


def quantile_sample(proteins: Sequence[RealProtein], n: int, *, max_len: int = 1022,
                    key: Callable[[RealProtein], bool] | None = None) -> list[RealProtein]:
    """``n`` proteins at the midpoints of ``n`` equal quantile bins of length (cropped at ``max_len``): a small
    sample whose length distribution (mean included) follows the whole table's. Sorted by length."""
    pool = sorted((p for p in proteins if key is None or key(p)), key=lambda p: min(len(p.sequence), max_len))
    if not pool:
        raise ValueError("no proteins to sample from")
    return [pool[min(len(pool) - 1, int((k + 0.5) / n * len(pool)))] for k in range(n)]


def crop(p: RealProtein, max_len: int) -> RealProtein:
    """The protein cut to its first ``max_len`` residues (coordinates too)."""
    if len(p.sequence) <= max_len:
        return p
    return dataclasses.replace(p, sequence=p.sequence[:max_len],
                               coords=None if p.coords is None else p.coords[:max_len],
                               coord_mask=None if p.coord_mask is None else p.coord_mask[:max_len])


def caption(p: RealProtein) -> str:
    """A stage-1 style caption from the protein's GO annotations (the research code captions with UniProt's
    function text; GO names are what the vendored table has)."""
    parts = []
    for aspect, lead in (("MF", "It has"), ("BP", "It takes part in"), ("CC", "It is found in")):
        names = list(p.go.get(aspect, ()))[:4]
        if names:
            tail = " activity" if aspect == "MF" else ""
            parts.append(f"{lead} {', '.join(names)}{tail}.")
    return " ".join(parts) or "A protein of unknown function."


def mean_length(proteins: Sequence[Any], max_len: int = 1022) -> float:
    return statistics.mean(min(len(p.sequence), max_len) for p in proteins)


# ---- FLOPs and MFU ------------------------------------------------------------------------------------------------
def transformer_train_flops(num_params: int, num_layers: int, hidden: int, seq_len: int, tokens: int) -> float:
    """Approximate training FLOPs (forward + backward) of a dense transformer for ``tokens`` tokens in sequences of
    ``seq_len``: 6·N per token for the weights plus 12·layers·hidden·seq_len per token for attention
    (Chowdhery et al. 2022, PaLM, appendix B)."""
    return float(tokens) * (6.0 * num_params + 12.0 * num_layers * hidden * seq_len)


def mfu(flops: float, seconds: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s ÷ the hardware's peak (``peak_tflops`` × 1e12, e.g. 989 for an
    H100 SXM in bf16 dense)."""
    if seconds <= 0 or peak_tflops <= 0:
        raise ValueError("seconds and peak_tflops must be > 0")
    return flops / seconds / (peak_tflops * 1e12)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)
