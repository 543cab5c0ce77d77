"""Waiting for an EKS cluster and its node groups to become ACTIVE, or to be gone, without a worker slot.

The judgement of "done / still waiting / failed" is ``eks_progress.cluster_progress``, shared with
the operators' in-task wait (``deferrable=False``).

Why not the amazon provider's ``EksCreateClusterTrigger`` / ``EksCreateNodegroupTrigger`` (boto's
``cluster_active`` / ``nodegroup_active`` waiters): they wait for one resource each, so a cluster
and its node groups would be several deferrals, and a failure ends with the waiter's
"Waiter encountered a terminal failure state". This trigger waits for all of them in one deferral,
fails as soon as any is CREATE_FAILED or DEGRADED with EKS's own health issues (code and message)
in the error, and carries the operator's work so far back in its event. Deleting NAT gateways, where
a stock waiter does the job, uses ``AwsBaseWaiterTrigger`` (``triggers/vpc.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from remote_agents.triggers.eks_progress import DONE, WAITING, Target, cluster_progress

# botocore and the AWS hooks are imported in run(): the operators that defer to this trigger are
# imported by Dag files, which should not pay for boto3 and the amazon provider at every parse.

class EksClusterStateTrigger(BaseTrigger):
    """Polls describe_cluster and describe_nodegroup until ``target`` is reached, then yields one event.

    ``result`` is the deferring operator's work so far (plain JSON); it comes back in the event, so
    ``execute_complete`` can report every change even where defer(kwargs=...) is not passed on.
    """

    def __init__(
        self,
        cluster_name: str,
        nodegroup_names: list[str],
        target: Target = "active",
        include_cluster: bool = True,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 30.0,
        max_attempts: int = 120,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.nodegroup_names = list(nodegroup_names)
        self.target = target
        self.include_cluster = include_cluster
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.result = result or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "cluster_name": self.cluster_name,
                "nodegroup_names": self.nodegroup_names,
                "target": self.target,
                "include_cluster": self.include_cluster,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poll_interval": self.poll_interval,
                "max_attempts": self.max_attempts,
                "result": self.result,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from botocore.exceptions import ClientError

        from remote_agents.hooks.aws import EksClusterHook, aws_error

        hook = EksClusterHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        message = ""
        try:
            async with await hook.get_async_conn() as client:
                for _ in range(self.max_attempts):
                    cluster = await _describe(client, "describe_cluster", "cluster", name=self.cluster_name)
                    nodegroups = {
                        name: await _describe(
                            client, "describe_nodegroup", "nodegroup", clusterName=self.cluster_name, nodegroupName=name
                        )
                        for name in self.nodegroup_names
                    }
                    state, message = cluster_progress(
                        self.cluster_name, cluster, nodegroups, self.target, self.include_cluster
                    )
                    if state != WAITING:
                        yield TriggerEvent({"status": "success" if state == DONE else "error", "message": message, "result": self.result})
                        return
                    self.log.info("%s; checking again in %ss", message, self.poll_interval)
                    await asyncio.sleep(self.poll_interval)
        except ClientError as error:
            mapped = aws_error(error, "eks", f"waiting for {self.cluster_name}", self.aws_conn_id)
            yield TriggerEvent({"status": "error", "message": str(mapped), "result": self.result})
            return
        waited = self.max_attempts * self.poll_interval
        yield TriggerEvent(
            {"status": "error", "message": f"gave up after {waited:.0f} s: {message}; raise max_attempts or re-run", "result": self.result}
        )


async def _describe(client: Any, operation: str, key: str, **kwargs: Any) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    from remote_agents.hooks.aws import NOT_FOUND_CODES

    try:
        reply = await getattr(client, operation)(**kwargs)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
            return None
        raise
    return reply[key]
