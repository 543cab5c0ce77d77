"""Helm values for `astronomer/astro-remote-execution-agent`, rendered from an EnvironmentSpec.

Pure: no I/O, no Airflow imports. Secrets appear only by name (`agentTokenSecretName`,
`imagePullSecretName`, `secretKeyRef`), never by value (docs/design.md, principle 5). Keys and their meaning
follow reference section 3; the tutorial's edits are section 4.3-4.7.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from packaging.version import Version

from remote_agents import naming
from remote_agents.errors import ConfigError
from remote_agents.spec import EnvironmentSpec, StaticCredentialsIdentitySpec, WorkerSpec

XCOM_BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
SECRETS_BACKEND = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
# Checked in apache-airflow-providers-common-io 1.11.0 (state_store/backend.py); it reads
# [common.io] state_store_objectstorage_path. The sandbox chart's default names the same class.
STATE_STORE_BACKEND = "airflow.providers.common.io.state_store.backend.StateStoreObjectStorageBackend"
GIT_DAG_BUNDLE = "airflow.providers.git.bundles.git.GitDagBundle"
LOCAL_DAG_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
# The connection named in the XCom path and the log connection; defined keyless in commonEnv so
# boto3 takes credentials from IRSA or from the AWS_* variables of the static-credentials Secret.
AWS_CONN_ID = "aws_default"
ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
QUEUES_VARIABLE = "REMOTE_AGENTS_QUEUES"
STATIC_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SHARED_PACKAGES = "/shared/packages"
CONSTRAINTS_DIR = "/constraints"
OPENLINEAGE_SINCE = Version("2.2.0")
OPENLINEAGE_URL = "https://o11y.astronomer.io"
OPENLINEAGE_ENDPOINT = "/api/v1/lineage"
STATE_STORE_SINCE = Version("2.3.0")
# Chart keys of the per-component ServiceAccount settings (reference 3.3).
SERVICE_ACCOUNT_KEYS = {
    naming.DAG_PROCESSOR: "dagProcessor",
    naming.TRIGGERER: "triggerer",
    naming.WORKER: "workers",
}


def agent_runtime_warning(spec: EnvironmentSpec, deployment_runtime: str | None) -> str | None:
    """A warning when the agent image's Astro Runtime is newer than the Deployment's, else None.

    The agents run tasks the Deployment's scheduler planned; Astronomer's agent docs ask for an agent
    Runtime no newer than the Deployment's. An image or version whose Runtime cannot be read gives None.
    """
    agent = _runtime(spec.astro.agent_image.rpartition(":")[2])
    deployment = _runtime(deployment_runtime or "")
    if agent is None or deployment is None or agent <= deployment:
        return None
    return (f"astro.agent_image: its Runtime {'.'.join(map(str, agent[:2]))}-{agent[2]} is newer than the "
            f"Deployment's {deployment_runtime}; upgrade the Deployment first, or pin an agent image of Runtime "
            f"{deployment_runtime} or older")


def _runtime(text: str) -> tuple[int, int, int] | None:
    match = re.match(r"^(\d+)\.(\d+)-(\d+)", text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def build_values(spec: EnvironmentSpec, role_arns: dict[str | None, str] | None = None,
                 deployment_api_url: str | None = None, deployment_namespace: str | None = None) -> dict[str, Any]:
    """Chart values for ``spec``; ``role_arns`` maps component (None = all) to the IRSA role ARN.

    ``role_arns`` must cover exactly the roles ``naming.irsa_role_names`` defines for an IRSA spec,
    and be empty for static credentials: a missing annotation would leave agents without AWS access.
    ``deployment_api_url`` is the Deployment's ``remoteExecution.remoteApiUrl`` as Astro reports it;
    the spec's ``astro.deployment_api_url``, when set, wins. ``deployment_namespace`` is the
    Deployment's ``namespace`` as Astro reports it: ``ASTRO_DEPLOYMENT_NAMESPACE`` and the lineage
    namespace, as the values file Astro's UI downloads sets them.
    """
    _check_role_arns(spec, role_arns or {})
    api_url = spec.astro.deployment_api_url or deployment_api_url
    if not api_url:
        raise ConfigError(["astro.deployment_api_url: not in the spec and not read from Astro; set it to the URL "
                           "of the Deployment's Remote Agents tab, or let the bootstrap read it from Astro"],
                          source=f"environment {spec.name}")
    chart_version = spec.chart.parsed_version
    values: dict[str, Any] = {
        "resourceNamePrefix": spec.resource_name_prefix,
        "namespace": spec.namespace,
        # The namespace and its Secrets exist before the install (manifests.py); the chart must not own it.
        "createNamespace": False,
        "astroDeploymentAPIURL": api_url,
        "image": spec.astro.agent_image,
        "imagePullSecretName": spec.astro.registry_secret_name,
        "agentTokenSecretName": spec.astro.agent_token_secret_name,
        "secretBackend": SECRETS_BACKEND,
        "xcomBackend": XCOM_BACKEND,
        "dagBundleConfigList": json.dumps(build_dag_bundle_config(spec)),
        "commonEnv": build_common_env(spec, deployment_namespace),
        "labels": build_labels(spec),
        "annotations": dict(spec.annotations),
        "serviceAccount": build_service_account(spec, role_arns or {}),
        "workers": [build_worker(spec, worker) for worker in spec.workers],
        "dagProcessor": {"env": build_credentials_env(spec)},
        "triggerer": {"env": build_credentials_env(spec)},
        "sentinel": {"enabled": spec.chart.sentinel},
    }
    if chart_version >= OPENLINEAGE_SINCE:
        # Chart 2.2.0 fails to render without the block (reference 8.13), so it is always present.
        values["openLineage"] = build_open_lineage(spec, deployment_namespace)
    if chart_version >= STATE_STORE_SINCE and spec.state_store:
        values["stateStoreBackend"] = STATE_STORE_BACKEND
    return values


def build_dag_bundle_config(spec: EnvironmentSpec) -> list[dict[str, Any]]:
    """`dagBundleConfigList` entries; the chart takes them as one JSON string."""
    if not spec.dag_bundles:
        return [{"name": "dags-folder", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {}}]
    return [
        {
            "name": bundle.name,
            "classpath": GIT_DAG_BUNDLE,
            "kwargs": {
                "git_conn_id": bundle.git_conn_id,
                "tracking_ref": bundle.branch,
                "subdir": bundle.subdir,
                "refresh_interval": bundle.refresh_interval,
                # Pitfall 8.8: git providers before 0.0.7 skipped the GitHook (no credentials) when
                # repo_url was given; later ones build the hook with repo_url and the connection's
                # credentials. The agent images we target ship a fixed provider, and naming the repo
                # here keeps the spec the one place that says which repository an agent reads.
                "repo_url": bundle.repo_url,
            },
        }
        for bundle in spec.dag_bundles
    ]


def build_common_env(spec: EnvironmentSpec, deployment_namespace: str | None = None) -> list[dict[str, str]]:
    """Environment of the worker, Dag processor and triggerer containers; every value a string."""
    backends = spec.backends
    xcom, logs = backends.xcom, backends.logs
    env = {
        "ASTRONOMER_ENVIRONMENT": "cloud",
        "ASTRO_ORGANIZATION_ID": spec.astro.organization_id,
        **({"ASTRO_WORKSPACE_ID": spec.astro.workspace_id} if spec.astro.workspace_id else {}),
        "ASTRO_DEPLOYMENT_ID": spec.astro.deployment_id,
        **({"ASTRO_DEPLOYMENT_NAMESPACE": deployment_namespace} if deployment_namespace else {}),
        "AWS_DEFAULT_REGION": backends.aws_region,
        f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}": json.dumps(
            {"conn_type": "aws", "extra": {"region_name": backends.aws_region}}
        ),
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
            {
                "connections_prefix": backends.secrets.connections_prefix,
                "variables_prefix": backends.secrets.variables_prefix,
                "region_name": backends.aws_region,
            }
        ),
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": f"s3://{AWS_CONN_ID}@{xcom.bucket}/{xcom.prefix}",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": str(xcom.threshold_bytes),
        **({"AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION": xcom.compression} if xcom.compression else {}),
        # Airflow's own S3 task handler, under the agents' IRSA role. Not the tutorial's
        # AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS=astronomer.runtime.logging.logging_config with
        # ASTRO_LOGGING_AWS_WEB_IDENTITY_TOKEN_FILE: that config and whatever writes the token file are
        # internal to Astro Runtime and not documented, so nothing here could check what they need.
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{logs.bucket}/{logs.prefix}",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": AWS_CONN_ID,
        # Read by the self-test Dag when the agents' Dag processor parses it: a Dag's shape is fixed
        # at parse time, so its one task group per queue needs the queues there, not in a run's conf.
        QUEUES_VARIABLE: ",".join(worker.queue for worker in spec.workers),
    }
    if spec.chart.parsed_version >= STATE_STORE_SINCE and spec.state_store:
        env["AIRFLOW__COMMON_IO__STATE_STORE_OBJECTSTORAGE_PATH"] = (
            f"s3://{AWS_CONN_ID}@{xcom.bucket}/{spec.state_store.prefix}"
        )
    return [{"name": name, "value": value} for name, value in env.items()]


def build_credentials_env(spec: EnvironmentSpec) -> list[dict[str, Any]]:
    """Static AWS keys, read by Kubernetes from the credentials Secret (never a value in the values).

    Empty for IRSA, where the EKS webhook injects the web-identity variables from the annotation.
    """
    identity = spec.identity
    if not isinstance(identity, StaticCredentialsIdentitySpec):
        return []
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": identity.secret_name, "key": key}}}
        for key in STATIC_CREDENTIAL_KEYS
    ]


def build_labels(spec: EnvironmentSpec) -> dict[str, str]:
    """Spec labels plus our environment label on every chart object.

    The chart's objects are Helm's (`app.kubernetes.io/managed-by: Helm` on most charts), so the
    `managed-by: remote-agents` label stays on the objects we create ourselves (manifests.py).
    """
    return {**spec.labels, naming.ENVIRONMENT_LABEL: spec.name}


def build_service_account(spec: EnvironmentSpec, role_arns: dict[str | None, str]) -> dict[str, Any]:
    """Each component's ServiceAccount, named by us (``naming.agent_workloads``; workers in their
    ``workers[]`` entry), with the IRSA role: one on every ServiceAccount, or one per component."""
    names = {w.component: w.service_account for w in naming.agent_workloads(spec, include_sentinel=False)}
    accounts: dict[str, Any] = {SERVICE_ACCOUNT_KEYS[c]: {"name": names[c]} for c in (naming.DAG_PROCESSOR, naming.TRIGGERER)}
    if None in role_arns:
        return {"annotations": {ROLE_ARN_ANNOTATION: role_arns[None]}, **accounts}
    for component, arn in role_arns.items():
        accounts.setdefault(SERVICE_ACCOUNT_KEYS[str(component)], {})["annotations"] = {ROLE_ARN_ANNOTATION: arn}
    return accounts


# The pip-install initContainer runs code from package indexes: nothing it does needs privileges.
INIT_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                         "seccompProfile": {"type": "RuntimeDefault"}}


def _worker_resources(worker: WorkerSpec) -> dict[str, str]:
    return {"cpu": worker.resources.cpu, "memory": worker.resources.memory,
            "ephemeral-storage": worker.resources.ephemeral_storage}


def build_worker(spec: EnvironmentSpec, worker: WorkerSpec) -> dict[str, Any]:
    """One `workers[]` entry: one Deployment consuming exactly one queue."""
    resources = _worker_resources(worker)
    entry: dict[str, Any] = {
        "name": worker.name,
        "queues": worker.queue,
        "replicas": worker.replicas,
        "syncSlots": worker.sync_slots,
        # Requests = limits: the Pod is Guaranteed QoS, so a busy neighbour cannot starve running tasks.
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "env": build_credentials_env(spec),
        # The chart's default would do today; naming it here keeps the IRSA trust independent of it.
        "serviceAccount": {"name": naming.worker_service_account(spec, worker.name)},
    }
    if worker.pip_packages:
        entry.update(build_pip_install(spec, worker))
        entry["env"] = [*entry["env"], *build_pip_env()]
    return entry


def build_pip_install(spec: EnvironmentSpec, worker: WorkerSpec) -> dict[str, Any]:
    """initContainer, volumes and mounts that pip-install a worker's packages at Pod start (reference 4.6)."""
    return {
        "initContainers": [
            {
                "name": "pip-install",
                # Same image as the worker, so wheels match its Python and platform (pitfall 8.4 advice).
                "image": spec.astro.agent_image,
                "command": [
                    "pip", "install", "--no-cache-dir", "--prefer-binary",
                    "--target", SHARED_PACKAGES,
                    "--constraint", f"{CONSTRAINTS_DIR}/{naming.CONSTRAINTS_CONFIG_KEY}",
                    *worker.pip_packages,
                ],
                "volumeMounts": [
                    {"name": "shared-packages", "mountPath": SHARED_PACKAGES},
                    {"name": "constraints", "mountPath": CONSTRAINTS_DIR, "readOnly": True},
                ],
                # The worker's own requests = limits: the init container runs before it, in its budget.
                "resources": {"requests": _worker_resources(worker), "limits": _worker_resources(worker)},
                "securityContext": INIT_SECURITY_CONTEXT,
            }
        ],
        "volumes": [
            {"name": "shared-packages", "emptyDir": {}},
            {"name": "constraints", "configMap": {"name": naming.constraints_configmap_name(spec)}},
        ],
        "volumeMounts": [{"name": "shared-packages", "mountPath": SHARED_PACKAGES, "readOnly": True}],
    }


def build_pip_env() -> list[dict[str, str]]:
    """PYTHONPATH for the pip-installed packages.

    Kubernetes does not expand `$PYTHONPATH` (pitfall 8.4), and it need not: Python's `site` adds
    the image's own site-packages to sys.path whatever PYTHONPATH holds, after the PYTHONPATH
    entries. So `/shared/packages` alone puts the installed pins first and keeps the image's
    packages importable, without guessing the image's site-packages path.
    """
    return [{"name": "PYTHONPATH", "value": SHARED_PACKAGES}]


def build_open_lineage(spec: EnvironmentSpec, deployment_namespace: str | None = None) -> dict[str, Any]:
    """The `openLineage` block: off, or complete as in the values file Astro's UI downloads.

    That file (e.g. `values-primary.yaml` of https://github.com/crobertson-astro/aws-re-dr, "generated
    for chart 2.0.0") sends events to ``OPENLINEAGE_URL`` with the Deployment's identity both in the
    endpoint's query and, through ``facetsEnvironmentVariables``, in every event; the API key is a
    Deployment token in the Secret the bootstrap fills from ``chart.open_lineage_conn_id``.
    """
    if not spec.chart.open_lineage:
        return {"enabled": False}
    if not deployment_namespace:
        raise ConfigError(["chart.open_lineage: the Deployment's namespace is not known (Astro reports it as "
                           "`namespace`); let the bootstrap read it, or pass --deployment-namespace to render"],
                          source=f"environment {spec.name}")
    identity = {name: value for name, value in sorted(_astro_identity(spec, deployment_namespace).items())}
    return {
        "enabled": True,
        "apiKeySecret": naming.openlineage_secret_name(spec),
        "namespace": deployment_namespace,
        "url": OPENLINEAGE_URL,
        "endpoint": f"{OPENLINEAGE_ENDPOINT}?{urlencode(identity)}",
        "facetsEnvironmentVariables": list(_astro_identity(spec, deployment_namespace)),
    }


def _astro_identity(spec: EnvironmentSpec, deployment_namespace: str) -> dict[str, str]:
    """The ``ASTRO_*`` variables that say which Deployment an agent belongs to (all in commonEnv)."""
    astro = spec.astro
    return {
        "ASTRO_ORGANIZATION_ID": astro.organization_id,
        **({"ASTRO_WORKSPACE_ID": astro.workspace_id} if astro.workspace_id else {}),
        "ASTRO_DEPLOYMENT_ID": astro.deployment_id,
        "ASTRO_DEPLOYMENT_NAMESPACE": deployment_namespace,
    }


def _check_role_arns(spec: EnvironmentSpec, role_arns: dict[str | None, str]) -> None:
    expected = set(naming.irsa_role_names(spec)) if spec.irsa else set()
    if set(role_arns) != expected:
        shown = sorted(str(key) for key in expected) or "none (identity.mode is static-credentials)"
        raise ConfigError(
            [f"role_arns: got roles for {sorted(str(key) for key in role_arns)}, need {shown}; "
             "pass the ARNs of the roles naming.irsa_role_names defines for this spec"],
            spec.name,
        )
