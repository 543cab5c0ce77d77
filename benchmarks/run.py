"""``make bench``: the figures of docs/design.md "Performance", measured against the sandbox.

Prints one table and writes it as JSON (``benchmarks/results/latest.json``). Every figure is the
median of several runs with its min-max spread. See benchmarks/README.md for what each figure
means, how it is measured and what it leaves out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DAGS = ROOT / "dags"
BOOTSTRAP_DAG = "remote_agents_bootstrap__sandbox"
_TERMINAL = os.dup(2)  # progress lines still reach the terminal while a section's output is captured
TARGETS = {"critical_path": 1.15, "slot_share": 0.2, "rerun_mutations": 0, "parse_ms_at_10": 100.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--cluster", type=float, default=40.0, help="simulated EKS cluster CREATING seconds")
    parser.add_argument("--nodegroup", type=float, default=20.0, help="simulated node group CREATING seconds")
    parser.add_argument("--rollout", type=float, default=10.0, help="simulated rollout readiness seconds")
    parser.add_argument("--astro", type=float, default=1.0, help="simulated latency per Astro API call (seconds)")
    parser.add_argument("--poll", type=float, default=1.0, help="operators' poll interval, scaled with the waits")
    parser.add_argument("--baseline-runs", type=int, default=1,
                        help="runs of the tutorial and stock-operator baselines, side by side (default 1)")
    parser.add_argument("--health-runs", type=int, default=2,
                        help="faults injected (each followed by a recovery run) in the health section (default 2)")
    parser.add_argument("--health-interval", type=float, default=10.0,
                        help="compressed health schedule: one run every N seconds for the spec's 30 minutes (default 10)")
    parser.add_argument("--skip", action="append", default=[], choices=["parse", "bootstrap", "setup", "health"],
                        help="leave a section out (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks.stats import machine

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="remote-agents-bench-"))
    log = args.output.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    # Paths relative to the repository: results files are committed and compared between machines.
    output = args.output.resolve().relative_to(ROOT) if args.output.resolve().is_relative_to(ROOT) else args.output
    results: dict[str, Any] = {"machine": machine(), "settings": vars(args) | {"output": str(output)}}
    shared = SandboxAirflow(work, args)
    try:
        if "parse" not in args.skip:
            results["parse"] = section("Dag parsing", lambda: measure_parsing(work, args.runs), log)
        if "bootstrap" not in args.skip:
            results["bootstrap"] = section("bootstrap", lambda: measure_bootstrap(shared, args), log)
        if "health" not in args.skip:
            results["health"] = section("health check", lambda: measure_health(shared, args), log)
        with captured_output(log):
            shared.stop()  # before set-up, which must not share the machine with the sandbox's servers
        if "setup" not in args.skip:
            results["setup"] = section("set-up", lambda: measure_setup(max(1, args.runs - 2)), log)
    finally:
        shared.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.monotonic() - started
    results["machine"]["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    from benchmarks.report import table

    print(table(results))
    print(f"\nwritten to {args.output} ({results['seconds']:.0f} s)")
    return 0


def section(name: str, measure: Any, log: Path) -> Any:
    """Run one section with everything it prints (Airflow, servers, tasks) going to ``log``."""
    say(f"[bench] {name} ... (output in {log})")
    started = time.monotonic()
    try:
        with captured_output(log):
            return measure()
    except Exception as error:  # noqa: BLE001 - one broken section must not hide the others' figures
        say(f"[bench] {name} failed: {type(error).__name__}: {error}")
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        say(f"[bench] {name} took {time.monotonic() - started:.0f} s")


def say(line: str) -> None:
    os.write(_TERMINAL, (line + "\n").encode())


@contextlib.contextmanager
def captured_output(log: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 (so child processes too) at ``log`` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def measure_parsing(work: Path, runs: int) -> dict[str, Any]:
    from benchmarks.parsing import generate_specs, parse_file
    from benchmarks.stats import summary

    env = {**os.environ, "AIRFLOW_HOME": str(work / "parse-home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)}
    # Bytecode first, as a Deployment's image and a Dag processor that has parsed once have it: without
    # it (PYTHONDONTWRITEBYTECODE, a fresh clone) every parse would also compile our modules.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "provider"), str(DAGS)], check=True, capture_output=True)
    figures: dict[str, Any] = {}
    for count in (1, 10, 50):
        folder = work / f"environments-{count}"
        generate_specs(folder, count)
        files = sorted(DAGS.glob("*.py")) if count == 10 else [DAGS / "remote_agents_bootstrap.py"]
        for dag_file in files:
            parses = [parse_file(dag_file, folder, env) for _ in range(runs)]
            figures[f"{dag_file.name}@{count}"] = {
                "file": dag_file.name, "specs": count, "dags": parses[-1]["dags"], "tasks": parses[-1]["tasks"],
                "import_errors": parses[-1]["import_errors"],
                "ms": summary([p["seconds"] * 1000 for p in parses if p["seconds"] is not None]),
            }
    return figures


class SandboxAirflow:
    """One throw-away Airflow (home, api-server, triggerer) and one sandbox, started on first use and
    shared by the bootstrap and health sections: Airflow reads its settings once per process."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.sandbox: Any = None
        self.services: Any = None
        self.dags = work / "dags"
        self.bootstrapped = False  # the sandbox holds a converged bootstrap Dag run

    def start(self) -> SandboxAirflow:
        if self.sandbox is not None:
            return self
        from benchmarks.airflow_env import AirflowServices, airflow_environment, free_port, prepare_home

        work = self.work
        environments = work / "environments"
        environments.mkdir()
        shutil.copy(ROOT / "include" / "environments" / "sandbox.yaml", environments)
        dag_folder(self.dags)
        port = free_port()
        env = airflow_environment(work / "airflow", self.dags, port)
        env.update(REMOTE_AGENTS_ENVIRONMENTS=str(environments), REMOTE_AGENTS_BENCH_POLL_INTERVAL=str(self.args.poll))
        os.environ.update(env)  # before anything imports Airflow in this process
        prepare_home(work / "airflow")

        from remote_agents.spec import load_spec
        from sandbox.environment import DEFAULT_SPEC, Sandbox

        self.sandbox = Sandbox(work / "sandbox", load_spec(DEFAULT_SPEC)).start()
        os.environ.update(self.sandbox.env())
        os.environ["BENCH_STOCK_ROLE_ARN"] = f"arn:aws:iam::{self.sandbox.aws.account_id}:role/benchmark-stock-eks"
        os.environ["BENCH_STOCK_REGION"] = self.sandbox.spec.backends.aws_region
        self.services = AirflowServices(work / "airflow", dict(os.environ), port)
        self.services.start()
        return self

    def stop(self) -> None:
        if self.services is not None:
            self.services.stop()
            self.services = None
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None


def measure_bootstrap(shared: SandboxAirflow, args: argparse.Namespace) -> dict[str, Any]:
    """Critical path, worker-slot share, converged re-run and the tutorial and stock baselines, on one sandbox."""
    shared.start()
    figures = bootstrap_runs(shared.sandbox, shared.dags, args)
    shared.bootstrapped = figures["rerun"][-1]["state"] == "success"
    return figures


def dag_folder(target: Path) -> Path:
    """dags/*.py (linked, so they are the real files) plus the stock-operator Dag of the comparison."""
    target.mkdir()
    for source in [*DAGS.glob("*.py"), Path(__file__).resolve().parent / "dags" / "benchmark_stock_eks.py"]:
        (target / source.name).symlink_to(source)
    return target


def bootstrap_runs(sandbox: Any, dags: Path, args: argparse.Namespace) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    from benchmarks.bootstrap import Latencies, apply_latencies, clear_counters, mutating_calls, run_dag
    from benchmarks.stats import summary
    from benchmarks.tutorial import run_tutorial_process, wall_of

    latencies = Latencies(args.cluster, args.nodegroup, args.rollout, args.astro)
    bag = DagBag(str(dags))
    dag, stock_dag = bag.get_dag(BOOTSTRAP_DAG), bag.get_dag("benchmark_stock_eks")
    if dag is None or stock_dag is None:
        raise RuntimeError(f"{BOOTSTRAP_DAG} or benchmark_stock_eks not found in {dags}: {bag.import_errors}")
    polling = dag.get_task("ensure_cluster").poll_interval
    if polling != args.poll:
        raise RuntimeError(f"the benchmark's cluster policy did not apply: ensure_cluster polls every {polling} s")
    # First, so the section ends on a converged Dag bootstrap that the health section starts from.
    # The baselines have no target and vary little: args.baseline_runs (default 1) keeps make bench
    # under 10 minutes. Side by side (different clusters, both mostly wait) for the same reason.
    tutorial, stock = [], []
    for _ in range(args.baseline_runs):
        sandbox.reset()
        apply_latencies(sandbox, latencies)
        person = run_tutorial_process(sandbox.aws.account_id, args.poll)
        stock.append(run_dag(stock_dag))
        tutorial.append(wall_of(person))
    first, second, chains = [], [], []
    for _ in range(args.runs):
        sandbox.reset()
        apply_latencies(sandbox, latencies)
        run = run_dag(dag)
        if run["state"] != "success":
            raise RuntimeError(f"bootstrap run ended {run['state']}; failed tasks: {run['failed']}")
        astro_calls = astro_calls_per_branch(sandbox)
        run["calls"] = mutating_calls(sandbox)
        chains.append(longest_chain(latencies, astro_calls))
        first.append(run)
        clear_counters(sandbox)
        rerun = run_dag(dag)
        rerun["calls"] = mutating_calls(sandbox)
        second.append(rerun)
    return {
        "latencies": vars(latencies),
        "chain": summary(chains),
        "first": [strip(r) for r in first],
        "rerun": [strip(r) for r in second],
        "wall": summary([r["wall"] for r in first]),
        "call_wall": summary([r["call_wall"] for r in first]),
        "critical_path_ratio": summary([r["wall"] / c for r, c in zip(first, chains, strict=True)]),
        "slot": summary([r["slot"] for r in first]),
        "slot_share": summary([r["slot"] / r["wall"] for r in first]),
        "ensure_cluster_slot_share": summary([r["per_task"]["ensure_cluster"]["slot"] / r["per_task"]["ensure_cluster"]["wall"]
                                              for r in first]),
        "rerun_wall": summary([r["wall"] for r in second]),
        "rerun_ratio": summary([s["wall"] / f["wall"] for f, s in zip(first, second, strict=True)]),
        "rerun_mutations": {system: summary([float(r["calls"][system]) for r in second])
                            for system in ("aws", "kubernetes", "helm", "astro")},
        "first_mutations": {system: summary([float(r["calls"][system]) for r in first])
                            for system in ("aws", "kubernetes", "helm", "astro")},
        "tutorial_wall": summary(tutorial),
        "tutorial_ratio": summary([t / f["wall"] for t, f in zip(tutorial, first, strict=False)]),
        "overhead": summary([r["wall"] - c for r, c in zip(first, chains, strict=True)]),
        "tutorial_chain": latencies.cluster + latencies.nodegroup + 2 * latencies.rollout + 2 * latencies.astro_call,
        "stock_wait": latencies.cluster,
        "stock_slot_share": summary([s["per_task"]["create_cluster"]["slot"] / s["per_task"]["create_cluster"]["wall"]
                                     for s in stock]),
        "stock_slot": summary([s["slot"] for s in stock]),
    }


def longest_chain(latencies: Any, astro_calls: int) -> float:
    """The Dag's longest path of simulated waits: the cluster, then either the node groups or the
    token tasks' Astro calls (both need only the control plane, and run side by side), then the rollout."""
    return latencies.cluster + max(latencies.nodegroup, latencies.astro_call * astro_calls) + latencies.rollout


def astro_calls_per_branch(sandbox: Any) -> int:
    """Astro API calls of the busier token task (agent token, registry token): each adds the latency."""
    paths = [call.path for call in sandbox.astro.calls]
    agent = sum("/agent-tokens" in path for path in paths)
    return max(agent, len(paths) - agent)


def strip(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in ("state", "wall", "call_wall", "slot", "deferred", "failed", "calls")}


def measure_health(shared: SandboxAirflow, args: argparse.Namespace) -> dict[str, Any]:
    """End-to-end time of a health run and detection latency of an injected fault (benchmarks/health.py)."""
    from benchmarks.health import measure

    shared.start()
    return measure(shared.sandbox, shared.dags, args.health_runs, args.health_interval, say, shared.bootstrapped)


def measure_setup(warm_runs: int) -> dict[str, Any]:
    from benchmarks.setup_time import measure
    from benchmarks.stats import summary

    runs = measure(warm_runs)
    return {"cold": summary(runs["cold"]), "warm": summary(runs["warm"])}


if __name__ == "__main__":
    sys.exit(main())
