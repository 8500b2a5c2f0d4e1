"""The plots and the results table of a bench/perf.py run, written into docs/.

`render(result, docs)` writes docs/perf-throughput.png, docs/perf-latency.png and
docs/perf-claims.png, and replaces the text between the markers below in docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

BEGIN = "<!-- perf-results:begin (written by bench/perf.py --docs; do not edit) -->"
END = "<!-- perf-results:end -->"
SYSTEMS = ("handoff", "procrastinate", "raw_sql")
LABELS = {"handoff": "Handoff", "procrastinate": "Procrastinate", "raw_sql": "raw SQL"}
COLOURS = {"handoff": "#1f77b4", "procrastinate": "#ff7f0e", "raw_sql": "#7f7f7f"}
FIGURES = {
    "enqueue_per_row": "enqueue per row, 1 client",
    "enqueue_per_row_4": "enqueue per row, 4 clients",
    "enqueue_batched": "enqueue batched (100/call)",
    "enqueue_dup_per_row": "enqueue per row, 50 % duplicates",
    "enqueue_dup_batched": "enqueue batched, 50 % duplicates",
    "drain_1x4": "drain 1 process x 4",
    "drain_2x4": "drain 2 processes x 4",
}
PNGS = ("perf-throughput.png", "perf-latency.png", "perf-claims.png")


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{float(value):,.0f}"
    return f"{float(value):,.{digits}f}"


def _jps(entry: dict[str, Any], system: str) -> float | None:
    value = entry.get(system, {}).get("jobs_per_s")
    return None if value is None else float(value)


def table(result: dict[str, Any]) -> str:
    """The markdown between the markers: what ran, the figures, the targets."""
    m = result["machine"]
    lines = [
        f"Run of {result['created_at']} ({result['mode']}; `docs/bench-perf.json`), wall time "
        f"{result['wall_seconds']:.0f} s, produced by:",
        "",
        "```sh",
        result["command"],
        "```",
        "",
        f"Handoff at `{(m.get('handoff_commit') or '?')[:7]}`"
        + (
            f" with uncommitted changes in {', '.join(m['handoff_uncommitted_changes'])}"
            if m.get("handoff_uncommitted_changes")
            else ""
        )
        + f"; {m['cpu_count']} CPUs, Python {m['python']}, "
        f"{m['postgresql'].split(' on ')[0]}, SQLite {m.get('sqlite', '?')}; load average "
        f"{m['loadavg_at_start'][0]} at start, {m['loadavg_at_end'][0]} at end; "
        f"{result['sizes']['repeat']} round(s), medians.",
        "",
        "**Throughput on PostgreSQL** (jobs/s; ratios above 1: Handoff faster)",
        "",
        "| figure | Handoff | Procrastinate | raw SQL | Handoff / Procrastinate | "
        "Handoff / raw SQL |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in FIGURES.items():
        entry = result["figures"].get(key)
        if not entry:
            continue
        lines.append(
            f"| {label} | {_num(_jps(entry, 'handoff'))} | {_num(_jps(entry, 'procrastinate'))} "
            f"| {_num(_jps(entry, 'raw_sql'))} | {_num(entry['ratio_handoff_procrastinate'], 2)} "
            f"| {_num(entry['ratio_handoff_raw_sql'], 2)} |"
        )
    lat = result.get("latency") or {}
    if lat:
        rate = result["sizes"]["latency_rate"]
        secs = result["sizes"]["latency_seconds"]
        lines += [
            "",
            f"**Pickup latency** at {rate:.0f} jobs/s for {secs:g} s, 1 worker process x 4, "
            "LISTEN/NOTIFY on (ms, enqueue call start → handler start; in brackets: from the "
            "enqueue call's return, after its commit)",
            "",
            "| system | p50 | p95 | p99 | enqueue call p50 | kept up (per round) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for system in SYSTEMS:
            if system not in lat:
                continue
            a, b, c = (
                lat[system][k] for k in ("from_enqueue_call", "from_commit_ack", "enqueue_call")
            )
            lines.append(
                f"| {LABELS[system]} | {a['p50_ms']:.2f} ({b['p50_ms']:.2f}) | "
                f"{a['p95_ms']:.2f} ({b['p95_ms']:.2f}) | {a['p99_ms']:.2f} ({b['p99_ms']:.2f}) "
                f"| {c['p50_ms']:.2f} | "
                + ", ".join("yes" if k else "**no**" for k in lat[system].get("kept_up", []))
                + " |"
            )
    claims = result.get("claim_cost") or {}
    if claims:
        sizes = [int(s) for s in next(iter(claims.values()))["claim_ms_median"]]
        lines += [
            "",
            f"**Claim cost** (ms per claim of one job, median of {result['sizes']['claims']}; "
            "completion timed apart) as the queued backlog grows"
            + (
                ""
                if result.get("claims_after_checkpoint", True)
                else ", with no CHECKPOINT between the fill and the claims"
            ),
            "",
            "| system | " + " | ".join(f"{s:,} queued" for s in sizes) + " | largest / smallest |",
            "|---|" + "---:|" * (len(sizes) + 1),
        ]
        for system in SYSTEMS:
            if system not in claims:
                continue
            c = claims[system]
            lines.append(
                f"| {LABELS[system]} | "
                + " | ".join(f"{c['claim_ms_median'][str(s)]:.2f}" for s in sizes)
                + f" | {_num(c['ratio_largest_to_smallest'], 2)} |"
            )
        for system in SYSTEMS:
            c = claims.get(system, {})
            nf = c.get("claim_ms_median_no_flush") or {}
            if not nf or None in nf.values():
                continue
            lines.append(
                f"| {LABELS[system]}, commit without waiting for the WAL flush | "
                + " | ".join(f"{nf[str(s)]:.2f}" for s in sizes)
                + f" | {_num(c['ratio_largest_to_smallest_no_flush'], 2)} |"
            )
        plan = claims.get("handoff", {}).get("explain_claim_largest")
        if plan:
            lines += [
                "",
                f"Handoff's claim at {sizes[-1]:,} queued, `EXPLAIN (ANALYZE, BUFFERS)`: "
                + " → ".join(plan["nodes"])
                + f"; {plan['shared_hit_blocks']} buffers hit, {plan['shared_read_blocks']} "
                f"read; execution {plan['execution_ms']} ms, no sequential scan: "
                f"{'yes' if not plan['seq_scan'] else 'NO'}.",
            ]
    lite = result.get("sqlite") or {}
    if lite:
        lines += [
            "",
            "**SQLite** (the embedded default; a file in a temp dir; jobs/s)",
            "",
            "| figure | Handoff | raw SQL | Handoff / raw SQL |",
            "|---|---:|---:|---:|",
        ]
        for key, label in FIGURES.items():
            entry = lite.get(f"sqlite_{key}")
            if not entry:
                continue
            lines.append(
                f"| {label} | {_num(_jps(entry, 'handoff'))} | {_num(_jps(entry, 'raw_sql'))} "
                f"| {_num(entry['ratio_handoff_raw_sql'], 2)} |"
            )
    lines += [
        "",
        "**Issue 7's targets**, measured in this run",
        "",
        "| target | measured | aim | met? |",
        "|---|---:|---:|:---:|",
    ]
    for t in result.get("targets", []):
        met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {_num(t['value'], 2)} | {t['aim']} | {met} |")
    lines += [
        "",
        "![throughput](perf-throughput.png)",
        "",
        "![pickup latency](perf-latency.png)",
        "",
        "![claim cost](perf-claims.png)",
    ]
    return "\n".join(lines)


def write_table(result: dict[str, Any], doc: Path) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise RuntimeError(f"{doc} has no perf-results markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table(result)}\n{END}{tail}")


def _bars(ax: Any, groups: Sequence[str], values: dict[str, list[float]], title: str) -> None:
    width = 0.8 / len(values)
    for i, (system, ys) in enumerate(values.items()):
        xs = [g + (i - (len(values) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, ys, width, label=LABELS[system], color=COLOURS[system])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plots(result: dict[str, Any], docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = result["figures"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, keys, title in (
        (axes[0], [k for k in FIGURES if k.startswith("enqueue")], "enqueue (jobs/s)"),
        (axes[1], [k for k in FIGURES if k.startswith("drain")], "drain, no-op handler (jobs/s)"),
    ):
        keys = [k for k in keys if k in figures]
        values = {s: [_jps(figures[k], s) or 0.0 for k in keys] for s in SYSTEMS}
        _bars(ax, [FIGURES[k] for k in keys], values, title)
    fig.suptitle("PostgreSQL, one run, side by side", fontsize=11)
    fig.tight_layout()
    fig.savefig(docs / PNGS[0], dpi=90)
    plt.close(fig)

    lat = result.get("latency") or {}
    fig, ax = plt.subplots(figsize=(7, 4))
    ps = ("p50_ms", "p95_ms", "p99_ms")
    values = {s: [float(lat[s]["from_enqueue_call"][p]) for p in ps] for s in SYSTEMS if s in lat}
    if values:
        _bars(ax, ["p50", "p95", "p99"], values, "pickup latency, enqueue → handler start (ms)")
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(docs / PNGS[1], dpi=90)
    plt.close(fig)

    claims = result.get("claim_cost") or {}
    fig, ax = plt.subplots(figsize=(7, 4))
    for system in SYSTEMS:
        if system not in claims:
            continue
        points = sorted((int(k), float(v)) for k, v in claims[system]["claim_ms_median"].items())
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            label=LABELS[system],
            color=COLOURS[system],
        )
        nf = claims[system].get("claim_ms_median_no_flush") or {}
        if nf and None not in nf.values():
            points = sorted((int(k), float(v)) for k, v in nf.items())
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="x",
                linestyle="--",
                label=f"{LABELS[system]}, no WAL-flush wait",
                color=COLOURS[system],
            )
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("queued rows")
    ax.set_ylabel("ms per claim (median)")
    ax.set_title("claim cost as the backlog grows", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / PNGS[2], dpi=90)
    plt.close(fig)


def render(result: dict[str, Any], docs: Path) -> None:
    plots(result, docs)
    write_table(result, docs / "benchmarks.md")
