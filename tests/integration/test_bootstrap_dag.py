"""The bootstrap and teardown Dags, run with a real Airflow (dag.test on SQLite) against the sandbox."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airflow.models.variable import Variable

from remote_agents import naming
from remote_agents.health.gather import write_canary
from remote_agents.hooks.astro import AstroHook
from remote_agents.render.deployment import LOG_FILENAME_TEMPLATE
from remote_agents.summary import render_report
from sandbox.environment import Sandbox

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = "remote_agents_bootstrap__sandbox"
TEARDOWN = "remote_agents_teardown__sandbox"


@pytest.fixture
def clean(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.reset()
    yield sandbox
    sandbox.kube.faults.clear()
    sandbox.aws.clear_faults()
    sandbox.astro.clear_faults()


def bootstrap(dagbag: Any, sandbox: Sandbox, **params: Any) -> tuple[str, dict[str, str]]:
    """One bootstrap run; every param given, because dag.test() keeps the previous run's conf."""
    conf = {"dry_run": False, "rotate_tokens": False, "force_upgrade": False, "skip_cluster_creation": False,
            "chart_version": sandbox.spec.chart.version, **params}
    run = dagbag.get_dag(BOOTSTRAP).test(run_conf=conf)
    return run.state, {ti.task_id: ti.state for ti in run.get_task_instances()}


def teardown(dagbag: Any, confirm: str, dry_run: bool = False) -> tuple[str, dict[str, str]]:
    run = dagbag.get_dag(TEARDOWN).test(run_conf={"confirm": confirm, "dry_run": dry_run})
    return run.state, {ti.task_id: ti.state for ti in run.get_task_instances()}


def helm(sandbox: Sandbox, *args: str) -> str:
    result = subprocess.run(["helm", *args], env={**sandbox.env(), "PATH": str(ROOT / ".tools" / "bin")},
                            capture_output=True, text=True, check=True)
    return result.stdout


def secret_value(sandbox: Sandbox, name: str, key: str) -> str:
    secret = sandbox.kube.get_object("Secret", name, sandbox.spec.namespace)
    assert secret is not None, f"Secret {name} is missing"
    return base64.b64decode(secret["data"][key]).decode()


def last_report(dag_id: str) -> dict[str, Any]:
    """The structured summary (XCom) of the Dag's last run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_id, task_id="summary").order_by(XComModel.timestamp.desc()).first()
        return dict(row.value)


def last_summary(dag_id: str) -> str:
    return render_report(last_report(dag_id))


def held_token_id(sandbox: Sandbox, secret_name: str) -> str:
    secret = sandbox.kube.get_object("Secret", secret_name, sandbox.spec.namespace)
    assert secret is not None
    return str(secret["metadata"]["annotations"]["remote-agents.astronomer.io/astro-token-id"])


def create_unheld_tokens(sandbox: Sandbox) -> None:
    """What a run killed between a token create and its Secret write leaves: live tokens of ours, in no Secret."""
    spec, hook = sandbox.spec, AstroHook(sandbox.spec.astro.connection_id, sandbox.spec.astro.organization_id)
    hook.create_agent_token(spec.astro.deployment_id, name=f"remote-agents-{spec.name}")
    hook.create_deployment_token(spec.astro.deployment_id, name=f"remote-agents-{spec.name}-registry")


def test_every_dag_file_parses_without_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert {BOOTSTRAP, TEARDOWN} <= set(dagbag.dag_ids)


def test_airflow_cli_lists_no_import_errors(airflow_db: None) -> None:
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "dags", "reserialize"], check=True, capture_output=True)
    listed = subprocess.run([*airflow, "dags", "list-import-errors", "--output", "json"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    # The CLI logs warnings on stdout too; the JSON document is the last line.
    assert json.loads(listed.stdout.strip().splitlines()[-1]) == []


def test_fresh_bootstrap_installs_agents_with_valid_values_live_tokens_and_exact_trust(
    dagbag: Any, clean: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a worker's working directory is not the project: chart.path is relative to the project
    state, tasks = bootstrap(dagbag, clean)

    assert state == "success", tasks
    assert tasks["helm_upgrade_install"] == tasks["ensure_irsa_role"] == tasks["ensure_agent_token"] == "success"
    spec = clean.spec
    values = json.loads(helm(clean, "get", "values", spec.release_name, "-n", spec.namespace, "-o", "json"))
    jsonschema.Draft202012Validator(json.loads((ROOT / "include/schemas/agent-values.schema.json").read_text())).validate(values)
    assert clean.astro.is_live_agent_token(secret_value(clean, spec.astro.agent_token_secret_name, "token"))
    pull = json.loads(secret_value(clean, spec.astro.registry_secret_name, ".dockerconfigjson"))
    assert set(pull["auths"]) == {"images.astronomer.cloud"}
    role = clean.aws.admin_client("iam").get_role(RoleName=naming.irsa_role_names(spec)[None])["Role"]
    (condition,) = [s["Condition"]["StringEquals"] for s in role["AssumeRolePolicyDocument"]["Statement"]]
    subjects = next(v for k, v in condition.items() if k.endswith(":sub"))
    assert sorted(subjects) == sorted(naming.service_account_subjects(spec))
    (nat_ip,) = [a["PublicIp"] for a in clean.aws.admin_client("ec2").describe_addresses()["Addresses"]]
    deployment = clean.astro.deployment(spec.astro.deployment_id)
    assert deployment.allowed_ip_address_ranges == sorted([*spec.astro.allowed_ip_ranges, f"{nat_ip}/32"])
    assert (deployment.task_log_bucket, deployment.task_log_url_pattern) == (
        f"s3://{spec.backends.logs.bucket}/{spec.backends.logs.prefix}", LOG_FILENAME_TEMPLATE)
    assert "**27 created, 1 updated**" in last_summary(BOOTSTRAP)  # updated: the Deployment's settings


def test_second_bootstrap_makes_no_mutating_call_anywhere(dagbag: Any, clean: Sandbox) -> None:
    assert bootstrap(dagbag, clean)[0] == "success"
    clean.forget_calls()

    state, _ = bootstrap(dagbag, clean)

    assert state == "success"
    assert clean.mutating_calls() == {"aws": [], "kubernetes": [], "astro": []}
    assert "created" not in last_summary(BOOTSTRAP) and "unchanged" in last_summary(BOOTSTRAP)


def test_dry_run_on_an_empty_environment_changes_nothing_and_plans_every_resource(dagbag: Any, clean: Sandbox) -> None:
    namespaces_before = clean.kube.list_objects("namespaces")

    state, tasks = bootstrap(dagbag, clean, dry_run=True)

    assert state == "success", tasks
    assert clean.mutating_calls() == {"aws": [], "kubernetes": [], "astro": []}
    assert clean.kube.list_objects("namespaces") == namespaces_before
    report = last_report(BOOTSTRAP)
    assert (report["outcome"], report["tags"], report["failures"]) == ("planned", ["dry_run"], [])
    plan = render_report(report)
    assert plan.startswith("# Bootstrap plan (dry run: nothing was changed) of environment `sandbox`")
    for resource in ("eks:cluster/remote-agents-sandbox", "iam:role/sandbox-remote-agents", "k8s:Namespace/astro-agents",
                     "k8s:Secret/astro-agents/astro-agent-token", "helm:release/astro-agents/astro-agent"):
        assert f"`{resource}` | create" in plan, resource
    assert tasks["announce_environment"] == "skipped"  # a plan schedules no health check


def test_unready_release_fails_with_the_workload_and_reason_then_a_rerun_converges(
    dagbag: Any, clean: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    worker = f"{clean.spec.resource_name_prefix}-worker-heavy"
    clean.kube.faults.never_ready(namespace=clean.spec.namespace, name=worker, reason="ImagePullBackOff")

    state, tasks = bootstrap(dagbag, clean)

    assert state == "failed" and tasks["helm_upgrade_install"] == "failed"
    output = capfd.readouterr().out
    assert worker in output and "ImagePullBackOff" in output
    report = last_report(BOOTSTRAP)
    (failure,) = report["failures"]
    assert report["outcome"] == "failed" and failure["task_id"] == "helm_upgrade_install"
    assert worker in failure["error"] and "ImagePullBackOff" in failure["error"]
    summary = render_report(report)
    assert summary.startswith("# Bootstrap of environment `sandbox` FAILED\n\n**Failed:**\n\n- `helm_upgrade_install`: ")
    assert "Done before the failure: " in summary and "runs the self-tests now" not in summary
    assert "then trigger `remote_agents_bootstrap__sandbox` again" in summary
    clean.kube.faults.clear()
    state, tasks = bootstrap(dagbag, clean)
    assert state == "success", tasks


def test_astro_api_error_is_retried_within_the_task(dagbag: Any, clean: Sandbox) -> None:
    clean.astro.fail("*agent-tokens*", status=500, count=1)

    state, tasks = bootstrap(dagbag, clean)

    assert state == "success", tasks
    assert len(clean.astro.live_agent_tokens()) == 1


def test_aws_throttling_fails_the_cluster_task_by_name_then_a_rerun_converges(
    dagbag: Any, clean: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    clean.aws.throttle("eks", "CreateCluster", count=50)

    state, tasks = bootstrap(dagbag, clean)

    assert state == "failed" and tasks["ensure_cluster"] == "failed"
    assert "CreateCluster" in capfd.readouterr().out
    report = last_report(BOOTSTRAP)
    assert [f["task_id"] for f in report["failures"]] == ["ensure_cluster"] and "CreateCluster" in report["failures"][0]["error"]
    assert {"ensure_namespace", "helm_upgrade_install"} <= set(report["not_attempted"])
    assert "**Not attempted** (a task before them failed): " in render_report(report)
    clean.aws.clear_faults()
    assert bootstrap(dagbag, clean)[0] == "success"
    iam = clean.aws.admin_client("iam")
    assert sorted(r["RoleName"] for r in iam.list_roles()["Roles"]) == sorted(
        [*naming.eks_role_names(clean.spec).values(), *naming.irsa_role_names(clean.spec).values()]
    )
    assert len(clean.aws.admin_client("eks").list_clusters()["clusters"]) == 1


def test_skip_cluster_creation_refuses_a_missing_cluster_then_uses_the_existing_one_as_it_is(
    dagbag: Any, clean: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    state, tasks = bootstrap(dagbag, clean, skip_cluster_creation=True)

    assert state == "failed" and tasks["ensure_cluster"] == "failed"
    assert "remote-agents-sandbox does not exist; create_if_missing is off" in capfd.readouterr().out
    assert clean.aws.request_log.mutating_calls == []
    assert bootstrap(dagbag, clean)[0] == "success"
    clean.aws.request_log.clear()

    state, tasks = bootstrap(dagbag, clean, skip_cluster_creation=True)

    assert state == "success", tasks
    assert clean.aws.request_log.mutating_calls == []


def test_tokens_appear_in_no_log_xcom_serialized_dag_or_helm_values(
    dagbag: Any, clean: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    assert bootstrap(dagbag, clean)[0] == "success"
    spec = clean.spec
    token = secret_value(clean, spec.astro.agent_token_secret_name, "token")
    registry_token = json.loads(secret_value(clean, spec.astro.registry_secret_name, ".dockerconfigjson"))
    registry_password = next(iter(registry_token["auths"].values()))["password"]
    with create_session() as session:
        xcoms = json.dumps([str(row.value) for row in session.query(XComModel).filter_by(dag_id=BOOTSTRAP)])
        serialized = json.dumps(SerializedDagModel.get(BOOTSTRAP, session=session).data)
    places = {
        "task logs": capfd.readouterr().out,
        "XCom": xcoms,
        "serialized Dag": serialized,
        "helm values": helm(clean, "get", "values", spec.release_name, "-n", spec.namespace, "--all", "-o", "json"),
    }
    for secret in (token, registry_password):
        assert len(secret) > 20
        assert [place for place, text in places.items() if secret in text] == []


def test_the_chart_version_param_takes_semver_with_pre_releases_and_refuses_the_rest(dagbag: Any) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dagbag.get_dag(BOOTSTRAP).params)
    for version in ("2.3.3", "2.3.3-rc.1", "2.4.0-alpha.2+build.7"):
        params.update({"chart_version": version})
        assert params.validate()["chart_version"] == version
    for version in ("2.3", "v2.3.3", "2.3.3-"):
        with pytest.raises(ParamValidationError):
            params.update({"chart_version": version})
            params.validate()


def test_teardown_cannot_be_triggered_with_a_wrong_or_missing_confirmation(dagbag: Any, clean: Sandbox) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.get_dag(TEARDOWN)
    params = ParamsDict(dag.params)  # what the trigger form and the REST API validate the run's conf with
    for typed in ("production", "", None):
        with pytest.raises(ParamValidationError):
            params.update({"confirm": typed})
            params.validate()
    with pytest.raises(ParamValidationError):
        teardown(dagbag, confirm="production")
    params.update({"confirm": clean.spec.name})
    assert params.validate()["confirm"] == clean.spec.name
    assert clean.mutating_calls() == {"aws": [], "kubernetes": [], "astro": []}


def test_teardown_removes_everything_of_ours_and_nothing_else(dagbag: Any, clean: Sandbox) -> None:
    spec = clean.spec
    iam = clean.aws.admin_client("iam")
    iam.create_role(RoleName="customer-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    assert bootstrap(dagbag, clean)[0] == "success"
    clean.kube.faults.clear()
    subprocess.run(["kubectl", "create", "namespace", "customer-apps"], env={**clean.env(), "PATH": str(ROOT / ".tools/bin")},
                   check=True, capture_output=True)
    AstroHook(spec.astro.connection_id).update_remote_execution(
        spec.astro.deployment_id,
        allowed_ip_address_ranges=[*clean.astro.deployment(spec.astro.deployment_id).allowed_ip_address_ranges,
                                   "203.0.113.9/32"])

    write_canary(spec, spec.aws_conn_id)  # as every health run does
    create_unheld_tokens(clean)  # a bootstrap killed after its token create, before its Secret write
    Variable.set(naming.incident_variable(spec.name, "health"), json.dumps({"failed_checks": ["xcom"]}))

    state, tasks = teardown(dagbag, confirm=spec.name)

    assert state == "success", tasks
    assert clean.owned_leftovers() == {"aws": [], "kubernetes": [], "astro": []}
    assert [Variable.get(naming.incident_variable(spec.name, dag), default_var=None) for dag in naming.INCIDENT_DAGS] == [
        None, None]
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["customer-role"]
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    assert clean.aws.admin_client("eks").list_clusters()["clusters"] == []
    vpcs = clean.aws.admin_client("ec2").describe_vpcs()["Vpcs"]
    assert all(vpc.get("IsDefault") for vpc in vpcs)
    namespaces = {ns["metadata"]["name"] for ns in clean.kube.list_objects("namespaces")}
    assert spec.namespace not in namespaces and "customer-apps" in namespaces
    assert clean.astro.live_agent_tokens() == [] and clean.astro.live_api_tokens() == []
    deployment = clean.astro.deployment(spec.astro.deployment_id)
    assert deployment.allowed_ip_address_ranges == ["203.0.113.9/32"]
    assert (deployment.task_log_bucket, deployment.task_log_url_pattern) == (None, None)
    assert teardown(dagbag, confirm=spec.name)[0] == "success"  # a second teardown finds nothing and is fine


def test_teardown_after_the_cluster_is_gone_still_revokes_both_tokens(dagbag: Any, clean: Sandbox) -> None:
    spec = clean.spec
    assert bootstrap(dagbag, clean)[0] == "success"
    assert spec.eks is not None
    eks = clean.aws.admin_client("eks")
    for group in eks.list_nodegroups(clusterName=spec.eks.name)["nodegroups"]:
        eks.delete_nodegroup(clusterName=spec.eks.name, nodegroupName=group)
    eks.delete_cluster(name=spec.eks.name)  # someone deleted it in the console

    state, tasks = teardown(dagbag, confirm=spec.name)

    assert state == "success", tasks
    assert tasks["revoke_agent_token"] == tasks["revoke_registry_token"] == "success"
    assert clean.astro.live_agent_tokens() == [] and clean.astro.live_api_tokens() == []


def test_tokens_a_killed_run_created_are_revoked_by_the_next_bootstrap(dagbag: Any, clean: Sandbox) -> None:
    spec = clean.spec
    create_unheld_tokens(clean)  # killed before the first Secret was written

    assert bootstrap(dagbag, clean)[0] == "success"

    assert [t.id for t in clean.astro.live_agent_tokens()] == [held_token_id(clean, spec.astro.agent_token_secret_name)]
    assert [t.id for t in clean.astro.live_api_tokens()] == [held_token_id(clean, spec.astro.registry_secret_name)]


def test_a_rotation_that_could_not_revoke_the_old_token_is_finished_by_the_next_run(dagbag: Any, clean: Sandbox) -> None:
    spec = clean.spec
    assert bootstrap(dagbag, clean)[0] == "success"
    clean.astro.fail("*/agent-tokens/*", method="DELETE", count=100)  # the old token's revoke keeps failing

    assert bootstrap(dagbag, clean, rotate_tokens=True)[0] == "failed"
    assert len(clean.astro.live_agent_tokens()) == 2
    clean.astro.clear_faults()
    assert bootstrap(dagbag, clean)[0] == "success"

    assert [t.id for t in clean.astro.live_agent_tokens()] == [held_token_id(clean, spec.astro.agent_token_secret_name)]


def test_open_lineage_api_key_secret_is_filled_from_its_connection_before_the_install(dagbag: Any) -> None:
    from remote_agents import naming
    from remote_agents.spec import load_spec

    spec = load_spec(ROOT / "include" / "environments" / "multi-queue.yaml")
    dag = dagbag.get_dag("remote_agents_bootstrap__multi-queue")
    task = dag.get_task("ensure_openlineage_secret")
    assert (task.secret_name, task.secret_key, task.source_conn_id, task.source_field) == (
        naming.openlineage_secret_name(spec), "api-key", spec.chart.open_lineage_conn_id, "password")
    assert "helm_upgrade_install" in task.get_flat_relative_ids(upstream=False)
