"""Tear down Remote Execution Agents: one Dag per environment spec in include/environments/.

Deletes only what carries this environment's ownership labels/tags; everything tolerates
"already gone", so a failed teardown is simply run again.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, chain, cross_downstream, get_current_context, task

from remote_agents import naming
from remote_agents.environments import (
    START,
    EnvironmentFile,
    cluster_kwargs,
    environment_files,
    environments_folder,
    fail_run_when_a_task_failed,
    invalid_spec_dag,
    needed_by_others,
)
from remote_agents.operators.astro import (
    RevokeAgentTokenOperator,
    RevokeRegistryTokenOperator,
    UpdateRemoteExecutionSettingsOperator,
)
from remote_agents.operators.base import as_bool
from remote_agents.operators.cluster import DeleteEksClusterOperator
from remote_agents.operators.helm import HelmUninstallOperator
from remote_agents.operators.irsa import DeleteIrsaRoleOperator, DeleteOidcProviderOperator
from remote_agents.operators.kubernetes import DeleteConfigMapOperator, DeleteNamespaceOperator, DeleteSecretOperator
from remote_agents.operators.secrets_manager import DeleteOwnedSecretsOperator
from remote_agents.spec import EnvironmentSpec
from remote_agents.summary import record_failure

DRY_RUN = "{{ params.dry_run }}"

DOC = """
### Tear down Remote Execution Agents: `{name}`

Uninstalls the agent release, revokes the agent and registry tokens in Astro (through the Astro API,
also when the cluster is already gone), undoes the Deployment settings the bootstrap made
(`astro.allowed_ip_ranges`, `astro.show_task_logs`), deletes our Secrets, ConfigMap and namespace,
the health checks' canary secrets in Secrets Manager and the incident Variables, then the IRSA
role(s), the OIDC provider, the node groups, the cluster, its VPC and the EKS roles — each only if
this project created it (ownership labels and tags). Something that exists but is not ours is left
alone and listed as skipped; what another spec in the environments folder still uses (the cluster it
adopts with its OIDC provider, an IRSA role it names too) is kept, and the summary says for whom.

Type the environment name `{name}` in *confirm* to run it; *dry run* lists what would be deleted.
"""


def teardown_params(name: str) -> dict[str, Param]:
    return {
        # No default and `const`: the trigger form (and the REST API) refuse any other text, so a wrong
        # environment cannot be torn down by a slip; the Dag has no schedule, so no default is needed.
        "confirm": Param(type="string", const=name, title="Confirm",
                         description=f"Type '{name}' to tear this environment down."),
        "dry_run": Param(False, type="boolean", title="Dry run", description="List what would be deleted; delete nothing."),
    }


def build_teardown_dag(environment: EnvironmentFile, specs: list[EnvironmentSpec]) -> DAG:
    """:param specs: every valid spec of the folder, so what another environment uses is kept"""
    spec = environment.spec
    assert spec is not None
    needed = needed_by_others(spec, specs)
    access = cluster_kwargs(spec)
    common = {"namespace": spec.namespace, "environment": spec.name, "dry_run": DRY_RUN, **access}
    astro = {"deployment_id": spec.astro.deployment_id, "organization_id": spec.astro.organization_id,
             "astro_conn_id": spec.astro.connection_id}
    with DAG(
        dag_id=f"remote_agents_teardown__{spec.name}",
        description=f"Delete what the bootstrap of {spec.name} created (type the name to confirm)",
        dag_display_name=f"Teardown {spec.name}",
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["remote-agents", "teardown", spec.name],
        params=teardown_params(spec.name),
        default_args={"on_failure_callback": record_failure},
        doc_md=DOC.format(name=spec.name),
    ) as dag:

        @task
        def check_confirmation(**context: Any) -> None:
            """The trigger form already refuses another name; this guards a run made without params
            (``[core] dag_run_conf_overrides_params = False``)."""
            typed = context["params"].get("confirm")
            if typed != spec.name:
                raise ValueError(f"confirm: got {typed!r}; type the environment name {spec.name!r} to tear it down")

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def cluster_reachable() -> bool:
            """A cluster already deleted (by an earlier, interrupted teardown) has nothing left inside."""
            if not spec.eks:
                return True
            from remote_agents.hooks.aws import EksClusterHook

            hook = EksClusterHook(aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region)
            try:
                return hook.conn.describe_cluster(name=spec.eks.name)["cluster"]["status"] == "ACTIVE"
            except hook.conn.exceptions.ResourceNotFoundException:
                return False

        uninstall = HelmUninstallOperator(
            task_id="helm_uninstall", release_name=spec.release_name, namespace=spec.namespace, dry_run=DRY_RUN, **access,
        )
        # Tokens first: the Secrets carry the ids of the tokens to revoke. After the uninstall, so no
        # agent is left running with a revoked token; and also when the cluster is gone (uninstall
        # skipped), since the tokens live in Astro, not in the cluster.
        revoke = [
            RevokeAgentTokenOperator(task_id="revoke_agent_token", secret_name=spec.astro.agent_token_secret_name,
                                     trigger_rule=TriggerRule.NONE_FAILED, **astro, **common),
            RevokeRegistryTokenOperator(task_id="revoke_registry_token", secret_name=spec.astro.registry_secret_name,
                                        trigger_rule=TriggerRule.NONE_FAILED, **astro, **common),
        ]
        secret_names = [spec.astro.agent_token_secret_name, spec.astro.registry_secret_name]
        if spec.identity.mode == "static-credentials":
            secret_names.append(spec.identity.secret_name)
        delete_objects = [
            *(DeleteSecretOperator(task_id=f"delete_secret_{name.replace('-', '_')}", secret_name=name, **common)
              for name in secret_names),
            DeleteConfigMapOperator(task_id="delete_constraints_configmap",
                                    configmap_name=naming.constraints_configmap_name(spec), **common),
        ]
        namespace = DeleteNamespaceOperator(task_id="delete_namespace", **common)
        check_confirmation_task = check_confirmation()
        chain(check_confirmation_task, cluster_reachable(), uninstall, revoke)
        cross_downstream([uninstall, *revoke], delete_objects)  # skipped with the uninstall when the cluster is gone
        chain(delete_objects, namespace)

        canaries = DeleteOwnedSecretsOperator(
            task_id="delete_canary_secrets", secret_ids=sorted(naming.canary_secret_names(spec).values()),
            tags=naming.ownership_tags(spec), aws_conn_id=spec.aws_conn_id, region_name=spec.backends.aws_region,
            dry_run=DRY_RUN,
        )

        @task
        def delete_incident_variables(**context: Any) -> dict[str, Any]:
            """The health and drift Dags' open incidents: no Dag is left to close them."""
            from airflow.sdk import Variable

            from remote_agents.changes import Action, Change

            dry_run = as_bool(context["params"]["dry_run"])
            changes = []
            for dag in naming.INCIDENT_DAGS:
                key = naming.incident_variable(spec.name, dag)
                found = Variable.get(key, default=None) is not None
                if found and not dry_run:
                    Variable.delete(key)
                changes.append(Change(f"airflow:variable/{key}", Action.DELETED if found else Action.ABSENT,
                                      dry_run=dry_run).to_dict())
            return {"changes": changes}

        leftovers = [canaries, delete_incident_variables()]
        chain(check_confirmation_task, leftovers)

        settings_tasks = []
        if spec.astro.allowed_ip_ranges is not None or spec.astro.show_task_logs:

            @task
            def egress_ips() -> list[str]:
                """The public IPs of our VPC's NAT gateway, found by ownership tags (read before the VPC goes)."""
                from remote_agents.hooks.aws import VpcHook

                if not spec.eks:
                    return []
                ec2 = VpcHook(aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region)
                return [a["PublicIp"] for a in ec2.find("addresses", naming.ownership_tags(spec)) if a.get("PublicIp")]

            addresses = egress_ips()
            ranges = None if spec.astro.allowed_ip_ranges is None else [*spec.astro.allowed_ip_ranges, addresses]
            settings = UpdateRemoteExecutionSettingsOperator(
                task_id="restore_deployment_settings", deployment_id=spec.astro.deployment_id,
                organization_id=spec.astro.organization_id, astro_conn_id=spec.astro.connection_id,
                exclude_allowed_ip_address_ranges=ranges, clear_task_logs=spec.astro.show_task_logs, dry_run=DRY_RUN,
            )
            chain(check_confirmation_task, addresses, settings)
            settings_tasks = [settings]
        aws_tasks = []
        if spec.eks:
            tags = naming.ownership_tags(spec)
            aws = {"aws_conn_id": spec.aws_conn_id, "region_name": spec.eks.region, "dry_run": DRY_RUN}
            roles = DeleteIrsaRoleOperator(
                task_id="delete_irsa_roles", tags=tags, **aws,
                role_names=[r for r in naming.irsa_role_names(spec).values() if f"iam:role/{r}" not in needed],
            )
            # Run after the in-cluster deletions, or straight away when the cluster is already gone.
            roles.trigger_rule = TriggerRule.NONE_FAILED
            sharing = needed.get(f"eks:cluster/{spec.eks.name}", [])
            # The OIDC provider is found through the cluster's issuer, so it goes before the cluster.
            oidc = DeleteOidcProviderOperator(task_id="delete_oidc_provider", eks_cluster_name=spec.eks.name,
                                              tags=tags, needed_by=sharing, **aws)
            cluster = DeleteEksClusterOperator(
                task_id="delete_cluster", cluster_name=spec.eks.name, tags=tags, needed_by=sharing,
                role_names=list(naming.eks_role_names(spec).values()), **aws,
            )
            chain(namespace, roles, oidc, cluster)
            aws_tasks = [roles, oidc, cluster]
            if settings_tasks:
                chain(addresses, cluster)  # the addresses go with the VPC

        sources = [t.task_id for t in dag.tasks]

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def summary() -> dict[str, Any]:
            """The run's account (XCom: structured; log: markdown), leading with what failed."""
            from remote_agents.summary import build_report, pull_failures, pull_results, render_report, run_states

            context = get_current_context()
            dry_run = as_bool(context["params"]["dry_run"])
            ti = context["ti"]
            results = pull_results(ti, sources)
            states = run_states(ti, sources)
            kept = {f"kept: {resource}": f"still used by {', '.join(users)}" for result in results.values()
                    for item in result if isinstance(item, dict) for resource, users in (item.get("kept") or {}).items()}
            kept.update({f"kept: {role}": f"also named by {', '.join(users)}" for role, users in needed.items()
                         if role.startswith("iam:role/")})
            if dry_run:
                next_step = f"trigger again with dry run off and confirm `{spec.name}`."
            elif kept:
                next_step = ("what is kept is still used by the environments named; once their specs are torn down "
                             "and removed, run this teardown again to delete it.")
            else:
                next_step = "nothing of this environment is left; the spec file can be removed."
            report = build_report(kind="teardown", environment=spec.name, dry_run=dry_run, results=results,
                                  states=states, failures=pull_failures(ti, states), facts=kept, next_step=next_step)
            print(render_report(report))
            return report

        chain([namespace, *revoke, *aws_tasks, *settings_tasks, *leftovers], summary())
        fail_run_when_a_task_failed(dag)
    return dag


_environments = environment_files(environments_folder(__file__))
for _environment in _environments:
    _dag = (
        build_teardown_dag(_environment, [e.spec for e in _environments if e.spec]) if _environment.spec
        else invalid_spec_dag(f"remote_agents_teardown__{_environment.name}", _environment)
    )
    globals()[_dag.dag_id] = _dag
