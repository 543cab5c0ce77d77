"""Every argument of every operator is documented with a ``:param`` line, as the amazon provider's are."""

from __future__ import annotations

import inspect
import re

import pytest
from airflow.sdk import BaseOperator

from remote_agents.operators import astro, cluster, helm, irsa, kubernetes, secrets_manager, selftest

MODULES = (astro, cluster, helm, irsa, kubernetes, secrets_manager, selftest)
OPERATORS = sorted(
    {obj for module in MODULES for name, obj in vars(module).items()
     if inspect.isclass(obj) and issubclass(obj, BaseOperator) and not name.startswith("_")
     and obj.__module__ == module.__name__},
    key=lambda cls: cls.__name__,
)
# Airflow documents its own arguments (task_id, retries, ...).
AIRFLOW_ARGUMENTS = {"self", "kwargs", *inspect.signature(BaseOperator.__init__).parameters}


def ours(operator: type) -> list[type]:
    """The operator and its base classes in remote_agents: where its arguments are declared and documented."""
    return [klass for klass in operator.__mro__ if klass.__module__.startswith("remote_agents.")]


def arguments(operator: type) -> set[str]:
    return {name for klass in ours(operator) if "__init__" in vars(klass)
            for name in inspect.signature(klass.__init__).parameters} - AIRFLOW_ARGUMENTS


def documented(operator: type) -> set[str]:
    return {name for klass in ours(operator) for name in re.findall(r"^\s*:param (\w+):", klass.__doc__ or "", re.M)}


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda cls: cls.__name__)
def test_every_argument_has_a_param_line(operator: type[BaseOperator]) -> None:
    missing = sorted(arguments(operator) - documented(operator))
    assert not missing, f"{operator.__name__}: no :param line for {missing}"
