"""Bootstrap Astro Remote Execution Agents: one Dag per environment spec in include/environments/.

Parsing reads only the spec files (no network, no Variable or Connection look-ups); everything that
talks to AWS, Kubernetes, Helm or Astro runs in tasks.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import DAG, Metadata, Param, TriggerRule, chain, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from remote_agents import naming
from remote_agents.environments import (
    START,
    EnvironmentFile,
    cluster_kwargs,
    environment_asset,
    environment_files,
    environments_folder,
    fail_run_when_a_task_failed,
    invalid_spec_dag,
    project_root,
)
from remote_agents.operators.astro import (
    EnsureAgentTokenOperator,
    EnsureRegistrySecretOperator,
    UpdateRemoteExecutionSettingsOperator,
)
from remote_agents.operators.base import as_bool
from remote_agents.operators.cluster import EnsureEksClusterOperator, WaitForEksNodegroupsOperator
from remote_agents.operators.helm import HelmUpgradeInstallOperator
from remote_agents.operators.irsa import EnsureIrsaRoleOperator, EnsureOidcProviderOperator
from remote_agents.operators.kubernetes import EnsureConfigMapOperator, EnsureNamespaceOperator, EnsureSecretOperator
from remote_agents.render.cluster import build_eks_cluster_inputs
from remote_agents.render.deployment import build_task_log_settings
from remote_agents.spec import EnvironmentSpec
from remote_agents.summary import record_failure

log = logging.getLogger(__name__)
# SemVer 2.0 (https://semver.org), as helm takes chart versions: pre-releases (2.3.3-rc.1) included.
SEMVER = r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
DRY_RUN = "{{ params.dry_run }}"
ROTATE = "{{ params.rotate_tokens }}"
INCLUDE = environments_folder(__file__).parent


DOC = """
### Bootstrap Remote Execution Agents: `{name}`

Takes the cluster described by `{path}` from nothing (or from any earlier state) to healthy
Remote Execution Agents, in the order of the manual Astro tutorial but converging: every task reads
what exists, changes only what differs and reports `created` / `updated` / `unchanged`.
A second run changes nothing.

1. EKS cluster, node groups and VPC (waits for ACTIVE deferred), its OIDC provider, the IRSA role(s)
   trusting exactly the agents' ServiceAccounts (skipped for `cluster.kind: existing`);
2. when `astro.allowed_ip_ranges` is set, the Deployment's allowed IP address ranges made to
   include those ranges and the VPC's egress IP (its NAT gateway); with `astro.show_task_logs`, its
   task log bucket and URL pattern pointed at the agents' log bucket;
   namespace, agent-token Secret (a token created through the Astro API, written straight into the
   Secret), registry pull Secret, pip constraints ConfigMap; these and the IRSA roles need only the
   control plane, so they run while the node groups are still being created;
3. `helm upgrade --install` of the agent chart with the rendered values (role ARN already in place,
   so it installs once), waiting for the rollout deferred; skipped while the release's values match,
   unless *force upgrade* or an agent ServiceAccount's role annotation drifted (the upgrade puts it back);
4. a summary (the `summary` task's log and XCom) and, unless dry run, an update of the asset
   `remote_agents_environment__{name}` that schedules the health checks.

**Params**: *dry run* plans without changing anything; *chart version* overrides the spec's;
*rotate tokens* replaces the agent and registry tokens; *force upgrade* runs the helm upgrade
even when the values match, to put back chart objects edited by hand; *skip cluster creation* adopts an existing
cluster and fails if it is missing.
"""


def bootstrap_params(spec: EnvironmentSpec) -> dict[str, Param]:
    return {
        "dry_run": Param(False, type="boolean", title="Dry run", description="Plan only: change nothing, list what would change."),
        "chart_version": Param(spec.chart.version, type="string", title="Chart version", pattern=SEMVER,
                               description="Agent chart version to install (default: the spec's)."),
        "rotate_tokens": Param(False, type="boolean", title="Rotate tokens",
                               description="Create new agent and registry tokens, update the Secrets, roll the agents, revoke the old ones."),
        "force_upgrade": Param(False, type="boolean", title="Force upgrade",
                               description="Run the helm upgrade even when the release's values match: puts back chart objects edited by hand."),
        "skip_cluster_creation": Param(False, type="boolean", title="Skip cluster creation",
                                       description="Use the existing EKS cluster as it is; fail if it does not exist."),
    }


def build_bootstrap_dag(environment: EnvironmentFile) -> DAG:
    spec = environment.spec
    assert spec is not None
    asset = environment_asset(spec.name)
    access = cluster_kwargs(spec)
    common = {"namespace": spec.namespace, "environment": spec.name, "dry_run": DRY_RUN, **access}
    with DAG(
        dag_id=f"remote_agents_bootstrap__{spec.name}",
        description=f"Create or converge the Remote Execution Agents of {spec.name} from {environment.path.name}",
        dag_display_name=f"Bootstrap {spec.name}",
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["remote-agents", "bootstrap", spec.name],
        params=bootstrap_params(spec),
        default_args={"on_failure_callback": record_failure},
        doc_md=DOC.format(name=spec.name, path=environment.path.name),
    ) as dag:

        def aws_account() -> str:
            """The account the management connection acts in; IAM ARNs are built from it."""
            from airflow.providers.amazon.aws.hooks.sts import StsHook

            return str(StsHook(aws_conn_id=spec.aws_conn_id).conn.get_caller_identity()["Account"])

        namespace = EnsureNamespaceOperator(task_id="ensure_namespace", labels=spec.labels, **common)
        token_kwargs = {
            "deployment_id": spec.astro.deployment_id, "organization_id": spec.astro.organization_id,
            "astro_conn_id": spec.astro.connection_id, "token_expiry_days": spec.astro.agent_token_expiry_days,
            "rotate": ROTATE, **common,
        }
        agent_token = EnsureAgentTokenOperator(
            task_id="ensure_agent_token", secret_name=spec.astro.agent_token_secret_name,
            token_name=f"remote-agents-{spec.name}", restart_selector=naming.agent_restart_selector(spec), **token_kwargs,
        )
        registry_secret = EnsureRegistrySecretOperator(
            task_id="ensure_registry_secret", secret_name=spec.astro.registry_secret_name,
            registry=spec.astro.registry, token_name=f"remote-agents-{spec.name}-registry", **token_kwargs,
        )
        secrets = [agent_token, registry_secret]
        if any(worker.pip_packages for worker in spec.workers):
            secrets.append(EnsureConfigMapOperator(
                task_id="ensure_constraints_configmap", configmap_name=naming.constraints_configmap_name(spec),
                source_path=str(INCLUDE / "agent-constraints.txt"), **common,
            ))
        if spec.chart.open_lineage:
            secrets.append(EnsureSecretOperator(
                task_id="ensure_openlineage_secret", secret_name=naming.openlineage_secret_name(spec),
                secret_type="generic", secret_key="api-key", source_conn_id=spec.chart.open_lineage_conn_id,
                source_field="password", **common,
            ))
        if spec.identity.mode == "static-credentials":
            secrets.append(EnsureSecretOperator(
                task_id="ensure_aws_credentials_secret", secret_name=spec.identity.secret_name,
                secret_type="aws-credentials", source_conn_id=spec.identity.aws_conn_id, **common,
            ))

        @task
        def render_values() -> dict[str, Any]:
            """The chart values (no secret in them: Secrets are referenced by name).

            The agent API URL and the Runtime are read from the Deployment in Astro; a spec URL that
            differs, or an agent image newer than the Deployment, is warned about.
            """
            from remote_agents.hooks.astro import AstroHook, remote_api_url
            from remote_agents.render.policies import build_role_arns
            from remote_agents.render.values import agent_runtime_warning, build_values

            deployment = AstroHook(spec.astro.connection_id, spec.astro.organization_id).get_deployment(
                spec.astro.deployment_id)
            reported = remote_api_url(deployment)
            if spec.astro.deployment_api_url not in (None, reported):
                log.warning("astro.deployment_api_url is %s but Astro reports %s for Deployment %s; the spec's wins",
                            spec.astro.deployment_api_url, reported, spec.astro.deployment_id)
            if warning := agent_runtime_warning(spec, deployment.get("astroRuntimeVersion")):
                log.warning(warning)
            role_arns = build_role_arns(spec, aws_account()) if spec.eks and spec.irsa else None
            return build_values(spec, role_arns=role_arns, deployment_api_url=reported,
                                deployment_namespace=deployment.get("namespace"))

        waits_for: list[Any] = []
        if spec.eks:
            cluster = EnsureEksClusterOperator(
                task_id="ensure_cluster", **build_eks_cluster_inputs(spec), aws_conn_id=spec.aws_conn_id, dry_run=DRY_RUN,
                create_if_missing="{{ not params.skip_cluster_creation }}", wait_for_nodegroups=False,
            )
            nodes = WaitForEksNodegroupsOperator(
                task_id="wait_for_nodegroups", cluster_name=spec.eks.name, nodegroup_names=cluster.output["nodegroup_names"],
                aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region, dry_run=DRY_RUN,
            )
            oidc = EnsureOidcProviderOperator(
                task_id="ensure_oidc_provider", eks_cluster_name=spec.eks.name, tags=naming.ownership_tags(spec),
                aws_conn_id=spec.aws_conn_id, region_name=spec.eks.region, dry_run=DRY_RUN,
            )

            @task
            def irsa_roles(oidc_result: dict[str, Any]) -> list[dict[str, Any]]:
                """One set of operator arguments per IRSA role (one, or one per component)."""
                from remote_agents.render.policies import build_irsa_policies

                issuer = oidc_result.get("oidc_issuer") or f"https://oidc.eks.{spec.eks.region}.amazonaws.com/id/PLANNED"
                return [
                    {"role_name": role["role_name"], "policy_name": role["policy_name"],
                     "trust_policy": role["trust_policy"], "permission_policy": role["permission_policy"]}
                    for role in build_irsa_policies(spec, issuer, aws_account()).values()
                ]

            roles = EnsureIrsaRoleOperator.partial(
                task_id="ensure_irsa_role", tags=naming.ownership_tags(spec), aws_conn_id=spec.aws_conn_id,
                region_name=spec.eks.region, dry_run=DRY_RUN,
            ).expand_kwargs(irsa_roles(oidc.output))

            # Everything that needs only the control plane runs while the node groups are CREATING;
            # the install waits for the nodes its pods land on.
            chain(cluster, [nodes, oidc, namespace])
            waits_for += [nodes, roles]
        if spec.astro.allowed_ip_ranges is not None or spec.astro.show_task_logs:
            egress = [cluster.output["egress_ips"]] if spec.eks else []
            ranges = None if spec.astro.allowed_ip_ranges is None else [*spec.astro.allowed_ip_ranges, *egress]
            settings = UpdateRemoteExecutionSettingsOperator(
                task_id="ensure_deployment_settings", deployment_id=spec.astro.deployment_id,
                organization_id=spec.astro.organization_id, astro_conn_id=spec.astro.connection_id,
                include_allowed_ip_address_ranges=ranges, dry_run=DRY_RUN,
                **(build_task_log_settings(spec) if spec.astro.show_task_logs else {}),
            )
            # Agents that start before their egress IP is allowed are refused by Astro until it is.
            waits_for.append(settings)
        @task
        def role_annotations_drifted() -> bool:
            """Whether an agent ServiceAccount lacks the role annotation the spec gives (or has another).

            helm is skipped while the values match, and the values cannot show an annotation edited
            in the cluster; the upgrade puts back what the manifest sets.
            """
            if not (spec.eks and spec.irsa):
                return False
            from remote_agents.health import drift
            from remote_agents.health.gather import gather_service_accounts
            from remote_agents.hooks.cluster import ClusterAccess
            from remote_agents.render.policies import build_role_arns

            desired = drift.desired_role_annotations(spec, build_role_arns(spec, aws_account()))
            return bool(drift.compare_service_accounts(gather_service_accounts(spec, ClusterAccess(**access)), desired))

        values = render_values()
        annotations_drifted = role_annotations_drifted()
        helm = HelmUpgradeInstallOperator(
            task_id="helm_upgrade_install",
            release_name=spec.release_name,
            namespace=spec.namespace,
            chart=str(project_root(__file__) / spec.chart.path) if spec.chart.path else spec.chart.name,
            chart_repo_url=None if spec.chart.path else spec.chart.repo_url,
            chart_version="{{ params.chart_version }}",
            values=values,
            force="{{ params.force_upgrade or ti.xcom_pull(task_ids='role_annotations_drifted') }}",
            timeout=spec.chart.rollout_timeout_seconds,
            dry_run=DRY_RUN,
            **access,
        )
        chain(namespace, secrets, helm)
        helm.set_upstream([*waits_for, annotations_drifted])
        namespace >> annotations_drifted
        fail_run_when_a_task_failed(dag)  # before the summary: it watches the work, not the report
        work = [t for t in dag.tasks if t.task_id != "a_task_failed"]
        summary_sources = [t.task_id for t in work]

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def summary() -> dict[str, Any]:
            """The run's account (XCom: structured; log: markdown): what failed and was not attempted,
            every resource and its action, then the next step."""
            from remote_agents.summary import (
                build_report,
                planned_cluster_contents,
                pull_failures,
                pull_results,
                render_report,
                run_states,
            )

            context = get_current_context()
            dry_run = as_bool(context["params"]["dry_run"])
            ti = context["ti"]
            results = pull_results(ti, summary_sources)
            states = run_states(ti, summary_sources)
            results["(in the new cluster)"] = planned_cluster_contents(spec, results.get("ensure_cluster", []))
            helm_result = next(iter(results["helm_upgrade_install"]), None) or {}
            role_arns = [r["role_arn"] for r in results.get("ensure_irsa_role", []) if r and r.get("role_arn")]
            facts = {
                "release": helm_result.get("release"), "revision": helm_result.get("revision"),
                "chart_version": helm_result.get("chart_version"), "role_arns": ", ".join(role_arns) or None,
            }
            next_step = (
                f"trigger `remote_agents_bootstrap__{spec.name}` again with dry run off to apply this plan."
                if dry_run else
                f"`remote_agents_health__{spec.name}` runs the self-tests now (scheduled on this environment's asset)."
            )
            report = build_report(kind="bootstrap", environment=spec.name, dry_run=dry_run, results=results,
                                  states=states, failures=pull_failures(ti, states), facts=facts, next_step=next_step)
            print(render_report(report))
            return report

        @task(outlets=[asset])
        def announce_environment():  # noqa: ANN201 - yields asset metadata
            """Tell the health Dag a bootstrap was applied (not after a dry run, not after a failure)."""
            context = get_current_context()
            if as_bool(context["params"]["dry_run"]):
                raise AirflowSkipException("dry run: nothing was applied")
            yield Metadata(asset, extra={"environment": spec.name, "dag_run": context["run_id"]})

        chain(work, summary())
        chain(helm, announce_environment())
    return dag


for _environment in environment_files(environments_folder(__file__)):
    _dag = (
        build_bootstrap_dag(_environment) if _environment.spec
        else invalid_spec_dag(f"remote_agents_bootstrap__{_environment.name}", _environment)
    )
    globals()[_dag.dag_id] = _dag
