"""Every bad input is refused before any network call, with the field path, the bad value and the fix.

Each case starts from a valid example spec, applies one mutation and finds the problem line that
starts with the expected field path; that line must show the bad value and a word of the fix.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from remote_agents.errors import ConfigError
from remote_agents.spec import load_spec, parse_spec

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "include" / "environments"
TUTORIAL = yaml.safe_load((ENVIRONMENTS / "tutorial.yaml").read_text())
ONPREM = yaml.safe_load((ENVIRONMENTS / "onprem.yaml").read_text())

Mutation = Callable[[dict[str, Any]], None]


def _walk(data: dict[str, Any], path: str) -> tuple[Any, str | int]:
    """The container holding ``path`` (like ``workers[0].queue``) and the last key in it."""
    keys: list[str | int] = [int(k[1:-1]) if k.startswith("[") else k for k in re.findall(r"\[\d+\]|[^.\[\]]+", path)]
    node: Any = data
    for key in keys[:-1]:
        node = node[key]
    return node, keys[-1]


def put(path: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        node, key = _walk(data, path)
        node[key] = value

    return mutate


def drop(path: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        node, key = _walk(data, path)
        del node[key]

    return mutate


def append(path: str, item: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        node, key = _walk(data, path)
        node[key].append(item)

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for one in mutations:
            one(data)

    return mutate


def mutated(base: dict[str, Any], *mutations: Mutation) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for mutate in mutations:
        mutate(data)
    return data


def problem_at(error: ConfigError, path: str) -> str:
    lines = [p for p in error.problems if p.startswith(f"{path}: ")]
    assert lines, f"no problem at {path!r} in {error.problems}"
    return lines[0]


def case(case_id: str, base: dict[str, Any], mutation: Mutation, path: str, value: str, fix: str) -> Any:
    return pytest.param(base, mutation, path, value, fix, id=case_id)


IMAGE = "images.astronomer.cloud/baseimages/astro-remote-execution-agent"

CASES = [
    case("allowed-range-with-host-bits", TUTORIAL, put("astro.allowed_ip_ranges", ["203.0.113.7/24"]),
         "astro.allowed_ip_ranges", "'203.0.113.7/24'", "'203.0.113.0/24'"),
    case("allowed-range-without-prefix", TUTORIAL, put("astro.allowed_ip_ranges", ["198.51.100.7"]),
         "astro.allowed_ip_ranges", "'198.51.100.7'", "'198.51.100.7/32'"),
    case("two-workers-on-one-queue", TUTORIAL, append("workers", {"name": "etl", "queue": "default"}),
         "workers[1].queue", "'default'", "own queue"),
    case("queue-list-with-two-queues", TUTORIAL, put("workers[0].queue", ["default", "etl"]),
         "workers[0].queue", "['default', 'etl']", "one worker entry per queue"),
    case("chart-style-queues-key", TUTORIAL, put("workers[0].queues", "default"),
         "workers[0].queues", "'default'", "queue: <name>"),
    case("queue-with-comma", TUTORIAL, put("workers[0].queue", "default,etl"),
         "workers[0].queue", "'default,etl'", "one worker entry per queue"),
    case("invalid-bucket-name", TUTORIAL, put("backends.xcom.bucket", "My_Bucket"),
         "backends.xcom.bucket", "'My_Bucket'", "lowercase"),
    case("ip-address-bucket-name", TUTORIAL, put("backends.logs.bucket", "192.168.1.1"),
         "backends.logs.bucket", "'192.168.1.1'", "lowercase"),
    case("s3-prefix-leading-slash", TUTORIAL, put("backends.xcom.prefix", "/xcom"),
         "backends.xcom.prefix", "'/xcom'", "write 'xcom'"),
    case("secrets-prefix-trailing-slash", TUTORIAL, put("backends.secrets.connections_prefix", "airflow/connections/"),
         "backends.secrets.connections_prefix", "'airflow/connections/'", "write 'airflow/connections'"),
    case("empty-log-prefix", TUTORIAL, put("backends.logs.prefix", ""),
         "backends.logs.prefix", "''", "like 'xcom'"),
    case("namespace-not-dns-label", TUTORIAL, put("namespace", "My_Namespace"),
         "namespace", "'My_Namespace'", "write 'my-namespace'"),
    case("chart-1x-with-state-store", TUTORIAL,
         both(put("chart", {"version": "1.2.0"}), put("backends.state_store", {"prefix": "state"})),
         "backends.state_store", "'1.2.0'", "set chart.version to '2.3.3'"),
    case("open-lineage-before-chart-2-2", TUTORIAL, put("chart", {"version": "2.1.0", "open_lineage": True}),
         "chart.open_lineage", "'2.1.0'", "open_lineage: false"),
    case("kubernetes-below-1-30", TUTORIAL, put("cluster.kubernetes_version", "1.29"),
         "cluster.kubernetes_version", "'1.29'", "1.30 or newer"),
    case("kubernetes-1-30-unquoted", TUTORIAL, put("cluster.kubernetes_version", 1.30),
         "cluster.kubernetes_version", "1.3", "quote the version, like '1.30'"),
    case("unknown-field-did-you-mean", TUTORIAL, put("namespce", "agents"),
         "namespce", "'namespce'", "did you mean 'namespace'"),
    case("unknown-nested-field-did-you-mean", TUTORIAL, put("cluster.node_groups[0].desired", 3),
         "cluster.node_groups[0].desired", "'desired'", "did you mean 'desired_size'"),
    case("duplicate-worker-names", TUTORIAL, append("workers", {"name": "default-worker", "queue": "etl"}),
         "workers[1].name", "'default-worker'", "own name"),
    case("replicas-zero", TUTORIAL, put("workers[0].replicas", 0),
         "workers[0].replicas", "got 0", "use a value >= 1"),
    case("replicas-not-a-number", TUTORIAL, put("workers[0].replicas", "two"),
         "workers[0].replicas", "'two'", "whole number"),
    case("deployment-url-not-https", TUTORIAL, put("astro.deployment_api_url", "http://c1.external.astronomer.run/d1"),
         "astro.deployment_api_url", "'http://c1.external.astronomer.run/d1'", "https URL"),
    case("xcom-threshold-minus-one", TUTORIAL, put("backends.xcom.threshold_bytes", -1),
         "backends.xcom.threshold_bytes", "got -1", "use 0"),
    case("irsa-with-existing-cluster", TUTORIAL, put("cluster", {"kind": "existing"}),
         "identity.mode", "'irsa'", "static-credentials"),
    case("onprem-without-identity-defaults-to-irsa", ONPREM, drop("identity"),
         "identity.mode", "'irsa'", "static-credentials"),
    case("node-group-min-over-desired-over-max", TUTORIAL,
         lambda d: d["cluster"]["node_groups"][0].update(min_size=3, desired_size=2, max_size=1),
         "cluster.node_groups[0].desired_size", "3 <= 2 <= 1", "between min_size and max_size"),
    case("duplicate-node-group-names", TUTORIAL,
         lambda d: d["cluster"]["node_groups"].append(dict(d["cluster"]["node_groups"][0])),
         "cluster.node_groups[1].name", "'workers'", "own name"),
    case("release-name-not-dns-label", TUTORIAL, put("release_name", "Astro_Agent"),
         "release_name", "'Astro_Agent'", "write 'astro-agent'"),
    case("resource-prefix-too-long", TUTORIAL, put("resource_name_prefix", "a" * 41),
         "resource_name_prefix", "a" * 41, "at most 40"),
    case("upper-case-worker-name", TUTORIAL, put("workers[0].name", "Default-Worker"),
         "workers[0].name", "'Default-Worker'", "write 'default-worker'"),
    case("invalid-label-key", TUTORIAL, put("labels", {"team name!": "data"}),
         "labels", "'team name!'", "acme.io/team"),
    case("label-value-too-long", TUTORIAL, put("labels", {"team": "x" * 64}),
         "labels.team", "x" * 64, "move it to annotations"),
    case("invalid-cron-schedule", TUTORIAL, put("health", {"schedule": "every 5 minutes"}),
         "health.schedule", "'every 5 minutes'", "cron expression"),
    case("slack-notifier-without-connection", TUTORIAL, put("health", {"notifier": {"kind": "slack"}}),
         "health.notifier.connection_id", "'slack'", "Connection holding the webhook URL"),
    case("notifier-connection-id-with-space", ONPREM, put("health.notifier.connection_id", "ops webhook"),
         "health.notifier.connection_id", "'ops webhook'", "rename it"),
    case("invalid-backend-aws-region", TUTORIAL, put("backends.aws_region", "us-east"),
         "backends.aws_region", "'us-east'", "like 'us-east-1'"),
    case("upper-case-cluster-region", TUTORIAL, put("cluster.region", "US-EAST-1"),
         "cluster.region", "'US-EAST-1'", "like 'us-east-1'"),
    case("chart-version-not-semver", TUTORIAL, put("chart", {"version": "2.3"}),
         "chart.version", "'2.3'", "like '2.3.3'"),
    case("chart-version-latest", TUTORIAL, put("chart", {"version": "latest"}),
         "chart.version", "'latest'", "like '2.3.3'"),
    case("agent-image-latest", TUTORIAL, put("astro.agent_image", f"{IMAGE}:latest"),
         "astro.agent_image", f"'{IMAGE}:latest'", "pinned tag"),
    case("agent-image-without-tag", TUTORIAL, put("astro.agent_image", IMAGE),
         "astro.agent_image", f"'{IMAGE}'", "pinned tag"),
    case("pip-package-not-pinned", TUTORIAL, put("workers[0].pip_packages[1]", "pandas>=2"),
         "workers[0].pip_packages[1]", "'pandas>=2'", "pin it with '=='"),
    case("pip-package-unparsable", TUTORIAL, put("workers[0].pip_packages", ["pandas=2"]),
         "workers[0].pip_packages[0]", "'pandas=2'", "pin it with '=='"),
    case("git-bundle-not-a-url", TUTORIAL, put("dag_bundles[0].repo_url", "my-dags"),
         "dag_bundles[0].repo_url", "'my-dags'", "https (or git@) URL"),
    case("duplicate-dag-bundle-names", TUTORIAL, lambda d: d["dag_bundles"].append(dict(d["dag_bundles"][0])),
         "dag_bundles[1].name", "'gitbundle-1'", "own name"),
    case("unknown-cluster-kind", TUTORIAL, put("cluster.kind", "gke"),
         "cluster.kind", "'gke'", "use one of 'eks', 'existing'"),
    case("missing-cluster-kind", ONPREM, drop("cluster.kind"),
         "cluster.kind", "missing", "add kind: one of 'eks', 'existing'"),
    case("unknown-identity-mode", ONPREM, put("identity.mode", "keys"),
         "identity.mode", "'keys'", "use one of 'irsa', 'static-credentials'"),
    case("missing-deployment-id", TUTORIAL, drop("astro.deployment_id"),
         "astro.deployment_id", "missing", "Remote Execution Deployment id"),
    case("unknown-compression", ONPREM, put("backends.xcom.compression", "zstd"),
         "backends.xcom.compression", "'zstd'", "'gzip'"),
    case("no-workers", ONPREM, put("workers", []),
         "workers", "got []", "at least 1 item"),
    case("workers-as-mapping", ONPREM, put("workers", {"name": "default-worker"}),
         "workers", "valid list", "YAML list"),
    case("cpu-not-a-quantity", ONPREM, put("workers[0].resources", {"cpu": "1 core"}),
         "workers[0].resources.cpu", "'1 core'", "like '500m'"),
    case("secret-name-not-dns-label", TUTORIAL, put("astro.agent_token_secret_name", "My_Token"),
         "astro.agent_token_secret_name", "'My_Token'", "write 'my-token'"),
    case("connection-id-with-space", TUTORIAL, put("aws_conn_id", "aws default"),
         "aws_conn_id", "'aws default'", "rename it"),
    # Python's `$` also matches before a final newline: each of these got through an anchored regex.
    case("namespace-ending-in-newline", TUTORIAL, put("namespace", "my-namespace\n"),
         "namespace", "'my-namespace\\n'", "write 'my-namespace'"),
    case("environment-name-ending-in-newline", TUTORIAL, put("name", "tutorial\n"),
         "name", "'tutorial\\n'", "write 'tutorial'"),
    case("connection-id-ending-in-newline", TUTORIAL, put("aws_conn_id", "aws_default\n"),
         "aws_conn_id", "'aws_default\\n'", "rename it"),
    case("openlineage-connection-id-ending-in-newline", TUTORIAL,
         put("chart", {"open_lineage_conn_id": "astro_openlineage\n"}),
         "chart.open_lineage_conn_id", "'astro_openlineage\\n'", "rename it"),
    case("deployment-url-ending-in-newline", TUTORIAL,
         put("astro.deployment_api_url", "https://clx1cluster.external.astronomer.run/d1tutorial\n"),
         "astro.deployment_api_url", "d1tutorial\\n'", "https URL"),
    case("release-name-ending-in-newline", TUTORIAL, put("release_name", "astro-agent\n"),
         "release_name", "'astro-agent\\n'", "write 'astro-agent'"),
    case("bucket-ending-in-newline", TUTORIAL, put("backends.xcom.bucket", "my-airflow-bucket\n"),
         "backends.xcom.bucket", "'my-airflow-bucket\\n'", "lowercase"),
    case("region-ending-in-newline", TUTORIAL, put("backends.aws_region", "us-east-1\n"),
         "backends.aws_region", "'us-east-1\\n'", "like 'us-east-1'"),
    case("role-name-ending-in-newline", TUTORIAL, put("identity.role_name", "AirflowS3LoggerXComRole\n"),
         "identity.role_name", "'AirflowS3LoggerXComRole\\n'", "rename it"),
    case("cluster-name-ending-in-newline", TUTORIAL, put("cluster.name", "remote-execution-airflow-cluster\n"),
         "cluster.name", "cluster\\n'", "rename it"),
    case("kubernetes-version-ending-in-newline", TUTORIAL, put("cluster.kubernetes_version", "1.33\n"),
         "cluster.kubernetes_version", "'1.33\\n'", "like '1.33'"),
    case("chart-version-ending-in-newline", TUTORIAL, put("chart", {"version": "2.3.3\n"}),
         "chart.version", "'2.3.3\\n'", "like '2.3.3'"),
    case("queue-longer-than-the-chart-allows", TUTORIAL, put("workers[0].queue", "q" * 64),
         "workers[0].queue", "'" + "q" * 64 + "'", "at most 63 characters"),
    case("queue-ending-in-newline", TUTORIAL, put("workers[0].queue", "default\n"),
         "workers[0].queue", "'default\\n'", "letters, digits"),
    case("memory-ending-in-newline", TUTORIAL, put("workers[0].resources", {"memory": "2Gi\n"}),
         "workers[0].resources.memory", "'2Gi\\n'", "like '500m'"),
    case("agent-image-ending-in-newline", TUTORIAL, put("astro.agent_image", f"{IMAGE}:3.3-1\n"),
         "astro.agent_image", "3.3-1\\n'", "pinned tag"),
    case("label-value-ending-in-newline", TUTORIAL, put("labels", {"team": "data\n"}),
         "labels.team", "'data\\n'", "move it to annotations"),
    case("git-url-ending-in-newline", TUTORIAL, put("dag_bundles[0].repo_url", "https://github.com/my-account/my-dags.git\n"),
         "dag_bundles[0].repo_url", "my-dags.git\\n'", "https (or git@) URL"),
    # `\d` and `\w` match any Unicode digit or letter; "\u0663" is ARABIC-INDIC DIGIT THREE.
    case("kubernetes-version-with-arabic-indic-digits", TUTORIAL, put("cluster.kubernetes_version", "1.\u0663\u0663"),
         "cluster.kubernetes_version", "'1.\u0663\u0663'", "like '1.33'"),
    case("region-with-arabic-indic-digit", TUTORIAL, put("cluster.region", "us-east-\u0661"),
         "cluster.region", "'us-east-\u0661'", "like 'us-east-1'"),
    case("cpu-with-arabic-indic-digit", TUTORIAL, put("workers[0].resources", {"cpu": "\u0661"}),
         "workers[0].resources.cpu", "'\u0661'", "like '500m'"),
    case("kms-key-arn-with-arabic-indic-digits", TUTORIAL,
         put("backends.xcom.kms_key_arn", "arn:aws:kms:us-east-1:" + "\u0661" * 12 + ":key/" + "a" * 8 + "-aaaa" * 3 + "-" + "a" * 12),
         "backends.xcom.kms_key_arn", "\u0661" * 12, "key's ARN"),
    case("image-port-with-arabic-indic-digits", TUTORIAL, put("astro.agent_image", f"registry.example.com:\u0665\u0660/{IMAGE}:1"),
         "astro.agent_image", "\u0665\u0660", "pinned tag"),
    case("role-name-with-non-ascii-letter", TUTORIAL, put("identity.role_name", "R\u00f4leAgents"),
         "identity.role_name", "'R\u00f4leAgents'", "rename it"),
    case("unknown-cluster-region", TUTORIAL, put("cluster.region", "us-wset-2"),
         "cluster.region", "'us-wset-2'", "like 'us-west-2'"),
    case("unknown-backend-region", ONPREM, put("backends.aws_region", "eu-central-9"),
         "backends.aws_region", "'eu-central-9'", "like 'eu-central-1'"),
    case("generated-eks-role-name-over-64", TUTORIAL, put("name", "a" * 60),
         "name", f"'{'a' * 60}-eks-cluster' (72 characters", "shorten it by 8 characters"),
    case("generated-irsa-role-name-over-64", TUTORIAL, both(put("name", "b" * 51), drop("identity.role_name")),
         "name", f"'{'b' * 51}-remote-agents' (65 characters", "or set identity.role_name"),
    case("per-component-role-name-over-64", TUTORIAL, put("identity", {"mode": "irsa", "role_name": "R" * 55, "per_component": True}),
         "identity.role_name", f"'{'R' * 55}-dag-processor' (69 characters", "shorten it by 5 characters"),
    case("irsa-role-is-the-eks-node-role", TUTORIAL, put("identity.role_name", "tutorial-eks-node"),
         "identity.role_name", "'tutorial-eks-node'", "another name"),
    case("irsa-role-is-the-eks-cluster-role-but-for-case", TUTORIAL, put("identity.role_name", "Tutorial-EKS-Cluster"),
         "identity.role_name", "'Tutorial-EKS-Cluster'", "another name"),
    case("organization-id-with-slash", TUTORIAL, put("astro.organization_id", "clx1orgtutorial/../other"),
         "astro.organization_id", "'clx1orgtutorial/../other'", "copy the id"),
    case("deployment-id-with-query", TUTORIAL, put("astro.deployment_id", "clx1deptutorial?force=true"),
         "astro.deployment_id", "'clx1deptutorial?force=true'", "copy the id"),
    case("workspace-id-with-slash", TUTORIAL, put("astro.workspace_id", "clx1ws/1"),
         "astro.workspace_id", "'clx1ws/1'", "copy the id"),
    case("registry-with-scheme", TUTORIAL, put("astro.registry", "https://images.astronomer.cloud"),
         "astro.registry", "'https://images.astronomer.cloud'", "write 'images.astronomer.cloud'"),
    case("registry-with-path", TUTORIAL, put("astro.registry", "images.astronomer.cloud/baseimages"),
         "astro.registry", "'images.astronomer.cloud/baseimages'", "write 'images.astronomer.cloud'"),
    # YAML reads an empty 'queue:' as null, an unquoted 'on' or 'yes' as true, and '010' as the number 8.
    case("queue-null", TUTORIAL, put("workers[0].queue", None),
         "workers[0].queue", "got None", "queue: 'default'"),
    case("queue-bool", TUTORIAL, put("workers[0].queue", True),
         "workers[0].queue", "got True", "queue: 'default'"),
    case("queue-number", TUTORIAL, put("workers[0].queue", 8),
         "workers[0].queue", "got 8", "queue: 'default'"),
    case("git-url-with-query", TUTORIAL, put("dag_bundles[0].repo_url", "https://github.com/my-account/my-dags.git?ref=x"),
         "dag_bundles[0].repo_url", "'https://github.com/my-account/my-dags.git?***'", "git_conn_id"),
    case("chart-url-not-a-url", TUTORIAL, put("chart", {"repo_url": "helm.astronomer.io"}),
         "chart.repo_url", "'helm.astronomer.io'", "like 'https://helm.astronomer.io'"),
    case("label-is-a-chart-selector", TUTORIAL, put("labels", {"app": "billing"}),
         "labels.app", "'billing'", "like 'acme.io/app'"),
    case("label-is-the-release-selector", TUTORIAL, put("labels", {"release": "v2"}),
         "labels.release", "'v2'", "like 'acme.io/release'"),
    case("label-is-our-environment-label", TUTORIAL, put("labels", {"remote-agents.astronomer.io/environment": "prod"}),
         "labels.remote-agents.astronomer.io/environment", "'prod'", "remove it"),
    case("label-is-our-owner-label", TUTORIAL, put("labels", {"app.kubernetes.io/managed-by": "argocd"}),
         "labels.app.kubernetes.io/managed-by", "'argocd'", "remove it"),
    case("annotations-over-256-kib", TUTORIAL, put("annotations", {"acme.io/notes": "x" * 256 * 1024}),
         "annotations", "262157 bytes", "ConfigMap"),
    case("annotations-leave-no-room-for-the-role-arn", TUTORIAL, put("annotations", {"acme.io/notes": "x" * (255 * 1024)}),
         "annotations", "261133 bytes", "ConfigMap"),
    case("empty-branch", TUTORIAL, put("dag_bundles[0].branch", ""),
         "dag_bundles[0].branch", "got ''", "like 'main'"),
    case("branch-with-double-dot", TUTORIAL, put("dag_bundles[0].branch", "feature..x"),
         "dag_bundles[0].branch", "'feature..x'", "like 'main'"),
    case("branch-ending-in-lock", TUTORIAL, put("dag_bundles[0].branch", "release.lock"),
         "dag_bundles[0].branch", "'release.lock'", "like 'main'"),
    case("branch-with-space", TUTORIAL, put("dag_bundles[0].branch", "my branch"),
         "dag_bundles[0].branch", "'my branch'", "like 'main'"),
    case("branch-starting-with-dash", TUTORIAL, put("dag_bundles[0].branch", "-main"),
         "dag_bundles[0].branch", "'-main'", "like 'main'"),
    case("branch-ending-in-slash", TUTORIAL, put("dag_bundles[0].branch", "release/"),
         "dag_bundles[0].branch", "'release/'", "like 'main'"),
    case("subdir-leaving-the-repository", TUTORIAL, put("dag_bundles[0].subdir", "../other-repo/dags"),
         "dag_bundles[0].subdir", "'../other-repo/dags'", "write 'other-repo/dags'"),
    case("subdir-absolute", TUTORIAL, put("dag_bundles[0].subdir", "/etc"),
         "dag_bundles[0].subdir", "'/etc'", "write 'etc'"),
    case("subnet-id-too-short", TUTORIAL, put("cluster.subnet_ids", ["subnet-123", "subnet-0123456789abcdef0"]),
         "cluster.subnet_ids[0]", "'subnet-123'", "like 'subnet-0123456789abcdef0'"),
    case("subnet-id-upper-case", TUTORIAL, put("cluster.subnet_ids", ["subnet-0123456789ABCDEF0", "subnet-0123456789abcdef1"]),
         "cluster.subnet_ids[0]", "'subnet-0123456789ABCDEF0'", "like 'subnet-0123456789abcdef0'"),
    case("one-subnet", TUTORIAL, put("cluster.subnet_ids", ["subnet-0123456789abcdef0"]),
         "cluster.subnet_ids", "['subnet-0123456789abcdef0']", "at least two"),
    case("one-subnet-twice", TUTORIAL, put("cluster.subnet_ids", ["subnet-0123456789abcdef0"] * 2),
         "cluster.subnet_ids", "subnet-0123456789abcdef0", "at least two"),
    case("cluster-role-arn-short-account", TUTORIAL, put("cluster.cluster_role_arn", "arn:aws:iam::123:role/eks"),
         "cluster.cluster_role_arn", "'arn:aws:iam::123:role/eks'", "like 'arn:aws:iam::123456789012:role/"),
    case("node-role-arn-is-a-name", TUTORIAL, put("cluster.node_role_arn", "my-node-role"),
         "cluster.node_role_arn", "'my-node-role'", "like 'arn:aws:iam::123456789012:role/"),
    case("cluster-role-arn-wildcard", TUTORIAL, put("cluster.cluster_role_arn", "arn:aws:iam::123456789012:role/*"),
         "cluster.cluster_role_arn", "'arn:aws:iam::123456789012:role/*'", "like 'arn:aws:iam::123456789012:role/"),
    # Prefixes end up in the ARNs of IAM policies, where '?' is a wildcard and '${...}' a policy variable.
    case("xcom-prefix-with-policy-variable", TUTORIAL, put("backends.xcom.prefix", "xcom/${aws:username}"),
         "backends.xcom.prefix", "'xcom/${aws:username}'", "policy variables"),
    case("connections-prefix-with-question-mark", TUTORIAL, put("backends.secrets.connections_prefix", "airflow/conn?ctions"),
         "backends.secrets.connections_prefix", "'airflow/conn?ctions'", "wildcards"),
    case("state-store-prefix-with-space", TUTORIAL, put("backends.state_store", {"prefix": "task state"}),
         "backends.state_store.prefix", "'task state'", "letters, digits"),
    case("replicas-over-int32", TUTORIAL, put("workers[0].replicas", 2**31),
         "workers[0].replicas", "got 2147483648", "use a value <= 2147483647"),
    case("rollout-timeout-over-helm-duration", TUTORIAL, put("chart", {"rollout_timeout_seconds": 10**10}),
         "chart.rollout_timeout_seconds", "got 10000000000", "use a value <= 9223372036"),
    case("disk-size-over-ebs-maximum", TUTORIAL, put("cluster.node_groups[0].disk_size_gib", 20000),
         "cluster.node_groups[0].disk_size_gib", "got 20000", "use a value <= 16384"),
    case("health-schedule-once", TUTORIAL, put("health", {"schedule": "@once"}),
         "health.schedule", "'@once'", "'@hourly'"),
    case("drift-schedule-continuous", TUTORIAL, put("health", {"drift_schedule": "@continuous"}),
         "health.drift_schedule", "'@continuous'", "'@daily'"),
    case("health-schedule-unknown-preset", TUTORIAL, put("health", {"schedule": "@every 5m"}),
         "health.schedule", "'@every 5m'", "cron expression"),
    case("health-schedule-never-fires", TUTORIAL, put("health", {"schedule": "0 0 31 2 *"}),
         "health.schedule", "'0 0 31 2 *'", "never comes"),
]


@pytest.mark.parametrize("base, mutation, path, value, fix", CASES)
def test_bad_input_names_path_value_and_fix(
    base: dict[str, Any], mutation: Mutation, path: str, value: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(mutated(base, mutation))

    line = problem_at(raised.value, path)
    assert value in line
    assert fix in line


def test_cases_are_distinct_and_enough() -> None:
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids) >= 25


SECRET = "s3cr3t-value-do-not-print"


@pytest.mark.parametrize(
    "base, mutation, path, fix",
    [
        pytest.param(TUTORIAL, put("astro.token", SECRET), "astro.token", "astro.connection_id", id="astro-token"),
        pytest.param(TUTORIAL, put("workers[0].password", SECRET), "workers[0].password", "_conn_id", id="worker-password"),
        pytest.param(ONPREM, put("identity.aws_secret_access_key", SECRET), "identity.aws_secret_access_key",
                     "identity.aws_conn_id", id="static-credentials-key"),
        pytest.param(TUTORIAL, put("dag_bundles[0].git_token", SECRET), "dag_bundles[0].git_token",
                     "git_conn_id", id="git-token"),
        pytest.param(TUTORIAL, put("labels", {"password": SECRET}), "labels.password", "Airflow Connection",
                     id="label-keyed-password"),
        pytest.param(TUTORIAL, put("labels", {"bot": f"xoxb-{SECRET}"}), "labels.bot", "Airflow Connection",
                     id="label-value-slack-token"),
        pytest.param(TUTORIAL, put("annotations", {"ci.acme.io/auth": f"Bearer {SECRET}"}),
                     "annotations.ci.acme.io/auth", "Airflow Connection", id="annotation-bearer-token"),
        pytest.param(TUTORIAL, put("annotations", {"ci.acme.io/hook": f"https://ci:{SECRET}@ci.example.com/hook"}),
                     "annotations.ci.acme.io/hook", "Airflow Connection", id="annotation-url-with-credentials"),
        pytest.param(TUTORIAL, put("annotations", {"ci.acme.io/hook": f"https://ci.example.com/hook?token={SECRET}"}),
                     "annotations.ci.acme.io/hook", "Airflow Connection", id="annotation-url-query-token"),
        pytest.param(TUTORIAL, put("annotations", {"acme.io/id": f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.{SECRET}"}),
                     "annotations.acme.io/id", "Airflow Connection", id="annotation-jwt"),
        pytest.param(TUTORIAL, put("dag_bundles[0].repo_url", f"https://github.com/my-account/my-dags.git?token={SECRET}"),
                     "dag_bundles[0].repo_url", "git_conn_id", id="git-url-query-token"),
        pytest.param(TUTORIAL, put("dag_bundles[0].repo_url", f"http://octocat:{SECRET}@github.com/my-account/my-dags.git"),
                     "dag_bundles[0].repo_url", "git_conn_id", id="http-git-url-with-credentials"),
        pytest.param(TUTORIAL, put("chart", {"repo_url": f"https://ci:{SECRET}@charts.example.com"}),
                     "chart.repo_url", "chart.path", id="chart-url-with-credentials"),
        pytest.param(TUTORIAL, put("chart", {"repo_url": f"https://charts.example.com/?token={SECRET}"}),
                     "chart.repo_url", "chart.path", id="chart-url-query-token"),
    ],
)
def test_inline_secret_names_the_connection_and_hides_the_value(
    base: dict[str, Any], mutation: Mutation, path: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(mutated(base, mutation))

    assert fix in problem_at(raised.value, path)
    assert SECRET not in str(raised.value)


def test_credentials_in_dag_bundle_url_are_refused_and_hidden() -> None:
    url = f"https://octocat:{SECRET}@github.com/my-account/my-dags.git"
    with pytest.raises(ConfigError) as raised:
        parse_spec(mutated(TUTORIAL, put("dag_bundles[0].repo_url", url)))

    line = problem_at(raised.value, "dag_bundles[0].repo_url")
    assert "'https://***@github.com/my-account/my-dags.git'" in line
    assert "git_conn_id" in line
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    "document, got",
    [
        pytest.param(None, "empty document", id="empty-file"),
        pytest.param(["name"], "list", id="list"),
        pytest.param("tutorial", "str", id="string"),
    ],
)
def test_non_mapping_document_is_refused(document: Any, got: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(document)

    [problem] = raised.value.problems
    assert problem.startswith("(document): ")
    assert got in problem
    assert "tutorial.yaml" in problem


def test_duplicate_yaml_key_is_refused_with_its_lines(tmp_path: Path) -> None:
    text = (ENVIRONMENTS / "tutorial.yaml").read_text() + "namespace: other-namespace\n"
    spec_file = tmp_path / "tutorial.yaml"
    spec_file.write_text(text)
    first = 1 + text.splitlines().index("namespace: my-namespace")

    with pytest.raises(ConfigError) as raised:
        load_spec(spec_file)

    assert raised.value.source == str(spec_file)
    assert raised.value.problems == [
        f"line {len(text.splitlines())}: key 'namespace' appears twice (first on line {first}); keep one of them"
    ]


def test_duplicate_nested_yaml_key_is_refused(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: x\nworkers:\n  - name: a\n    queue: a\n    queue: b\n")

    with pytest.raises(ConfigError, match=r"line 5: key 'queue' appears twice \(first on line 4\); keep one"):
        load_spec(spec_file)


def test_yaml_syntax_error_is_one_line_with_position(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: x\nastro: [unclosed\n")

    with pytest.raises(ConfigError) as raised:
        load_spec(spec_file)

    [problem] = raised.value.problems
    assert re.match(r"^line \d+, column \d+: not valid YAML: .+; fix the syntax there$", problem)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")


def test_several_problems_are_reported_at_once() -> None:
    data = mutated(
        TUTORIAL,
        put("namespace", "My_Namespace"),
        append("workers", {"name": "etl", "queue": "default"}),
        put("backends.xcom.bucket", "My_Bucket"),
        put("backends.logs.prefix", "/logs"),
        put("cluster.kubernetes_version", "1.29"),
        put("chart", {"version": "latest"}),
        put("namespce", "x"),
    )

    with pytest.raises(ConfigError) as raised:
        parse_spec(data)

    paths = [p.split(": ", 1)[0] for p in raised.value.problems]
    assert sorted(paths) == sorted([
        "namespace", "workers[1].queue", "backends.xcom.bucket", "backends.logs.prefix",
        "cluster.kubernetes_version", "chart.version", "namespce",
    ])


def test_one_validator_reports_each_of_its_problems_on_its_own_line() -> None:
    data = mutated(
        TUTORIAL,
        append("workers", {"name": "default-worker", "queue": "default"}),
        put("workers[0].pip_packages", ["pandas", "numpy>1"]),
    )

    with pytest.raises(ConfigError) as raised:
        parse_spec(data)

    paths = [p.split(": ", 1)[0] for p in raised.value.problems]
    assert sorted(paths) == ["workers[0].pip_packages[0]", "workers[0].pip_packages[1]"]

    with pytest.raises(ConfigError) as raised:
        parse_spec(mutated(TUTORIAL, append("workers", {"name": "default-worker", "queue": "default"})))

    assert [p.split(": ", 1)[0] for p in raised.value.problems] == ["workers[1].name", "workers[1].queue"]


def test_config_error_reads_as_one_line_per_problem() -> None:
    data = mutated(TUTORIAL, put("namespace", "My_Namespace"), put("workers[0].replicas", 0))

    with pytest.raises(ConfigError) as raised:
        parse_spec(data, source="include/environments/tutorial.yaml")

    error = raised.value
    assert len(error.problems) == 2
    assert all("\n" not in problem for problem in error.problems)
    assert str(error).splitlines() == [
        "include/environments/tutorial.yaml: 2 problems",
        *(f"  - {problem}" for problem in error.problems),
    ]
