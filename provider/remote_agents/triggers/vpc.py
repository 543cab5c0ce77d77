"""Waiting, without a worker slot, for NAT gateways to be deleted: they hold their elastic IP and
subnet until then (about a minute on AWS), so the rest of the VPC can only go afterwards.

No waiting logic of our own: botocore's ``nat_gateway_deleted`` waiter (every NAT gateway
``deleted``, or ``NatGatewayNotFound``), run by the amazon provider's ``AwsBaseWaiterTrigger`` in the
triggerer and by its logging ``wait`` in the task (``deferrable=False``). The operators import this
module only when they wait, so Dag files do not pay for boto3 and the amazon provider at every parse.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger
from airflow.providers.amazon.aws.utils.waiter_with_logging import wait
from airflow.providers.common.compat.sdk import AirflowException

from remote_agents.errors import ClusterError
from remote_agents.hooks.aws import VpcHook

WAITER = "nat_gateway_deleted"
FAILURE_MESSAGE = "NAT gateway deletion failed"
STATUS_MESSAGE = "NAT gateways still deleting"
STATUS_QUERIES = ["NatGateways[].[NatGatewayId, State]"]


def wait_in_task(hook: VpcHook, nat_gateway_ids: list[str], poll_interval: float, max_attempts: int) -> None:
    """The same waiter, polling in the task; raises ``ClusterError`` when it fails or gives up."""
    try:
        wait(hook.get_waiter(WAITER), poll_interval, max_attempts, {"NatGatewayIds": nat_gateway_ids},  # type: ignore[arg-type]
             FAILURE_MESSAGE, STATUS_MESSAGE, STATUS_QUERIES)
    except AirflowException as error:
        raise ClusterError(still_deleting(nat_gateway_ids, str(error))) from error


def still_deleting(nat_gateway_ids: list[str], reason: str) -> str:
    return (f"NAT gateways {', '.join(nat_gateway_ids)} are not deleted ({reason}); the rest of the VPC waits for them. "
            "Check them in the VPC console and re-run the teardown")


class NatGatewaysDeletedTrigger(AwsBaseWaiterTrigger):
    """Polls DescribeNatGateways until every one of ``nat_gateway_ids`` is deleted, then yields one event.

    The event is ``{"status": "success" | "error", "result": result}`` (an error also has a
    ``message``), so ``execute_complete`` can report every change even where defer(kwargs=...) is
    not passed on.

    :param nat_gateway_ids: The NAT gateways to wait for (asked to be deleted already).
    :param result: The deferring operator's work so far (plain JSON); it comes back in the event.
    :param waiter_delay: Seconds between polls.
    :param waiter_max_attempts: Polls before the trigger gives up with an error event.
    :param aws_conn_id: The Airflow AWS connection.
    :param region_name: The region of the NAT gateways.
    """

    aws_hook_class = VpcHook

    def __init__(
        self,
        *,
        nat_gateway_ids: list[str],
        result: dict[str, Any] | None = None,
        waiter_delay: float = 30.0,
        waiter_max_attempts: int = 120,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
    ) -> None:
        super().__init__(
            serialized_fields={"nat_gateway_ids": list(nat_gateway_ids), "result": result or {}},
            waiter_name=WAITER,
            waiter_args={"NatGatewayIds": list(nat_gateway_ids)},
            failure_message=FAILURE_MESSAGE,
            status_message=STATUS_MESSAGE,
            status_queries=STATUS_QUERIES,
            return_key="result",
            return_value=result or {},
            # A float: the sandbox's tests poll every fraction of a second; asyncio.sleep takes one.
            waiter_delay=waiter_delay,  # type: ignore[arg-type]
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
        )
