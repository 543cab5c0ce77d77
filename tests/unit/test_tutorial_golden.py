"""include/environments/tutorial.yaml renders the values the Astro tutorial builds by hand
(reference 4.3-4.7), apart from deliberate departures, each explained where it appears."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from remote_agents.render.policies import build_irsa_trust_policy, build_role_arns
from remote_agents.render.values import build_values
from remote_agents.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
ISSUER_HOST = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
AGENT_IMAGE = "images.astronomer.cloud/baseimages/astro-remote-execution-agent:3.3-1-python-3.12-astro-agent-1.8.2"

TUTORIAL_VALUES: dict[str, Any] = {
    # 4.3: the tutorial says "<any>"; the spec keeps the chart's usual prefix.
    "resourceNamePrefix": "astro-agent",
    "namespace": "my-namespace",
    # 4.2: the namespace and Secrets are created before the install, so the chart must not create it.
    "createNamespace": False,
    "astroDeploymentAPIURL": "https://clx1cluster.external.astronomer.run/d1tutorial",
    # The spec's default agent image (Runtime 3.3 / agent 1.8.2); the tutorial used 3.0-4 / 1.0.2.
    "image": AGENT_IMAGE,
    # 4.3 names them my-astro-registry-secret / my-agent-token; these are the spec's default names.
    "imagePullSecretName": "astro-registry",
    "agentTokenSecretName": "astro-agent-token",
    # Departure: the tutorial starts with LocalFilesystemBackend "until a real backend"; we go straight
    # to AWS Secrets Manager (4.8), so no connection or token lives in the values or on a volume.
    "secretBackend": "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend",
    "xcomBackend": "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend",
    "dagBundleConfigList": json.dumps(
        [
            {
                "name": "gitbundle-1",
                "classpath": "airflow.providers.git.bundles.git.GitDagBundle",
                # Departure: + repo_url, so the git connection only carries credentials (pitfall 8.8).
                "kwargs": {
                    "git_conn_id": "git_default",
                    "tracking_ref": "main",
                    "subdir": "dags",
                    "refresh_interval": 10,
                    "repo_url": "https://github.com/my-account/my-dags.git",
                },
            }
        ]
    ),
    # 4.4, as name -> value. Departures:
    # - no AIRFLOW_CONN_GIT_DEFAULT with an inline access token: git_default lives in Secrets Manager
    #   (airflow/connections/git_default), read through the secrets backend;
    # - no AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS / ASTRO_LOGGING_AWS_WEB_IDENTITY_TOKEN_FILE: Airflow's
    #   own logging config uploads to REMOTE_BASE_LOG_FOLDER with the S3 task handler and IRSA, and the
    #   Astro-only class would not import outside Astro Runtime (the sandbox stand-in);
    # - REMOTE_LOGGING is the string "True" (the tutorial's unquoted True is a YAML bool, which
    #   Kubernetes rejects as an env value), REMOTE_LOG_CONN_ID the canonical lower-case id.
    # Additions: the Astro ids the downloaded values.yaml pre-fills (3.1), the Secrets Manager kwargs
    # (4.8) and AWS_DEFAULT_REGION always, not only when the bucket region differs.
    "commonEnv": {
        "ASTRONOMER_ENVIRONMENT": "cloud",
        "ASTRO_ORGANIZATION_ID": "clx1orgtutorial",
        "ASTRO_DEPLOYMENT_ID": "clx1deptutorial",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AIRFLOW_CONN_AWS_DEFAULT": '{"conn_type": "aws", "extra": {"region_name": "us-east-1"}}',
        "AIRFLOW__SECRETS__BACKEND_KWARGS": (
            '{"connections_prefix": "airflow/connections", "variables_prefix": "airflow/variables", '
            '"region_name": "us-east-1"}'
        ),
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": "s3://aws_default@my-airflow-bucket/xcom",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": "0",
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": "s3://my-airflow-bucket/logs",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "aws_default",
        # Addition: the queues the self-test Dag builds one task group for (health checks).
        "REMOTE_AGENTS_QUEUES": "default",
        "AIRFLOW__COMMON_IO__STATE_STORE_OBJECTSTORAGE_PATH": "s3://aws_default@my-airflow-bucket/state",
    },
    "labels": {"remote-agents.astronomer.io/environment": "tutorial"},
    # Departure (4.7): the tutorial puts the role ARN in top-level `annotations`, which lands on every
    # object and Pod; `serviceAccount.annotations` puts it only where IRSA reads it.
    "annotations": {},
    # Addition: every ServiceAccount named, so the trust policy names what we set, not a chart default.
    "serviceAccount": {
        "annotations": {"eks.amazonaws.com/role-arn": f"arn:aws:iam::{ACCOUNT}:role/AirflowS3LoggerXComRole"},
        "dagProcessor": {"name": "astro-agent-dag-processor"},
        "triggerer": {"name": "astro-agent-triggerer"},
    },
    "workers": [
        {
            "name": "default-worker",
            "queues": "default",
            # The chart's defaults, written out so a chart default change cannot resize the workers.
            "replicas": 1,
            "syncSlots": 20,
            "resources": {
                "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
                "limits": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
            },
            # Departure (pitfall 8.4): "/shared/packages:$PYTHONPATH" would put a literal "$PYTHONPATH"
            # on the path; the image's site-packages stay importable without it (values.build_pip_env).
            "env": [{"name": "PYTHONPATH", "value": "/shared/packages"}],
            "serviceAccount": {"name": "astro-agent-worker-default-worker"},
            # 4.6, inside the list item. Departures: the container is named for what it does, pip gets
            # --no-cache-dir (the Pod's HOME is not a cache worth filling), and the ConfigMap is named
            # after the prefix so two releases in one namespace don't share it.
            "initContainers": [
                {
                    "name": "pip-install",
                    "image": AGENT_IMAGE,
                    "command": [
                        "pip", "install", "--no-cache-dir", "--prefer-binary",
                        "--target", "/shared/packages",
                        "--constraint", "/constraints/constraints.txt",
                        "apache-airflow-providers-amazon[s3fs]==9.39.0",
                        "apache-airflow-providers-common-io==1.11.0",
                    ],
                    "volumeMounts": [
                        {"name": "shared-packages", "mountPath": "/shared/packages"},
                        {"name": "constraints", "mountPath": "/constraints", "readOnly": True},
                    ],
                    # Additions (checkov CKV_K8S_10-13, 30): the worker's limits, no privileges.
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
                        "limits": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
                    },
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                }
            ],
            "volumes": [
                {"name": "shared-packages", "emptyDir": {}},
                {"name": "constraints", "configMap": {"name": "astro-agent-pip-constraints"}},
            ],
            "volumeMounts": [{"name": "shared-packages", "mountPath": "/shared/packages", "readOnly": True}],
        }
    ],
    # IRSA needs no extra env on the other components (static credentials would add secretKeyRefs).
    "dagProcessor": {"env": []},
    "triggerer": {"env": []},
    "sentinel": {"enabled": True},
    # Chart 2.3.3 needs the block present (pitfall 8.13); the tutorial's chart predates it.
    "openLineage": {"enabled": False},
    # Chart 2.3 installs agents (>= 1.8, Runtime 3.3) that refuse to start without a state store; the
    # tutorial predates it. Kept next to the XCom objects, under its own prefix.
    "stateStoreBackend": "airflow.providers.common.io.state_store.backend.StateStoreObjectStorageBackend",
}


def _meaning(values: dict[str, Any]) -> dict[str, Any]:
    """commonEnv as a mapping: its order carries no meaning, but a repeated name would."""
    names = [item["name"] for item in values["commonEnv"]]
    assert len(names) == len(set(names)), "a repeated commonEnv name silently overrides the first"
    return {**values, "commonEnv": {item["name"]: item["value"] for item in values["commonEnv"]}}


def test_tutorial_spec_renders_the_tutorial_values() -> None:
    spec = load_spec(ROOT / "include" / "environments" / "tutorial.yaml")
    assert _meaning(build_values(spec, build_role_arns(spec, ACCOUNT))) == TUTORIAL_VALUES


def test_tutorial_trust_policy_names_each_service_account_instead_of_any() -> None:
    # Departure (4.7): the tutorial trusts `system:serviceaccount:*:*` with StringLike, i.e. any Pod of
    # any namespace in the cluster; we trust the release's three Airflow ServiceAccounts, exactly.
    spec = load_spec(ROOT / "include" / "environments" / "tutorial.yaml")
    statement = build_irsa_trust_policy(spec, f"https://{ISSUER_HOST}", ACCOUNT)["Statement"][0]
    assert statement["Condition"] == {
        "StringEquals": {
            f"{ISSUER_HOST}:sub": [
                "system:serviceaccount:my-namespace:astro-agent-dag-processor",
                "system:serviceaccount:my-namespace:astro-agent-triggerer",
                "system:serviceaccount:my-namespace:astro-agent-worker-default-worker",
            ],
            f"{ISSUER_HOST}:aud": "sts.amazonaws.com",
        }
    }
