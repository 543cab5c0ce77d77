"""The one table ``make bench`` prints, from the results dict (also ``python -m benchmarks.report <json>``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.run import TARGETS


def fmt(figure: dict[str, Any] | None, unit: str = "", digits: int = 2) -> str:
    if not figure or figure.get("median") is None:
        return "n/a"
    median, low, high = figure["median"], figure["min"], figure["max"]
    spread = f" [{low:.{digits}f}-{high:.{digits}f}]" if len(figure.get("runs", [])) > 1 else ""
    return f"{median:.{digits}f}{unit}{spread} (n={len(figure['runs'])})"


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "met" if value <= target else "MISSED"


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    boot = results.get("bootstrap") or {}
    if "error" in boot:
        rows.append(("bootstrap", f"failed: {boot['error']}", "", ""))
    elif boot:
        lat = boot["latencies"]
        waits = f"cluster {lat['cluster']:.0f} s, node group {lat['nodegroup']:.0f} s, rollout {lat['rollout']:.0f} s, Astro {lat['astro_call']:.1f} s/call"
        rows += [
            ("1 simulated waits", waits, "", ""),
            ("1 longest chain of waits", fmt(boot["chain"], " s", 1), "", ""),
            ("1 bootstrap run wall (first task start to last end)", fmt(boot["wall"], " s", 1), "", ""),
            ("1 dag.test() call, harness included", fmt(boot.get("call_wall"), " s", 1), "", ""),
            ("1 critical-path ratio", fmt(boot["critical_path_ratio"]), "<= 1.15",
             verdict(boot["critical_path_ratio"]["median"], TARGETS["critical_path"])),
            ("1 fixed overhead (wall - chain)", fmt(boot["overhead"], " s", 1), "", ""),
            ("1 tutorial, sequential wall", fmt(boot["tutorial_wall"], " s", 1), f"chain {boot['tutorial_chain']:.0f} s", ""),
            ("1 tutorial / bootstrap", fmt(boot["tutorial_ratio"]), "", ""),
            ("2 worker-slot seconds", fmt(boot["slot"], " s", 1), "", ""),
            ("2 slot seconds / wall", fmt(boot["slot_share"]), "<= 0.2", verdict(boot["slot_share"]["median"], TARGETS["slot_share"])),
            ("2 ensure_cluster slot / its wall", fmt(boot["ensure_cluster_slot_share"]), "", ""),
            (f"2 stock EksCreateCluster ({boot['stock_wait']:.0f} s wait) slot / wall", fmt(boot["stock_slot_share"]), "", ""),
        ]
        rerun, first = _counts(boot["rerun_mutations"]), _counts(boot["first_mutations"])
        total = sum(m["median"] or 0 for m in boot["rerun_mutations"].values())
        rows += [
            ("3 re-run mutating calls aws/k8s/helm/astro", f"{rerun}  (first run: {first})", "0",
             verdict(total, TARGETS["rerun_mutations"])),
            ("3 re-run wall", fmt(boot["rerun_wall"], " s", 1), "", ""),
            ("3 re-run wall / first run", fmt(boot["rerun_ratio"]), "", ""),
        ]
    parse = results.get("parse") or {}
    if "error" in parse:
        rows.append(("4 parsing", f"failed: {parse['error']}", "", ""))
    for figure in parse.values() if "error" not in parse else []:
        label = f"4 parse {figure['file']} @ {figure['specs']} spec(s)"
        detail = f"{fmt(figure['ms'], ' ms', 0)}; {figure['dags']} Dags, {figure['tasks']} tasks"
        if figure["import_errors"]:
            detail += f"; IMPORT ERROR {next(iter(figure['import_errors'].values()))}"
        target = "< 100 ms" if figure["specs"] == 10 else ""
        met = verdict(figure["ms"]["median"], TARGETS["parse_ms_at_10"]) if figure["specs"] == 10 else ""
        rows.append((label, detail, target, met))
    health = results.get("health") or {}
    if "error" in health or "not_measured" in health:
        rows.append(("5 health check", health.get("not_measured") or f"failed: {health['error']}", "", ""))
    elif health:
        sched = health["schedule"]
        rows += [
            ("5 healthy health run, end to end", fmt(health["run_wall"], " s", 1), "", ""),
            ("5 failing health run, end to end", fmt(health["failing_run_wall"], " s", 1), "", ""),
            (f"5 schedule compressed: {sched['interval']:g} s for 30 min", f"x{sched['compression']:.0f}", "", ""),
            ("5 fault -> incident notified", fmt(health["detection_latency"], " s", 1), "", ""),
            ("5   of which wait for the tick", fmt(health["wait_for_tick"], " s", 1), "", ""),
            ("5   of which the failing run", fmt(health["notify_after_tick"], " s", 1), "", ""),
            ("5 same at the spec's 30 min schedule", fmt(_minutes(health["detection_latency_at_spec_schedule"]), " min", 1),
             "", ""),
        ]
    setup = results.get("setup") or {}
    if "error" in setup:
        rows.append(("6 set-up", f"failed: {setup['error']}", "", ""))
    elif setup:
        rows += [("6 set-up, cold cache", fmt(setup["cold"], " s", 0), "", ""),
                 ("6 set-up, warm cache", fmt(setup["warm"], " s", 0), "", "")]
    widths = [max(len(row[i]) for row in rows + [("figure", "median [min-max] (runs)", "target", "")]) for i in range(4)]
    lines = [_line(("figure", "median [min-max] (runs)", "target", ""), widths), _line(tuple("-" * w for w in widths), widths)]
    lines += [_line(row, widths) for row in rows]
    m = results.get("machine", {})
    lines.append(f"\nmachine: {m.get('cpu')} x{m.get('cores')}, {m.get('memory_gb')} GB, {m.get('os')}, "
                 f"Python {m.get('python')}, Airflow {m.get('airflow')}, commit {m.get('commit')}; "
                 f"load average {m.get('load_average_at_start')} at start, {m.get('load_average_at_end')} at end")
    return "\n".join(lines)


def _minutes(figure: dict[str, Any]) -> dict[str, Any]:
    return {key: ([v / 60 for v in value] if key == "runs" else None if value is None else value / 60)
            for key, value in figure.items()}


def _counts(by_system: dict[str, dict[str, Any]]) -> str:
    return " / ".join(f"{by_system[system]['median']:.0f}" for system in ("aws", "kubernetes", "helm", "astro"))


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    return " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1]).read_text())))
