"""How our operators reach the agents' Kubernetes cluster: one place for EKS and existing clusters.

Two ways, both ending in the cncf-kubernetes ``KubernetesHook`` (Python client) or in environment
variables for the ``helm`` binary:

- ``kubernetes_conn_id``: an existing cluster (on-prem) through an Airflow Kubernetes Connection.
- ``eks_cluster_name`` + ``aws_conn_id``: an EKS cluster. A short-lived EKS token is made in memory
  from the AWS Connection (the same presigned STS URL ``aws eks get-token`` makes) and handed to the
  client in memory, and to helm through ``HELM_KUBETOKEN``: no credential is written to disk.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk.log import mask_secret

from remote_agents.errors import ClusterError

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

# The amazon, cncf-kubernetes and kubernetes imports sit in the functions that use them: every Dag
# file importing an operator would otherwise pay about 0.6 s for them at each parse.


@dataclass(frozen=True)
class ClusterAccess:
    """Which cluster to talk to. Plain fields only, so triggers can serialize it."""

    kubernetes_conn_id: str | None = None
    eks_cluster_name: str | None = None
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None
    verify: bool | str | None = None  # as in the amazon provider's hooks, for the EKS calls
    botocore_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if bool(self.kubernetes_conn_id) == bool(self.eks_cluster_name):
            raise ClusterError(
                "give exactly one of kubernetes_conn_id (an existing cluster) or eks_cluster_name "
                f"(an EKS cluster reached with aws_conn_id); got kubernetes_conn_id={self.kubernetes_conn_id!r}, "
                f"eks_cluster_name={self.eks_cluster_name!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.eks_cluster_name:
            return f"EKS cluster {self.eks_cluster_name}"
        return f"Kubernetes connection {self.kubernetes_conn_id}"


@dataclass(frozen=True)
class _EksEndpoint:
    server: str
    ca_data: str
    token: str


def _eks_endpoint(access: ClusterAccess) -> _EksEndpoint:
    from airflow.providers.amazon.aws.hooks.eks import EksHook
    from airflow.providers.amazon.aws.utils.eks_get_token import fetch_access_token_for_cluster

    assert access.eks_cluster_name is not None
    hook = EksHook(aws_conn_id=access.aws_conn_id, region_name=access.region_name, verify=access.verify,
                   config=access.botocore_config)
    cluster = hook.conn.describe_cluster(name=access.eks_cluster_name)["cluster"]
    if cluster.get("status") != "ACTIVE":
        raise ClusterError(f"EKS cluster {access.eks_cluster_name} is {cluster.get('status')}, not ACTIVE")
    session = hook.get_session()
    region = session.region_name or access.region_name
    # EKS accepts only a token signed for the regional STS endpoint (see eks_get_token).
    sts_url = f"https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
    token = fetch_access_token_for_cluster(access.eks_cluster_name, sts_url, region_name=region, session=session)
    mask_secret(token)
    return _EksEndpoint(cluster["endpoint"], cluster["certificateAuthority"]["data"], token)


def _eks_config_dict(endpoint: _EksEndpoint, name: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": endpoint.server}
    if endpoint.server.startswith("https://"):
        cluster["certificate-authority-data"] = endpoint.ca_data
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": "remote-agents", "user": {"token": endpoint.token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "remote-agents"}}],
        "current-context": name,
    }


def kubernetes_hook(access: ClusterAccess) -> KubernetesHook:
    """A ``KubernetesHook`` for the cluster; for EKS, configured in memory with a fresh token."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes.client import Configuration

    # A Configuration of its own: without one the client loads into the process-wide default, so two
    # hooks for different clusters in one process (a triggerer) would overwrite each other's endpoint.
    if access.kubernetes_conn_id:
        return KubernetesHook(conn_id=access.kubernetes_conn_id, client_configuration=Configuration())
    assert access.eks_cluster_name is not None
    endpoint = _eks_endpoint(access)
    # kubernetes_conn_id=None too: it defaults to "kubernetes_default", whose kube_config_path would
    # clash with config_dict ("mutually exclusive") wherever that connection exists.
    return KubernetesHook(
        conn_id=None,
        kubernetes_conn_id=None,
        config_dict=_eks_config_dict(endpoint, access.eks_cluster_name),
        client_configuration=Configuration(),
    )


@contextlib.contextmanager
def helm_environment(access: ClusterAccess) -> Iterator[dict[str, str]]:
    """Environment variables that point the ``helm`` binary at the cluster, valid inside the block.

    Anything written lives in a private 0700 directory that is removed on exit.
    """
    with tempfile.TemporaryDirectory(prefix="remote-agents-helm-") as home:
        os.chmod(home, 0o700)
        env = {
            "HELM_CACHE_HOME": os.path.join(home, "cache"),
            "HELM_CONFIG_HOME": os.path.join(home, "config"),
            "HELM_DATA_HOME": os.path.join(home, "data"),
        }
        if access.eks_cluster_name:
            endpoint = _eks_endpoint(access)
            env.update(HELM_KUBEAPISERVER=endpoint.server, HELM_KUBETOKEN=endpoint.token)
            if endpoint.server.startswith("https://"):
                ca_file = os.path.join(home, "ca.crt")
                with open(ca_file, "wb") as handle:
                    handle.write(base64.b64decode(endpoint.ca_data))
                env["HELM_KUBECAFILE"] = ca_file
        else:
            env["KUBECONFIG"] = _connection_kubeconfig(access, home)
        yield env


def _connection_kubeconfig(access: ClusterAccess, home: str) -> str:
    """The kubeconfig file of a Kubernetes Connection: its path, or its inline JSON written 0600."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    hook = KubernetesHook(conn_id=access.kubernetes_conn_id)
    path = hook._get_field("kube_config_path")
    if path:
        return str(path)
    inline = hook._get_field("kube_config")
    if not inline:
        raise ClusterError(
            f"Kubernetes connection {access.kubernetes_conn_id} has neither kube_config_path nor kube_config; "
            "helm needs one of them"
        )
    target = os.path.join(home, "kubeconfig")
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(inline if isinstance(inline, str) else json.dumps(inline))
    return target
