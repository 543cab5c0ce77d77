"""The README's main job: bootstrap Remote Execution Agents in the sandbox with a real Airflow, twice.

1. validates every example spec;
2. starts the sandbox (moto, the Kubernetes emulator, the Astro emulator) for include/environments/sandbox.yaml;
3. runs `airflow dags test remote_agents_bootstrap__sandbox`: cluster, IRSA, tokens, Secrets, helm install;
4. runs it again: everything `unchanged`, zero mutating calls anywhere;
5. shows what now exists (helm list, the Kubernetes objects, the IAM role), then stops the sandbox.
Task logs go to .demo/logs/; the summaries are printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".demo"
BIN = ROOT / ".venv" / "bin"
TOOLS = ROOT / ".tools" / "bin"


def heading(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def prepare_airflow_home() -> dict[str, str]:
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "logs").mkdir(parents=True)
    env = {
        "AIRFLOW_HOME": str(WORK / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "PATH": f"{TOOLS}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    os.environ.update(env)
    return env


def run_logged(name: str, argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    with open(WORK / "logs" / f"{name}.log", "w") as log:
        result = subprocess.run(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if result.returncode:
        print((WORK / "logs" / f"{name}.log").read_text()[-4000:])
        raise SystemExit(f"{name} failed (exit {result.returncode}); full log: .demo/logs/{name}.log")
    return time.monotonic() - started


def latest_summary(dag_id: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_id, task_id="summary").order_by(XComModel.timestamp.desc()).first()
        return str(row.value) if row else "(no summary)"


def show(argv: list[str], env: dict[str, str]) -> None:
    print(f"$ {' '.join(argv)}")
    print(subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True).stdout.rstrip())


def main() -> int:
    started = time.monotonic()
    heading("Validate every example spec")
    for spec_file in sorted((ROOT / "include" / "environments").glob("*.yaml")):
        show([str(BIN / "remote-agents"), "validate", str(spec_file.relative_to(ROOT))], {})

    env = prepare_airflow_home()
    from remote_agents.spec import load_spec
    from sandbox.environment import DEFAULT_SPEC, Sandbox

    heading("Start the sandbox")
    sandbox = Sandbox(WORK / "sandbox", load_spec(DEFAULT_SPEC)).start()
    env.update(sandbox.env())
    os.environ.update(sandbox.env())
    print(f"AWS (moto) {sandbox.aws.endpoint_url}  Kubernetes {sandbox.kube.url}  Astro {sandbox.astro.url}")
    try:
        run_logged("db-migrate", [str(BIN / "airflow"), "db", "migrate"], env)
        dag_id = "remote_agents_bootstrap__sandbox"
        conf = json.dumps({"dry_run": False})
        for attempt in (1, 2):
            heading(f"Bootstrap, run {attempt}: airflow dags test {dag_id}")
            sandbox.aws.request_log.clear()
            sandbox.kube.reset_counters()
            sandbox.astro.clear_calls()
            seconds = run_logged(f"bootstrap-{attempt}", [str(BIN / "airflow"), "dags", "test", dag_id, "-c", conf], env)
            print(latest_summary(dag_id))
            counts = {
                "AWS": len(sandbox.aws.request_log.mutating_calls),
                "Kubernetes (incl. helm)": len([m for m in sandbox.kube.mutations if not m.dry_run]),
                "Astro": len(sandbox.astro.mutating_calls),
            }
            print(f"run {attempt}: {seconds:.1f} s; mutating calls: " + ", ".join(f"{k} {v}" for k, v in counts.items()))

        heading("What exists now")
        show(["helm", "list", "-A"], env)
        show(["kubectl", "get", "deployments,serviceaccounts,secrets", "-n", sandbox.spec.namespace, "-o", "name"], env)
        role = sandbox.aws.admin_client("iam").get_role(RoleName="sandbox-remote-agents")["Role"]
        trust = role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
        print(f"IAM role {role['Arn']} trusts:")
        for subject in next(v for k, v in trust.items() if k.endswith(":sub")):
            print(f"  {subject}")
    finally:
        heading("Stop the sandbox")
        sandbox.stop()
    print(f"demo finished in {time.monotonic() - started:.0f} s; task logs in .demo/logs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
