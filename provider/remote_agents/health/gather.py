"""Gathering health evidence: the reads behind the pure diagnoses in ``diagnose.py``.

Each function reads one system through its hook (Kubernetes via ``kubernetes_hook``, helm via
``HelmHook``, Astro via ``AstroHook``, the Deployment's REST API via ``DeploymentHook``, S3 and
Secrets Manager via the amazon hooks with the management Connection) and returns evidence
dataclasses holding no secret: canary values leave this module only as digests.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import httpx
from botocore.exceptions import ClientError

from remote_agents import naming
from remote_agents.health import contract
from remote_agents.health.diagnose import (
    DRIFT,
    Expectations,
    Finding,
    QueueEvidence,
    ReleaseEvidence,
    SelfTestEvidence,
    TaskEvidence,
    TokenEvidence,
    WorkloadEvidence,
)
from remote_agents.health.drift import (
    ChartObjectState,
    ClusterState,
    NamespaceState,
    NodegroupState,
    OidcProviderState,
    ReleaseState,
    RemoteExecutionState,
    RoleState,
    SecretState,
    ServiceAccountState,
)
from remote_agents.hooks.cluster import ClusterAccess, kubernetes_hook
from remote_agents.hooks.deployment import AirflowRestClient, api_error
from remote_agents.render.values import STATE_STORE_SINCE
from remote_agents.spec import EnvironmentSpec
from remote_agents.triggers.rollout import pod_problems

TOKEN_ID_ANNOTATION = "remote-agents.astronomer.io/astro-token-id"


# -- expectations ------------------------------------------------------------------------------


def expectations(spec: EnvironmentSpec, **facts: Any) -> Expectations:
    """What healthy means for ``spec``; ``facts`` are the management side's reads (canary, buckets)."""
    backends = spec.backends
    return Expectations(
        environment=spec.name,
        queues=tuple(worker.queue for worker in spec.workers),
        xcom_bucket=backends.xcom.bucket,
        xcom_prefix=backends.xcom.prefix,
        log_bucket=backends.logs.bucket,
        log_prefix=backends.logs.prefix,
        variables_prefix=backends.secrets.variables_prefix,
        connections_prefix=backends.secrets.connections_prefix,
        timeout_seconds=float(spec.health.selftest_timeout_seconds),
        queue_subjects={w.queue: naming.service_account_subject(spec, w)
                        for w in naming.agent_workloads(spec, include_sentinel=False) if w.queue},
        state_store_location=(f"s3://{backends.xcom.bucket}/{spec.state_store.prefix}"
                              if spec.state_store and spec.chart.parsed_version >= STATE_STORE_SINCE else None),
        queue_roles={worker.queue: naming.worker_role_name(spec) for worker in spec.workers} if spec.irsa else {},
        static_credentials_conn_id=None if spec.irsa else spec.identity.aws_conn_id,
        **facts,
    )


def static_identity_arn(spec: EnvironmentSpec) -> str:
    """The ARN STS reports for the keys the on-prem agents hold ("" with IRSA, or when they do not resolve)."""
    if spec.irsa:
        return ""
    from airflow.providers.amazon.aws.hooks.sts import StsHook
    from botocore.exceptions import BotoCoreError

    try:
        return str(StsHook(aws_conn_id=spec.identity.aws_conn_id, region_name=spec.backends.aws_region)
                   .conn.get_caller_identity()["Arn"])
    except (ClientError, BotoCoreError):
        return ""


# -- canary ------------------------------------------------------------------------------------


def write_canary(spec: EnvironmentSpec, aws_conn_id: str | None) -> dict[str, str]:
    """A fresh random canary as a Variable and a Connection; returns the nonce and the expected digest.

    The value is random and new on every run, so an agent that returns its digest read it from the
    backend after this call: not from a cache, an env var or an earlier run.
    """
    from airflow.providers.amazon.aws.hooks.secrets_manager import SecretsManagerHook
    from airflow.sdk.log import mask_secret

    value = secrets.token_urlsafe(24)
    mask_secret(value)
    nonce = secrets.token_hex(8)
    client = SecretsManagerHook(aws_conn_id=aws_conn_id, region_name=spec.backends.aws_region).conn
    names = naming.canary_secret_names(spec)
    bodies = {"variable": value, "connection": json.dumps({"conn_type": "generic", "password": value})}
    for kind, name in names.items():
        try:
            client.put_secret_value(SecretId=name, SecretString=bodies[kind])
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            client.create_secret(Name=name, SecretString=bodies[kind],
                                 Tags=[{"Key": k, "Value": v} for k, v in naming.ownership_tags(spec).items()])
    return {"nonce": nonce, "digest": contract.canary_digest(nonce, value)}


def canary_exists(spec: EnvironmentSpec, aws_conn_id: str | None) -> bool:
    from airflow.providers.amazon.aws.hooks.secrets_manager import SecretsManagerHook

    client = SecretsManagerHook(aws_conn_id=aws_conn_id, region_name=spec.backends.aws_region).conn
    try:
        client.describe_secret(SecretId=naming.canary_secret_names(spec)["variable"])
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return True


def bucket_facts(spec: EnvironmentSpec, aws_conn_id: str | None) -> dict[str, bool]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=aws_conn_id, region_name=spec.backends.aws_region)
    return {
        "xcom_bucket_exists": hook.check_for_bucket(spec.backends.xcom.bucket),
        "log_bucket_exists": hook.check_for_bucket(spec.backends.logs.bucket),
    }


# -- the agents on Kubernetes --------------------------------------------------------------------


def gather_workloads(spec: EnvironmentSpec, access: ClusterAccess) -> list[WorkloadEvidence]:
    """Each agent Deployment the chart creates: ready replicas, restarts and why Pods are not ready."""
    hook = kubernetes_hook(access)
    apps, core = hook.apps_v1_client, hook.core_v1_client
    pods = json.loads(core.list_namespaced_pod(spec.namespace, _preload_content=False).data).get("items", [])
    deployments = {
        d["metadata"]["name"]: d
        for d in json.loads(apps.list_namespaced_deployment(spec.namespace, _preload_content=False).data).get("items", [])
    }
    evidence = []
    for workload in naming.agent_workloads(spec):
        deployment = deployments.get(workload.name)
        if deployment is None:
            evidence.append(WorkloadEvidence(workload.name, workload.component, workload.queue, exists=False))
            continue
        selector = (deployment["spec"].get("selector") or {}).get("matchLabels") or {}
        own = [p for p in pods if selector and selector.items() <= (p["metadata"].get("labels") or {}).items()]
        problems = sorted({problem for pod in own for problem in pod_problems(pod)})
        restarts = sum(
            c.get("restartCount", 0) for pod in own for c in (pod.get("status") or {}).get("containerStatuses") or []
        )
        evidence.append(WorkloadEvidence(
            workload.name, workload.component, workload.queue, exists=True,
            desired=int(deployment["spec"].get("replicas", 1)),
            ready=int((deployment.get("status") or {}).get("readyReplicas", 0)),
            restarts=restarts, problems=tuple(problems),
        ))
    return evidence


def gather_release(spec: EnvironmentSpec, access: ClusterAccess) -> ReleaseEvidence:
    from remote_agents.hooks.helm import HelmHook

    release = HelmHook(access).get_release(spec.release_name, spec.namespace)
    if release is None:
        return ReleaseEvidence(spec.release_name, spec.namespace, None)
    return ReleaseEvidence(spec.release_name, spec.namespace, release.status.value, release.revision,
                           release.chart_version, spec.chart.version)


def gather_tokens(spec: EnvironmentSpec, access: ClusterAccess) -> list[TokenEvidence]:
    """The agent token and the registry pull token: the ids their Secrets record, and what Astro says of them."""
    from remote_agents.hooks.astro import AstroHook

    astro = AstroHook(spec.astro.connection_id, spec.astro.organization_id)
    deployment = spec.astro.deployment_id
    return [
        _token_evidence(spec, access, "agent token", spec.astro.agent_token_secret_name,
                        lambda token_id: astro.get_agent_token(deployment, token_id)),
        _token_evidence(spec, access, "registry token", spec.astro.registry_secret_name, astro.get_api_token),
    ]


def _token_evidence(spec: EnvironmentSpec, access: ClusterAccess, kind: str, name: str,
                    fetch: Callable[[str], dict[str, Any] | None]) -> TokenEvidence:
    from remote_agents.errors import AstroApiError
    from remote_agents.hooks.kubernetes import ClusterObjects

    secret = ClusterObjects(access).get("Secret", name, spec.namespace)
    if secret is None:
        return TokenEvidence(name, secret_exists=False, token_id=None, live=None, kind=kind)
    token_id = (secret["metadata"].get("annotations") or {}).get(TOKEN_ID_ANNOTATION)
    if not token_id:
        return TokenEvidence(name, True, None, None, kind=kind)
    try:
        token = fetch(token_id)
    except AstroApiError as error:
        return TokenEvidence(name, True, token_id, None, str(error), kind=kind)
    live = _live(token)
    if not live:
        return TokenEvidence(name, True, token_id, live, kind=kind)
    return TokenEvidence(name, True, token_id, live, kind=kind, days_left=_days_left(token),
                         expires_at=(token or {}).get("endAt"))


def _live(token: dict[str, Any] | None) -> bool:
    days_left = _days_left(token)
    return token is not None and (days_left is None or days_left > 0)


def _days_left(token: dict[str, Any] | None) -> float | None:
    from datetime import UTC, datetime

    end = (token or {}).get("endAt")
    if not end:
        return None
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds() / 86400


# -- the self-test run ---------------------------------------------------------------------------


def gather_selftest(
    client: AirflowRestClient,
    run: dict[str, Any],
    spec: EnvironmentSpec,
    object_exists: Callable[[str, str], bool],
) -> SelfTestEvidence:
    """Read a finished (or timed-out) self-test run through the API; ``object_exists(bucket, key)`` checks S3.

    ``run`` is the self-test operator's result: run_id, state, waited_seconds.
    """
    dag_id, run_id = contract.SELFTEST_DAG_ID, run["run_id"]
    try:
        instances = {ti["task_id"]: ti for ti in client.task_instances(dag_id, run_id)}
    except (httpx.HTTPStatusError, httpx.TransportError) as error:
        raise api_error(f"reading the task instances of {dag_id} run {run_id}", client.base_url, error) from None
    reader = _RunReader(client, dag_id, run_id, instances)
    queues = {
        queue: _queue_evidence(reader, queue, spec, object_exists)
        for queue in _queues_in_run(instances)
    }
    deferred = reader.task(contract.DEFERRED_WAIT, None) if contract.DEFERRED_WAIT in instances else None
    return SelfTestEvidence(run_id, str(run["state"]), float(run.get("waited_seconds", 0.0)), queues, deferred)


def _queues_in_run(instances: dict[str, dict[str, Any]]) -> list[str]:
    return sorted({ti["queue"] for task_id, ti in instances.items()
                   if task_id.endswith(f".{contract.XCOM_PRODUCE}") and ti.get("queue")})


class _RunReader:
    """Reads of one run, each mapped to None on a 404 (a task that never ran has no XCom or log)."""

    def __init__(self, client: AirflowRestClient, dag_id: str, run_id: str, instances: dict[str, dict[str, Any]]):
        self.client, self.dag_id, self.run_id, self.instances = client, dag_id, run_id, instances

    def task(self, task_id: str, queue: str | None) -> TaskEvidence:
        ti = self.instances.get(task_id) or {}
        state = ti.get("state")
        error = self.failure(task_id, int(ti.get("try_number") or 1)) if state in ("failed", "up_for_retry") else None
        return TaskEvidence(task_id, state, queue or ti.get("queue"), error)

    def xcom(self, task_id: str) -> Any:
        return self._read(lambda: self.client.xcom(self.dag_id, self.run_id, task_id))

    def events(self, task_id: str, try_number: int | None = None) -> list[dict[str, Any]] | str:
        """The task's log events, or why the API could not serve them (a log it cannot read is evidence)."""
        number = try_number or int((self.instances.get(task_id) or {}).get("try_number") or 1)
        try:
            return self.client.log_events(self.dag_id, self.run_id, task_id, number)
        except httpx.HTTPStatusError as error:
            return f"the API answered HTTP {error.response.status_code} for the log"

    def failure(self, task_id: str, try_number: int) -> str | None:
        """The exception the task logged ("Type: message", the last in its chain), if the log is readable."""
        events = self.events(task_id, try_number)
        if isinstance(events, str):
            return None
        details = [d for e in events if e.get("event") == "Task failed with exception" for d in e.get("error_detail", [])]
        if details:
            return "; ".join(f"{d.get('exc_type')}: {d.get('exc_value')}" for d in details)
        errors = [str(e.get("event")) for e in events if str(e.get("level", "")).lower() == "error"]
        return errors[-1] if errors else None

    @staticmethod
    def _read(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except httpx.HTTPStatusError as error:
            if error.response.status_code == 404:
                return None
            raise


def _queue_evidence(
    reader: _RunReader, queue: str, spec: EnvironmentSpec, object_exists: Callable[[str, str], bool]
) -> QueueEvidence:
    ids = {name: contract.queue_task_id(queue, name) for name in contract.QUEUE_TASKS}
    tasks = {name: reader.task(task_id, queue) for name, task_id in ids.items()}
    evidence: dict[str, Any] = {"queue": queue, "tasks": tasks}
    if tasks[contract.XCOM_PRODUCE].succeeded:
        reference = reader.xcom(ids[contract.XCOM_PRODUCE])
        evidence["xcom_reference"] = reference
        if isinstance(reference, str) and reference.startswith("s3://"):
            bucket, _, key = reference.split("@", 1)[-1].removeprefix("s3://").partition("/")
            evidence["xcom_object_found"] = object_exists(bucket, key)
    if tasks[contract.XCOM_CONSUME].succeeded:
        evidence["consume"] = reader.xcom(ids[contract.XCOM_CONSUME])
    if tasks[contract.READ_CANARY].succeeded:
        evidence["canary"] = reader.xcom(ids[contract.READ_CANARY])
    if tasks[contract.IDENTITY].succeeded:
        evidence["identity_arn"] = (reader.xcom(ids[contract.IDENTITY]) or {}).get("arn")
    if tasks[contract.LOG_MARKER].succeeded:
        evidence.update(_log_evidence(reader, ids[contract.LOG_MARKER], queue, spec, object_exists))
    return QueueEvidence(**evidence)


def _log_evidence(
    reader: _RunReader, task_id: str, queue: str, spec: EnvironmentSpec, object_exists: Callable[[str, str], bool]
) -> dict[str, Any]:
    logs = spec.backends.logs
    marker = reader.xcom(task_id) or ""
    try_number = int((reader.instances.get(task_id) or {}).get("try_number") or 1)
    key = f"{logs.prefix}/dag_id={reader.dag_id}/run_id={reader.run_id}/task_id={task_id}/attempt={try_number}.log"
    events = reader.events(task_id)
    texts = [] if isinstance(events, str) else [str(event.get("event", "")) for event in events]
    source = next((text for text in texts if text.startswith(("s3://", "/"))), None)
    return {
        "marker_in_api_log": bool(marker) and marker in texts,
        "api_log_source": events if isinstance(events, str) else source,
        "log_object_key": key,
        "log_object_found": object_exists(logs.bucket, key),
    }


def s3_object_exists(aws_conn_id: str | None, region_name: str | None) -> Callable[[str, str], bool]:
    """``object_exists(bucket, key)`` with the management Connection; a missing bucket is False."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=aws_conn_id, region_name=region_name)

    def object_exists(bucket: str, key: str) -> bool:
        try:
            hook.conn.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise
        return True

    return object_exists



# -- drift: the live state the drift Dag compares with the spec -------------------------------------


def drift_identity(spec: EnvironmentSpec) -> dict[str, str | None]:
    """The account and the cluster's OIDC issuer the desired IAM state is rendered with; both None
    without IRSA (no role to compare) and the issuer None when the cluster is gone."""
    if not (spec.irsa and spec.eks):
        return {"account_id": None, "oidc_issuer": None}
    from airflow.providers.amazon.aws.hooks.sts import StsHook

    from remote_agents.hooks.aws import EksClusterHook

    account = str(StsHook(aws_conn_id=spec.aws_conn_id).conn.get_caller_identity()["Account"])
    cluster = EksClusterHook(aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region).cluster(spec.eks.name)
    issuer = ((cluster or {}).get("identity") or {}).get("oidc", {}).get("issuer")
    return {"account_id": account, "oidc_issuer": issuer}


def desired_role_arns(spec: EnvironmentSpec, account_id: str | None) -> dict[str | None, str] | None:
    from remote_agents.render.policies import build_role_arns

    return build_role_arns(spec, account_id) if spec.irsa and account_id else None


def gather_release_state(spec: EnvironmentSpec, access: ClusterAccess) -> ReleaseState:
    """The installed chart version and the user-supplied values (what ``helm upgrade`` was given)."""
    from remote_agents.hooks.helm import HelmHook

    hook = HelmHook(access)
    release = hook.get_release(spec.release_name, spec.namespace)
    if release is None:
        return ReleaseState(spec.release_name, spec.namespace, None)
    return ReleaseState(spec.release_name, spec.namespace, release.chart_version,
                        hook.get_values(spec.release_name, spec.namespace))


def gather_chart_objects(spec: EnvironmentSpec, access: ClusterAccess) -> list[ChartObjectState]:
    """Each object of the release's manifest with its live copy. Secrets are left out (their data is
    secret; the secrets area checks the ones the chart references), as are kinds ``ClusterObjects``
    cannot read (the chart's are all in it)."""
    from remote_agents.hooks.helm import HelmHook
    from remote_agents.hooks.kubernetes import KINDS, ClusterObjects

    hook = HelmHook(access)
    if hook.get_release(spec.release_name, spec.namespace) is None:
        return []  # the release area reports it missing
    objects = ClusterObjects(access)
    states = []
    for rendered in hook.get_manifest(spec.release_name, spec.namespace):
        kind, name = rendered["kind"], rendered["metadata"]["name"]
        if kind == "Secret" or kind not in KINDS:
            continue
        namespace = (rendered["metadata"].get("namespace") or spec.namespace) if KINDS[kind].namespaced else None
        states.append(ChartObjectState(kind, name, namespace, rendered, objects.get(kind, name, namespace)))
    return states


def gather_service_accounts(spec: EnvironmentSpec, access: ClusterAccess) -> list[ServiceAccountState]:
    """The agents' ServiceAccounts (the ones the IRSA trust names) and their role annotation."""
    from remote_agents.hooks.kubernetes import ClusterObjects
    from remote_agents.render.values import ROLE_ARN_ANNOTATION

    listed = {sa["metadata"]["name"]: sa for sa in ClusterObjects(access).list("ServiceAccount", spec.namespace)}
    states = []
    for workload in naming.agent_workloads(spec, include_sentinel=False):
        account = listed.get(workload.service_account)
        annotations = ((account or {}).get("metadata") or {}).get("annotations") or {}
        states.append(ServiceAccountState(workload.service_account, spec.namespace, account is not None,
                                          annotations.get(ROLE_ARN_ANNOTATION)))
    return states


def gather_roles(spec: EnvironmentSpec) -> list[RoleState]:
    """Each IRSA role's trust, inline policies and attached managed policies, as IAM holds them."""
    from remote_agents.hooks.aws import IamHook

    iam = IamHook(aws_conn_id=spec.aws_conn_id)
    states = []
    for name in naming.irsa_role_names(spec).values():
        role = iam.get_role(name)
        if role is None:
            states.append(RoleState(name, exists=False))
            continue
        inline = {policy: iam.inline_policy(name, policy) for policy in iam.inline_policy_names(name)}
        states.append(RoleState(
            name, True, role.get("AssumeRolePolicyDocument"),
            {policy: document for policy, document in inline.items() if document is not None},
            tuple(iam.attached_policy_arns(name)),
        ))
    return states


def gather_secrets(spec: EnvironmentSpec, access: ClusterAccess) -> list[SecretState]:
    """The Secrets the values reference by name: their data keys (never values) and, for the token
    Secrets, whether Astro still lists the token whose id the bootstrap recorded."""
    from remote_agents.errors import AstroApiError
    from remote_agents.hooks.astro import AstroHook
    from remote_agents.hooks.kubernetes import ClusterObjects
    from remote_agents.render.manifests import AGENT_TOKEN_KEY, DOCKERCONFIGJSON_KEY
    from remote_agents.render.values import STATIC_CREDENTIAL_KEYS
    from remote_agents.spec import StaticCredentialsIdentitySpec

    astro = AstroHook(spec.astro.connection_id, spec.astro.organization_id)
    deployment = spec.astro.deployment_id
    wanted: list[tuple[str, str, tuple[str, ...], Callable[[str], dict[str, Any] | None] | None]] = [
        (spec.astro.agent_token_secret_name, "agent token", (AGENT_TOKEN_KEY,),
         lambda token_id: astro.get_agent_token(deployment, token_id)),
        (spec.astro.registry_secret_name, "registry pull", (DOCKERCONFIGJSON_KEY,), astro.get_api_token),
    ]
    if isinstance(spec.identity, StaticCredentialsIdentitySpec):
        wanted.append((spec.identity.secret_name, "AWS credentials", STATIC_CREDENTIAL_KEYS, None))
    objects = ClusterObjects(access)
    states = []
    for name, purpose, keys, fetch in wanted:
        secret = objects.get("Secret", name, spec.namespace)
        if secret is None:
            states.append(SecretState(name, spec.namespace, purpose, False, keys, tracks_token=fetch is not None))
            continue
        present = tuple(sorted(key for key, value in (secret.get("data") or {}).items() if value))
        token_id = (secret["metadata"].get("annotations") or {}).get(TOKEN_ID_ANNOTATION)
        live, error = None, None
        if fetch is not None and token_id:
            try:
                live = _live(fetch(token_id))
            except AstroApiError as problem:
                error = str(problem)
        states.append(SecretState(name, spec.namespace, purpose, True, keys, present, fetch is not None,
                                  token_id, live, error))
    return states


def gather_cluster(spec: EnvironmentSpec) -> ClusterState:
    """The EKS cluster's version and state, and every node group it has (ours or not)."""
    from remote_agents.hooks.aws import EksClusterHook

    assert spec.eks is not None
    eks = EksClusterHook(aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region)
    cluster = eks.cluster(spec.eks.name)
    if cluster is None:
        return ClusterState(spec.eks.name, None)
    groups = []
    for name in eks.nodegroup_names(spec.eks.name):
        group = eks.nodegroup(spec.eks.name, name)
        if group is not None:
            groups.append(NodegroupState(
                name, str(group.get("status")), dict(group.get("scalingConfig") or {}),
                tuple(group.get("instanceTypes") or ()), group.get("amiType"), group.get("diskSize"),
                dict(group.get("labels") or {}), dict(group.get("tags") or {}),
            ))
    return ClusterState(spec.eks.name, cluster.get("version"), cluster.get("status"), tuple(groups))


def gather_oidc_provider(spec: EnvironmentSpec, issuer: str | None) -> OidcProviderState:
    from remote_agents.hooks.aws import IamHook
    from remote_agents.operators.irsa import issuer_host

    if issuer is None:
        return OidcProviderState(None, False)
    provider = IamHook(aws_conn_id=spec.aws_conn_id).find_oidc_provider(issuer_host(issuer))
    if provider is None:
        return OidcProviderState(issuer, False)
    return OidcProviderState(issuer, True, tuple(provider.get("ClientIDList") or ()),
                             tuple(provider.get("ThumbprintList") or ()))


def gather_namespace(spec: EnvironmentSpec, access: ClusterAccess) -> NamespaceState:
    from remote_agents.hooks.kubernetes import ClusterObjects

    namespace = ClusterObjects(access).get("Namespace", spec.namespace, None)
    if namespace is None:
        return NamespaceState(spec.namespace, False)
    return NamespaceState(spec.namespace, True, dict(namespace["metadata"].get("labels") or {}))


def gather_remote_execution(spec: EnvironmentSpec) -> RemoteExecutionState:
    from remote_agents.hooks.astro import AstroHook

    deployment = AstroHook(spec.astro.connection_id, spec.astro.organization_id).get_deployment(spec.astro.deployment_id)
    settings = deployment.get("remoteExecution") or {}
    return RemoteExecutionState(
        spec.astro.deployment_id, bool(settings.get("enabled")), tuple(settings.get("allowedIpAddressRanges") or ()),
        settings.get("taskLogBucket"), settings.get("taskLogUrlPattern"),
    )


def egress_ranges(spec: EnvironmentSpec) -> list[str]:
    """The ``/32`` of the elastic IP of the NAT gateway the bootstrap made for this spec's VPC (none
    when the spec brings its subnets, or the VPC is gone): the agents' calls to Astro leave from it."""
    if spec.eks is None or spec.eks.subnet_ids:
        return []
    from remote_agents.hooks.aws import VpcHook
    from remote_agents.render.cluster import build_vpc_plan

    tags = {**naming.ownership_tags(spec), "Name": build_vpc_plan(spec)["nat_gateway"]["tags"]["Name"]}
    addresses = VpcHook(aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region).find("addresses", tags)
    return [f"{address['PublicIp']}/32" for address in addresses if address.get("PublicIp")]


def evaluate_drift(area: str, spec: EnvironmentSpec, access: ClusterAccess, identity: dict[str, str | None]) -> list[Finding]:
    """One drift area's findings: read it live, render the desired state, compare.

    ``identity`` is ``drift_identity(spec)``, read once per run and shared by the areas.
    """
    from remote_agents.health import drift
    from remote_agents.render.policies import build_irsa_policies
    from remote_agents.render.values import build_values

    role_arns = desired_role_arns(spec, identity.get("account_id"))
    if area == drift.CLUSTER:
        from remote_agents.render.cluster import build_eks_cluster_inputs

        assert spec.eks is not None
        return drift.compare_cluster(gather_cluster(spec), spec.eks.kubernetes_version,
                                     build_eks_cluster_inputs(spec)["nodegroup_requests"], naming.ownership_tags(spec))
    if area == drift.OIDC_PROVIDER:
        from remote_agents.operators.irsa import EKS_OIDC_THUMBPRINT, STS_AUDIENCE

        return drift.compare_oidc_provider(gather_oidc_provider(spec, identity.get("oidc_issuer")),
                                           [STS_AUDIENCE], [EKS_OIDC_THUMBPRINT])
    if area == drift.NAMESPACE:
        from remote_agents.render.manifests import build_namespace

        return drift.compare_namespace(gather_namespace(spec, access), build_namespace(spec)["metadata"]["labels"])
    if area == drift.REMOTE_EXECUTION:
        from remote_agents.render.deployment import build_task_log_settings

        ranges = spec.astro.allowed_ip_ranges
        logs = build_task_log_settings(spec) if spec.astro.show_task_logs else None
        return drift.compare_remote_execution(
            gather_remote_execution(spec), None if ranges is None else [*ranges, *egress_ranges(spec)],
            logs and {"taskLogBucket": logs["task_log_bucket"], "taskLogUrlPattern": logs["task_log_url_pattern"]},
        )
    if area == drift.RELEASE:
        api_url, namespace = _reported_deployment(spec)
        desired = build_values(spec, role_arns=role_arns, deployment_api_url=api_url, deployment_namespace=namespace)
        return drift.compare_release(gather_release_state(spec, access), desired, spec.chart.version)
    if area == drift.CHART_OBJECTS:
        return drift.compare_chart_objects(gather_chart_objects(spec, access))
    if area == drift.SERVICE_ACCOUNTS:
        return drift.compare_service_accounts(gather_service_accounts(spec, access),
                                              drift.desired_role_annotations(spec, role_arns))
    if area == drift.IRSA_ROLES:
        issuer, account = identity.get("oidc_issuer"), identity.get("account_id")
        if not (spec.irsa and account):
            return []
        if not issuer:
            assert spec.eks is not None
            return [Finding(DRIFT, f"EKS cluster {spec.eks.name}", "missing, so no OIDC issuer to compare the "
                            "IRSA trust with", "describe_cluster finds no such cluster", drift.BOOTSTRAP)]
        return drift.compare_roles(gather_roles(spec), build_irsa_policies(spec, issuer, account))
    if area == drift.SECRETS:
        return drift.compare_secrets(gather_secrets(spec, access))
    raise ValueError(f"unknown drift area {area!r}; use one of {', '.join(drift.AREAS)}")


def _reported_deployment(spec: EnvironmentSpec) -> tuple[str, str | None]:
    """The agent API URL and the namespace of the Deployment as Astro reports them, as the bootstrap read them."""
    from remote_agents.hooks.astro import AstroHook, remote_api_url

    deployment = AstroHook(spec.astro.connection_id, spec.astro.organization_id).get_deployment(spec.astro.deployment_id)
    return spec.astro.deployment_api_url or remote_api_url(deployment), deployment.get("namespace")
