"""The README's main job: bootstrap Remote Execution Agents in the sandbox with a real Airflow, twice.

1. validates every example spec;
2. starts the sandbox (moto, the Kubernetes emulator, the Astro emulator) for include/environments/sandbox.yaml;
3. runs `airflow dags test remote_agents_bootstrap__sandbox`: cluster, IRSA, tokens, Secrets, helm install;
4. runs it again: everything `unchanged`, zero mutating calls anywhere;
5. shows what now exists (helm list, the Kubernetes objects, the IAM role);
6. starts the agents' stand-in (a real Airflow configured from the installed release) and runs the
   health Dag: healthy; then removes the XCom statement from the agents' IAM role and runs it again:
   the XCom check fails with its diagnosis and one notification; restores the policy: recovered.
Task logs go to .demo/logs/; the summaries are printed. While a Dag runs, each task it starts is
shown with the elapsed time (remote_agents.progress).
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
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


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


def run_logged(name: str, argv: list[str], env: dict[str, str], allowed_to_fail: bool = False) -> float:
    """Run ``argv`` with its output in .demo/logs/NAME.log, showing each task it starts; its seconds."""
    from remote_agents.progress import TaskProgress

    started = time.monotonic()
    path = WORK / "logs" / f"{name}.log"
    with open(path, "w") as log, TaskProgress(path, name, sys.stdout):
        process = subprocess.run(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if process.returncode and not allowed_to_fail:
        print((WORK / "logs" / f"{name}.log").read_text()[-4000:])
        raise SystemExit(f"{name} failed (exit {process.returncode}); full log: .demo/logs/{name}.log")
    return time.monotonic() - started


def latest_xcom(dag_id: str, task_id: str) -> object:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_id, task_id=task_id).order_by(XComModel.timestamp.desc()).first()
        return row.value if row else None


def health_run(name: str, env: dict[str, str], sandbox: object) -> None:
    dag_id = "remote_agents_health__sandbox"
    sandbox.webhook.clear()  # type: ignore[attr-defined]
    run_logged(name, [str(BIN / "airflow"), "dags", "test", dag_id], env, allowed_to_fail=True)
    report = latest_xcom(dag_id, "report") or {}
    print("healthy" if report.get("healthy") else f"failing checks: {', '.join(report.get('failed_checks', []))}")
    for finding in report.get("findings", []):
        print(f"  - {finding['message']}")
    for message in sandbox.webhook.messages:  # type: ignore[attr-defined]
        print(f"  notification ({message.get('status')}): {message.get('text', '').splitlines()[0]}")


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
    from remote_agents.summary import render_report
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
            print(render_report(latest_xcom(dag_id, "summary")))  # type: ignore[arg-type]
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

        heading("Start the agents' stand-in from the installed release, run the health checks")
        sandbox.start_agents()
        env.update(sandbox.env())
        health_run("health-1", env, sandbox)

        heading("Fault: the agents' role loses its statement for XCom and state-store objects; health checks again")
        iam = sandbox.aws.admin_client("iam")
        policy_name = "remote-agents-access"
        policy = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=policy_name)["PolicyDocument"]
        narrowed = {**policy, "Statement": [s for s in policy["Statement"] if not any(
            "/xcom/" in r for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]))]}
        iam.put_role_policy(RoleName=role["RoleName"], PolicyName=policy_name, PolicyDocument=json.dumps(narrowed))
        health_run("health-2", env, sandbox)

        heading("Policy restored (a bootstrap run would do the same); health checks again")
        iam.put_role_policy(RoleName=role["RoleName"], PolicyName=policy_name, PolicyDocument=json.dumps(policy))
        health_run("health-3", env, sandbox)
    finally:
        heading("Stop the sandbox")
        sandbox.stop()
    print(f"demo finished in {time.monotonic() - started:.0f} s; task logs in .demo/logs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
