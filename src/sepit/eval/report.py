"""The evaluation report: ``report.json``, ``report.md`` (tables), ``items.jsonl`` and PNG plots; plus a diff.

``results`` is a plain dict::

    {"meta": {"checkpoint": ..., "dataset": ..., "split": "test", ...},
     "systems": {"model": SUMMARY, "nearest homolog": SUMMARY, "prior": SUMMARY, ...}}

with each SUMMARY from :func:`sepit.eval.breakdown.evaluate_system`. The first system is the main one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from sepit._io import atomic_write, write_json
from sepit.errors import InputError

# (key in an aggregate, column header); "cs." keys read the closed-set sub-dict.
MAIN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("n_text", "open n"), ("bleu1", "BLEU-1"), ("bleu2", "BLEU-2"), ("bleu4", "BLEU-4"), ("rougeL", "ROUGE-L"),
    ("meteor", "METEOR"), ("bertscore_f1", "BERTScore"), ("n_yesno", "y/n n"), ("yesno_acc", "y/n acc"),
    ("cs.accuracy", "LL acc"), ("cs.auroc", "AUROC"), ("cs.ece", "ECE"), ("n_choice", "MC n"),
    ("choice_acc", "MC acc"),
)
HEADLINE: tuple[tuple[str, str], ...] = (("bleu2", "BLEU-2"), ("yesno_acc", "y/n acc"))
METRIC_NOTES = """\
- BLEU-n: NLTK BLEU per sample (no smoothing; weights (1), (½,½), (.33,.33,.33), (¼,¼,¼,¼)), averaged, ×100.
- ROUGE-1/2/L: rouge-score F-measure with Porter stemming, ×100. METEOR: NLTK (WordNet 3.0), ×100.
- BERTScore: F1 without idf or baseline rescaling, ×100, with the encoder named in the header (the demo's MiniLM:
  not on the scale of the paper's PubMedBERT numbers; compare systems within one report).
  BLEU/METEOR tokeniser: see the header.
- y/n acc: the last "yes"/"no" word of the generated answer matches (none → wrong), %.
- LL acc / AUROC / ECE: from P(yes) vs P(no) of the answer's first token (likelihood), ECE top-label, 10 bins.
- MC acc: multiple-choice items (`sepit eval questions`): the option with the highest mean log-probability per
  token as the answer is the reference option, %.
- Identity bins: the test protein's highest sequence identity to any training protein over alignments covering
  ≥80% of it (MMseqs2). Best hit at any coverage: its highest identity to a training protein over hits of any
  length, so a shared domain counts; a protein in a high bin there but a low identity bin has only a partial close
  homolog.
- Baselines: prior = the task's majority training answer (y/n: the training fraction of yes as P(yes)); nearest
  homolog = the answer of the best-ranked training hit that has one; top-k vote = the top-k hits a retrieval model
  sees, y/n by a vote weighted by identity × query coverage (the vote share is its P(yes)), open answers copied
  from the hit with the highest identity × coverage. Without a usable hit they give the prior's answer.
- Intervals: 95% percentile intervals over resamples of the test proteins (each resample draws the proteins with
  replacement; a protein's items count as often as it is drawn). Δ: the system minus the baseline on the same
  resamples (paired); an interval above 0 means better than the baseline on these proteins."""


def _value(agg: Mapping[str, Any] | None, key: str) -> Any:
    if agg is None:
        return None
    if key.startswith("cs."):
        cs = agg.get("closed_set")
        return None if cs is None else cs.get(key[3:])
    return agg.get(key)


def _fmt(v: Any, key: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if key.endswith(("auroc", "ece")):
        return f"{v:.3f}"
    return f"{v:.2f}"


def _fmt_signed(v: float | None, key: str) -> str:
    if v is None:
        return "–"
    return ("+" if v > 0 else "") + _fmt(v, key)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-style markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for terminals."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def _columns(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Main columns that have a value for at least one system."""
    systems = results.get("systems", {})
    return [(k, h) for k, h in MAIN_COLUMNS
            if any(_value(s.get("overall"), k) is not None for s in systems.values())]


def main_table_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the main table: one row per system, overall numbers."""
    cols = _columns(results)
    rows = [[name, *(_fmt(_value(s.get("overall"), k), k) for k, _ in cols)]
            for name, s in results.get("systems", {}).items()]
    return ["system", *(h for _, h in cols)], rows


def format_main_table(results: Mapping[str, Any]) -> str:
    """The main table (model vs baselines) as aligned text."""
    headers, rows = main_table_rows(results)
    return text_table(headers, rows)


def print_main_table(results: Mapping[str, Any], file: IO[str] | None = None) -> None:
    """Print the main table to ``file`` (stdout by default)."""
    print(format_main_table(results), file=file or sys.stdout)


def _group_table(results: Mapping[str, Any], section: str, label: str, *, proteins: bool = False) -> str:
    """Rows = groups of ``section``; columns = n (with ``proteins``: proteins, items and the share of items), then
    each system's headline metrics."""
    systems = results.get("systems", {})
    groups: list[str] = []
    for s in systems.values():
        for g in s.get(section, {}):
            if g not in groups:
                groups.append(g)
    heads = [(k, h) for k, h in HEADLINE
             if any(_value(a, k) is not None for s in systems.values() for a in s.get(section, {}).values())]
    counts = ["proteins", "items", "% of items"] if proteins else ["n"]
    headers = [label, *counts] + [f"{name}: {h}" for name in systems for _, h in heads]
    rows = []
    first = {g: next((s[section][g] for s in systems.values() if g in s.get(section, {})), {}) for g in groups}
    total = sum(a.get("n", 0) for a in first.values())
    for g in groups:
        n = first[g].get("n", 0)
        cells = [_fmt(first[g].get("n_proteins")), str(n), _fmt(100.0 * n / total if total else None)] \
            if proteins else [str(n)]
        rows.append([g, *cells] + [_fmt(_value(s.get(section, {}).get(g), k), k)
                                   for s in systems.values() for k, _ in heads])
    return markdown_table(headers, rows)


INTERVAL_METRICS: tuple[tuple[str, str], ...] = (("bleu2", "BLEU-2"), ("rougeL", "ROUGE-L"), ("yesno_acc", "y/n acc"),
                                                 ("auroc", "AUROC"), ("choice_acc", "MC acc"))


def _point(summary: Mapping[str, Any], key: str) -> Any:
    return _value(summary.get("overall"), "cs.auroc" if key == "auroc" else key)


def _vs_baselines(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """A summary's paired differences by baseline (``vs_baselines``, or the older single ``vs_baseline``)."""
    if summary.get("vs_baselines"):
        return dict(summary["vs_baselines"])
    old = summary.get("vs_baseline")
    return {old["baseline"]: {k: v for k, v in old.items() if k != "baseline"}} if old else {}


def _interval_tables(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(title, table): each system's headline metrics with their 95% intervals, then per baseline every other
    system's paired difference to it (all from the same resamples of the test proteins)."""
    systems = results.get("systems", {})
    if not any(s.get("intervals") for s in systems.values()):
        return []
    metrics = [(k, h) for k, h in INTERVAL_METRICS if any(_point(s, k) is not None for s in systems.values())]
    rows = []
    for name, s in systems.items():
        row = [name]
        for key, _ in metrics:
            ci = s.get("intervals", {}).get(key)
            point = _point(s, key)
            row.append("–" if point is None else _fmt(point, key) + (f" [{_fmt(ci[0], key)}, {_fmt(ci[1], key)}]"
                                                                      if ci else ""))
        rows.append(row)
    out = [("", markdown_table(["system"] + [h for _, h in metrics], rows))]
    baselines: list[str] = []
    for s in systems.values():
        baselines += [b for b in _vs_baselines(s) if b not in baselines]
    for base in baselines:
        diff_rows = []
        for name, s in systems.items():
            diffs = _vs_baselines(s).get(base)
            if diffs is None:
                continue
            cells = []
            for key, _ in metrics:
                d = diffs.get(key)
                cells.append("–" if d is None else f"{_fmt_signed(d['diff'], key)} "
                                                   f"[{_fmt_signed(d['ci'][0], key)}, {_fmt_signed(d['ci'][1], key)}]")
            diff_rows.append([name, *cells])
        if diff_rows:
            out.append((f"Paired difference to {base}",
                        markdown_table(["system"] + [f"Δ {h} vs {base}" for _, h in metrics], diff_rows)))
    return out


def _subset_table(subset: Mapping[str, Mapping[str, Any]]) -> str:
    """Each system's headline metrics on a subset of the items (``subset_summaries``) with their intervals, and
    their paired differences to the baselines."""
    metrics = [(k, h) for k, h in INTERVAL_METRICS if any(k in s.get("point", {}) for s in subset.values())]
    bases = []
    for s in subset.values():
        bases += [b for b in s.get("vs_baselines", {}) if b not in bases]
    rows = []
    for name, s in subset.items():
        row = [name, str(s.get("n", ""))]
        for key, _ in metrics:
            point, ci = s.get("point", {}).get(key), s.get("intervals", {}).get(key)
            row.append("–" if point is None else _fmt(point, key) + (f" [{_fmt(ci[0], key)}, {_fmt(ci[1], key)}]"
                                                                      if ci else ""))
        for base in bases:
            for key, _ in metrics:
                d = s.get("vs_baselines", {}).get(base, {}).get(key)
                row.append("–" if d is None else f"{_fmt_signed(d['diff'], key)} "
                                                 f"[{_fmt_signed(d['ci'][0], key)}, {_fmt_signed(d['ci'][1], key)}]")
        rows.append(row)
    headers = ["system", "items", *[h for _, h in metrics],
               *[f"Δ {h} vs {b}" for b in bases for _, h in metrics]]
    return markdown_table(headers, rows)


def _closed_set_table(results: Mapping[str, Any]) -> str | None:
    rows = []
    for name, s in results.get("systems", {}).items():
        for task, agg in s.get("by_task", {}).items():
            cs = agg.get("closed_set")
            if cs:
                rows.append([name, task, str(cs["n"]), _fmt(cs["accuracy"]), _fmt(cs["auroc"], "auroc"),
                             _fmt(cs["ece"], "ece")])
    if not rows:
        return None
    return markdown_table(["system", "task", "n", "LL acc", "AUROC", "ECE"], rows)


def report_markdown(results: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The whole ``report.md`` text."""
    meta = results.get("meta", {})
    headers, rows = main_table_rows(results)
    parts = ["# sepit evaluation report", ""]
    parts += [f"- **{k}**: {v}" for k, v in meta.items() if not isinstance(v, (dict, list))]
    parts += ["", "## Model vs baselines", "", markdown_table(headers, rows), ""]
    intervals = _interval_tables(results)
    if intervals:
        parts += ["## 95% intervals (bootstrap over test proteins) and paired differences", ""]
        for title, table in intervals:
            parts += ([f"### {title}", ""] if title else []) + [table, ""]
    if results.get("without_sequence_tasks"):
        parts += ["### Without the questions the protein's sequence answers (length, mass, composition)", "",
                  _subset_table(results["without_sequence_tasks"]), ""]
    parts += ["## Per task", "", _group_table(results, "by_task", "task"), "",
              "## Per identity bin to the training set (alignments covering ≥80% of the test protein)", "",
              _group_table(results, "by_identity", "identity", proteins=True), ""]
    if plots and "identity" in plots:
        parts += [f"![metric per identity bin]({plots['identity']})", ""]
    if any(s.get("by_local_identity") for s in results.get("systems", {}).values()):
        parts += ["## By best hit to the training set at any coverage (partial homologs, e.g. a shared domain)", "",
                  _group_table(results, "by_local_identity", "best hit", proteins=True), ""]
    parts += ["## By structure availability of the test protein", "",
              _group_table(results, "by_structure", "structure"), ""]
    cs = _closed_set_table(results)
    if cs:
        parts += ["## Closed-set scoring by likelihood, per task", "", cs, ""]
        if plots and "calibration" in plots:
            parts += [f"![calibration]({plots['calibration']})", ""]
    stats = [(n, s.get("stats")) for n, s in results.get("systems", {}).items() if s.get("stats")]
    if stats:
        parts += ["## How the baselines answered", ""]
        parts += [f"- **{n}**: " + ", ".join(f"{k} {v}" for k, v in st.items()) for n, st in stats]
        parts.append("")
    parts += ["## Metric definitions", "", METRIC_NOTES, ""]
    return "\n".join(parts)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_identity_bins(results: Mapping[str, Any], path: str | Path) -> Path | None:
    """Grouped bars: headline metric per identity bin, one bar per system (one panel per metric)."""
    systems = results.get("systems", {})
    bins: list[str] = []
    for s in systems.values():
        bins += [b for b in s.get("by_identity", {}) if b not in bins]
    heads = [(k, h) for k, h in HEADLINE
             if any(_value(a, k) is not None for s in systems.values() for a in s.get("by_identity", {}).values())]
    if not bins or not heads:
        return None
    fig = _figure(5.0 * len(heads), 3.6)
    width = 0.8 / max(len(systems), 1)
    for j, (key, head) in enumerate(heads):
        ax = fig.add_subplot(1, len(heads), j + 1)
        for i, (name, s) in enumerate(systems.items()):
            vals = [_value(s.get("by_identity", {}).get(b), key) for b in bins]
            xs = [x + (i - (len(systems) - 1) / 2) * width for x in range(len(bins))]
            ax.bar(xs, [v if v is not None else 0.0 for v in vals], width=width, label=name)
        ax.set_xticks(range(len(bins)))
        ax.set_xticklabels(bins, fontsize=8)
        ax.set_xlabel("identity of the test protein to the training set")
        ax.set_ylabel(head)
        ax.set_ylim(0, 100)
        ax.set_title(f"{head} per identity bin", fontsize=10)
        if j == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def plot_calibration(results: Mapping[str, Any], path: str | Path) -> Path | None:
    """Reliability diagram (mean P(yes) vs observed fraction yes) for every system with probabilities."""
    curves = {n: s["calibration"] for n, s in results.get("systems", {}).items() if s.get("calibration")}
    if not curves:
        return None
    fig = _figure(4.2, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    for name, c in curves.items():
        ax.plot(c["mean_predicted"], c["fraction_yes"], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted P(yes)")
    ax.set_ylabel("fraction answered yes in the reference")
    ax.set_title("Calibration of yes/no probabilities", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def _without_items(results: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in results.items() if k != "systems"}
    out["systems"] = {n: {k: v for k, v in s.items() if k != "items"} for n, s in results.get("systems", {}).items()}
    return out


def write_report(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``items.jsonl`` (per-item scores), ``report.md`` and the PNG plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    plots: dict[str, str] = {}
    if (p := plot_identity_bins(results, out / "identity_bins.png")) is not None:
        written["identity_plot"], plots["identity"] = p, p.name
    if (p := plot_calibration(results, out / "calibration.png")) is not None:
        written["calibration_plot"], plots["calibration"] = p, p.name
    with atomic_write(out / "items.jsonl") as f:
        for name, s in results.get("systems", {}).items():
            for row in s.get("items", []):
                f.write(json.dumps({"system": name, **row}, ensure_ascii=False) + "\n")
    written["items"] = out / "items.jsonl"
    write_json(out / "report.json", _without_items(results))
    written["json"] = out / "report.json"
    with atomic_write(out / "report.md") as f:
        f.write(report_markdown(results, plots))
    written["markdown"] = out / "report.md"
    return written


def load_report(path: str | Path) -> dict[str, Any]:
    """A ``report.json`` (or the folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(p, "no report here (expected report.json from `sepit eval`)") from None
    except json.JSONDecodeError as e:
        raise InputError(p, f"not valid JSON (line {e.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("systems"), dict):
        raise InputError(p, "not a sepit evaluation report (no 'systems')")
    return data


def compare_reports(a: Mapping[str, Any] | str | Path, b: Mapping[str, Any] | str | Path,
                    names: tuple[str, str] = ("A", "B")) -> str:
    """A markdown diff of two reports: overall metrics per system (A, B, B−A), then per-task headline deltas."""
    ra = a if isinstance(a, Mapping) else load_report(a)
    rb = b if isinstance(b, Mapping) else load_report(b)
    na, nb = names
    sa, sb = ra["systems"], rb["systems"]
    systems = list(sa) + [s for s in sb if s not in sa]
    cols = [c for c in MAIN_COLUMNS if not c[0].startswith("n_")]
    rows = []
    for sys_name in systems:
        for key, head in cols:
            va = _value(sa.get(sys_name, {}).get("overall"), key)
            vb = _value(sb.get(sys_name, {}).get("overall"), key)
            if va is None and vb is None:
                continue
            delta = vb - va if va is not None and vb is not None else None
            rows.append([sys_name, head, _fmt(va, key), _fmt(vb, key), _fmt_signed(delta, key)])
    parts = [f"# Comparison: {na} → {nb}", ""]
    for tag, r in ((na, ra), (nb, rb)):
        m = r.get("meta", {})
        desc = ", ".join(f"{k} {m[k]}" for k in ("checkpoint", "dataset", "split", "precision", "n_items")
                         if k in m)
        parts.append(f"- **{tag}**: {desc or '(no metadata)'}")
    parts += ["", markdown_table(["system", "metric", na, nb, f"{nb} − {na}"], rows), ""]
    task_rows = []
    for sys_name in [s for s in sa if s in sb]:
        tasks = list(sa[sys_name].get("by_task", {}))
        tasks += [t for t in sb[sys_name].get("by_task", {}) if t not in tasks]
        for t in tasks:
            for key, head in HEADLINE:
                va = _value(sa[sys_name].get("by_task", {}).get(t), key)
                vb = _value(sb[sys_name].get("by_task", {}).get(t), key)
                if va is None and vb is None:
                    continue
                delta = vb - va if va is not None and vb is not None else None
                task_rows.append([sys_name, t, head, _fmt(va, key), _fmt(vb, key), _fmt_signed(delta, key)])
    if task_rows:
        parts += ["## Per task", "", markdown_table(["system", "task", "metric", na, nb, "Δ"], task_rows), ""]
    return "\n".join(parts)
