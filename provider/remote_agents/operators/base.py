"""What every converging operator shares: a dry-run switch, the cluster it acts on, one way to report.

An operator's return value (its XCom) is ``report_changes(...)``: the list of ``Change``s it made
(or would make, in a dry run) plus non-secret facts such as a role ARN or a release revision. The
bootstrap Dag's summary reads these from every task to print one plan or one run summary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperator

from remote_agents.changes import Change
from remote_agents.hooks.cluster import ClusterAccess

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.triggers.base import BaseTrigger

AwsHook = TypeVar("AwsHook", bound="AwsBaseHook")

# The default of every operator's ``deferrable``, read as the amazon provider reads it: without a
# triggerer (the setting off, as by default) every wait polls in the task instead.
DEFAULT_DEFERRABLE = conf.getboolean("operators", "default_deferrable", fallback=False)

CLUSTER_TEMPLATE_FIELDS = ("kubernetes_conn_id", "eks_cluster_name", "aws_conn_id", "region_name", "verify", "dry_run")


def as_bool(value: bool | str | None) -> bool:
    """A templated flag renders to the string "True"/"False" (unless the Dag renders native objects)."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", ""):
            raise ValueError(f"expected a boolean, got {value!r}")
        return value.strip().lower() in ("true", "1")
    return bool(value)


def defer_or_wait(operator: Any, context: Any, trigger: BaseTrigger, timeout: timedelta) -> Any:
    """Hand ``trigger`` to the triggerer when ``operator.deferrable``; otherwise run the same trigger
    in the task to its first event. Either way ``operator.execute_complete`` gets that event."""
    if operator.deferrable:
        operator.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)
    return operator.execute_complete(context, asyncio.run(first_event(trigger)))


async def first_event(trigger: BaseTrigger) -> dict[str, Any] | None:
    async for event in trigger.run():
        return dict(event.payload)
    return None


def report_changes(log: logging.Logger | Any, changes: Iterable[Change], **facts: Any) -> dict[str, Any]:
    """Log one line per resource and return the XCom payload: ``{"changes": [...], **facts}``."""
    payload = [change.to_dict() for change in changes]
    for change in payload:
        log.info("%s: %s%s", change["resource"], change["action"], " (dry run)" if change["dry_run"] else "")
        for path, values in change["diff"].items():
            log.info("    %s: %r -> %r", path, values["from"], values["to"])
    return {"changes": payload, **facts}


AWS_TEMPLATE_FIELDS = ("aws_conn_id", "region_name", "verify", "dry_run")


class AwsOperator(BaseOperator):
    """Base of operators that converge AWS resources (IAM, EKS, VPC) through the amazon provider's hooks.

    The arguments, their defaults and their templating are those of the amazon provider's
    ``AwsBaseOperator``, and every hook the operator makes gets them (``aws_hook``). It is not a
    subclass of it: that module imports boto3, which would add about 0.15 s to each parse of every
    Dag file that imports an operator (measured with ``python -X importtime``; the parse budget is
    0.1 s for a file with ten specs).

    :param aws_conn_id: the Airflow AWS Connection; None uses boto3's default credentials
    :param region_name: the AWS region; None takes the Connection's, else boto3's default
    :param verify: whether to verify TLS certificates, or a CA bundle path (as in the amazon provider)
    :param botocore_config: botocore client configuration (retries, timeouts, proxies), as a dict
    :param dry_run: report what would change and change nothing (templated: the strings
        ``"True"``/``"False"`` are accepted)
    """

    template_fields: Sequence[str] = AWS_TEMPLATE_FIELDS

    def __init__(
        self,
        *,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config
        self.dry_run = dry_run

    def aws_hook(self, hook_class: type[AwsHook]) -> AwsHook:
        """One of the AWS hooks with this operator's connection, region, TLS and botocore settings."""
        return hook_class(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                          config=self.botocore_config)

    @property
    def is_dry_run(self) -> bool:
        return as_bool(self.dry_run)


class ClusterOperator(AwsOperator):
    """Base of operators that act on the agents' Kubernetes cluster.

    Give ``kubernetes_conn_id`` for an existing cluster, or ``eks_cluster_name`` (with ``aws_conn_id``
    and ``region_name``) for EKS. With ``dry_run=True`` nothing is changed and the plan is returned;
    a dry run against an EKS cluster that does not exist yet is skipped: there is nothing to read,
    everything in the cluster would be created.

    :param kubernetes_conn_id: a cncf-kubernetes Connection to an existing cluster; give this or
        ``eks_cluster_name``, not both
    :param eks_cluster_name: an EKS cluster, reached with a short-lived token made from ``aws_conn_id``
        in ``region_name``
    """

    template_fields: Sequence[str] = CLUSTER_TEMPLATE_FIELDS

    def __init__(
        self, *, kubernetes_conn_id: str | None = None, eks_cluster_name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.kubernetes_conn_id = kubernetes_conn_id
        self.eks_cluster_name = eks_cluster_name

    def pre_execute(self, context: Any) -> None:
        if self.is_dry_run and self.eks_cluster_name and not self._eks_cluster_exists():
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(
                f"dry run: EKS cluster {self.eks_cluster_name} does not exist yet, so everything in it would be created"
            )

    def _eks_cluster_exists(self) -> bool:
        from remote_agents.hooks.aws import EksClusterHook

        return self.aws_hook(EksClusterHook).cluster(self.eks_cluster_name) is not None

    @property
    def cluster_access(self) -> ClusterAccess:
        return ClusterAccess(
            kubernetes_conn_id=self.kubernetes_conn_id,
            eks_cluster_name=self.eks_cluster_name,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
        )
