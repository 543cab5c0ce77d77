"""Conventions every operator shares with the amazon provider's (checked over the whole package)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from typing import Any

import pytest
from airflow.sdk import BaseOperator

from remote_agents.operators import astro, cluster, helm, irsa, kubernetes, secrets_manager, selftest

MODULES = (astro, cluster, helm, irsa, kubernetes, secrets_manager, selftest)


def deferrable_defaults(operator: type) -> set[Any]:
    """The default of ``deferrable`` in every ``__init__`` of the class and its bases that takes one."""
    return {parameters["deferrable"].default for base in operator.__mro__
            if "__init__" in vars(base) and "deferrable" in (parameters := inspect.signature(base.__init__).parameters)}


OPERATORS = sorted(
    {obj for module in MODULES for name, obj in vars(module).items()
     if inspect.isclass(obj) and issubclass(obj, BaseOperator) and not name.startswith("_")
     and obj.__module__.startswith("remote_agents.")},
    key=lambda cls: cls.__name__,
)
WAITING = [cls for cls in OPERATORS if deferrable_defaults(cls)]


def test_the_operators_that_wait_are_the_ones_we_know() -> None:
    assert [cls.__name__ for cls in WAITING] == [
        "DeleteEksClusterOperator", "EnsureAgentTokenOperator", "EnsureEksClusterOperator",
        "HelmUpgradeInstallOperator", "SelfTestRunOperator", "WaitForEksNodegroupsOperator",
    ]


@pytest.mark.parametrize("operator", WAITING, ids=lambda cls: cls.__name__)
def test_deferrable_is_a_plain_bool_defaulting_to_the_airflow_setting(operator: type[BaseOperator]) -> None:
    assert deferrable_defaults(operator) == {False}  # [operators] default_deferrable is off in the tests
    assert "deferrable" not in operator.template_fields


def test_default_deferrable_on_makes_every_waiting_operator_defer_by_default() -> None:
    paths = [f"{cls.__module__}:{cls.__name__}" for cls in WAITING]
    script = (
        "import importlib, inspect\n"
        + inspect.getsource(deferrable_defaults).replace("set[Any]", "set")
        + f"for path in {paths!r}:\n"
        "    module, name = path.split(':')\n"
        "    print(name, deferrable_defaults(getattr(importlib.import_module(module), name)))\n"
    )
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout

    assert out.splitlines() == [f"{cls.__name__} {{True}}" for cls in WAITING]


def test_aws_settings_reach_every_hook_an_operator_makes_as_in_the_amazon_provider() -> None:
    from remote_agents.hooks.aws import VpcHook
    from remote_agents.operators.base import AwsOperator
    from remote_agents.operators.secrets_manager import DeleteOwnedSecretsOperator

    operator = DeleteOwnedSecretsOperator(task_id="t", secret_ids=["x"], tags={"k": "v"}, aws_conn_id=None,
                                          region_name="eu-west-1", verify=False,
                                          botocore_config={"retries": {"max_attempts": 1, "mode": "standard"}})
    client = operator.aws_hook(VpcHook).conn

    assert client.meta.region_name == "eu-west-1" and client._endpoint.http_session._verify is False
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 2}  # botocore: max_attempts 1 = 1 retry
    assert all(field in cls.template_fields for cls in OPERATORS if issubclass(cls, AwsOperator)
               for field in ("aws_conn_id", "region_name", "verify"))
