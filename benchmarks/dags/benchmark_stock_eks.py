"""The amazon provider's stock EKS operator waiting in its task (no deferral), for the worker-slot comparison.

Only in the benchmark's Dag folder (benchmarks/run.py links it next to dags/*.py); the cluster
role ARN and the poll interval come from the benchmark's environment.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.amazon.aws.operators.eks import EksCreateClusterOperator
from airflow.sdk import DAG

with DAG(dag_id="benchmark_stock_eks", schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as dag:
    EksCreateClusterOperator(
        task_id="create_cluster",
        cluster_name="benchmark-stock",
        cluster_role_arn=os.environ.get("BENCH_STOCK_ROLE_ARN", "arn:aws:iam::123456789012:role/benchmark-stock-eks"),
        resources_vpc_config={"subnetIds": ["subnet-00000000000000001", "subnet-00000000000000002"]},
        compute=None,
        wait_for_completion=True,
        deferrable=False,
        waiter_delay=max(1, int(float(os.environ.get("REMOTE_AGENTS_BENCH_POLL_INTERVAL", "30")))),
        waiter_max_attempts=600,
        region_name=os.environ.get("BENCH_STOCK_REGION", "us-east-1"),
    )
