# PYTHON_ARGCOMPLETE_OK  (argcomplete's marker for global shell completion)
"""`remote-agents`: validate a spec and print what the bootstrap would create, without touching anything.

    remote-agents validate SPEC [SPEC ...] [--schema FILE] [--output text|json]
    remote-agents render SPEC [--only values|manifests|policies|cluster|management-policy] [--output yaml|json]
                              [--account-id ID] [--oidc-issuer URL] [--constraints FILE]
    remote-agents plan SPEC [--dags-folder DIR] [--output text|json]
    remote-agents status [--spec-folder DIR] [--url URL] [--token TOKEN] [--output text|json]
    remote-agents --version

Exit 0 on success, 1 when a spec is invalid (the problems on stderr), a plan failed or the Airflow
REST API is unusable, 2 on a usage error. Imports stay light (no Airflow: only `plan` and `status`
import it) so the command starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from remote_agents import naming
from remote_agents.errors import ConfigError
from remote_agents.render import cluster, manifests, policies, values
from remote_agents.spec import EksClusterSpec, EnvironmentSpec, load_spec
from remote_agents.values_schema import load_values_schema, values_schema_problems

DISTRIBUTION = "airflow-provider-remote-agents"
ENVIRONMENTS_VARIABLE = "REMOTE_AGENTS_ENVIRONMENTS"  # as the Dag files read it (environments.py, which imports Airflow)

SECTIONS = ("values", "manifests", "policies", "cluster")
# Printed only when asked for: what the management Deployment's own AWS identity needs, set up once
# by the platform team, not part of the agents' desired state.
EXTRA_SECTIONS = ("management-policy",)
YAML_WIDTH = 1_000_000  # keep JSON strings such as dagBundleConfigList on one line
# Documentation examples, not real: real runs read them from AWS (STS, EKS describe_cluster).
PLACEHOLDER_ACCOUNT_ID = "123456789012"
PLACEHOLDER_OIDC_ID = "EXAMPLED539D4633E53DE1B71EXAMPLE"
PLACEHOLDER_API_URL = "https://clusterid.external.astronomer.run/deploymentshortid"
PLACEHOLDER_NAMESPACE = "deployment-namespace-1234"
# The repository's copies; an installed wheel has none, so `--constraints`, `--schema` and
# `--dags-folder` then name them.
PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_CONSTRAINTS = PROJECT / "include" / "agent-constraints.txt"
DEFAULT_SCHEMA = PROJECT / "include" / "schemas" / "agent-values.schema.json"
DEFAULT_DAGS_FOLDER = PROJECT / "dags"
DEFAULT_SPEC_FOLDER = PROJECT / "include" / "environments"
# `status` reads these when --url / --token are not given; a user name and password, only from the
# environment (a command line is visible to every user of the machine), are exchanged for a token.
URL_VARIABLE, TOKEN_VARIABLE = "AIRFLOW_API_URL", "AIRFLOW_API_TOKEN"
USERNAME_VARIABLE, PASSWORD_VARIABLE = "AIRFLOW_API_USERNAME", "AIRFLOW_API_PASSWORD"


class _ReviewDumper(yaml.SafeDumper):
    """YAML for people: multi-line strings as `|` blocks, no anchors for repeated lists."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReviewDumper.add_representer(str, _represent_str)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    _offer_completion(parser)
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate_command(args)
    if args.command == "status":
        return _status_command(args, parser)
    try:
        spec = load_spec(args.spec)
        if args.command == "plan":
            return _plan_command(spec, args)
        _print_render(spec, args)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def _offer_completion(parser: argparse.ArgumentParser) -> None:
    """Shell completion through argcomplete, when it is installed (it comes with Airflow).

    Imported only while the shell asks for completions (argcomplete sets _ARGCOMPLETE then): every
    other run would pay for the import and find nothing to do.
    """
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def validate_file(path: Path, schema: dict[str, Any] | None) -> dict[str, Any]:
    """One spec file's verdict: its summary, or every problem of the spec, else of its rendered values."""
    try:
        spec = load_spec(path)
    except ConfigError as error:
        return {"file": str(path), "valid": False, "problems": error.problems}
    if schema is not None:
        values = render(spec, "values", PLACEHOLDER_ACCOUNT_ID, _placeholder_oidc_issuer(spec), None)
        if problems := values_schema_problems(values, schema):
            return {"file": str(path), "valid": False, "problems": problems}
    return {"file": str(path), "valid": True, "summary": summarize(spec)}


def _validate_command(args: argparse.Namespace) -> int:
    schema = _read_schema(args.schema)
    verdicts = [validate_file(path, schema) for path in args.specs]
    if args.output == "json":
        print(json.dumps(verdicts, indent=2))
    else:
        for verdict in verdicts:
            if verdict["valid"]:
                print(f"OK {verdict['file']}: {verdict['summary']}")
            else:
                print(ConfigError(verdict["problems"], verdict["file"]), file=sys.stderr)
    return 0 if all(verdict["valid"] for verdict in verdicts) else 1


def _read_schema(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        print(f"rendered values not checked: no chart values schema at {path}; pass --schema", file=sys.stderr)
        return None
    return load_values_schema(path)


def _plan_command(spec: EnvironmentSpec, args: argparse.Namespace) -> int:
    from remote_agents.plan import PlanError, plan_bootstrap
    from remote_agents.summary import render_report

    try:
        plan = plan_bootstrap(args.spec, spec, args.dags_folder)
    except PlanError as error:
        print(f"{args.spec}: no plan: {error}", file=sys.stderr)
        return 1
    print(json.dumps(plan.report, indent=2) if args.output == "json" else render_report(plan.report).rstrip("\n"))
    if plan.report["outcome"] == "failed":
        print(f"{args.spec}: the dry run failed; its log: {plan.log}", file=sys.stderr)
        return 1
    return 0


def _status_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from datetime import UTC, datetime

    from remote_agents.environments import environment_files
    from remote_agents.hooks.deployment import AirflowRestClient
    from remote_agents.status import render_status_table, status_to_dict
    from remote_agents.status_reader import StatusApiError, login, read_status

    if not args.url:
        parser.error(f"status: pass --url or set {URL_VARIABLE} (the Airflow api-server, e.g. http://localhost:8080)")
    username, password = os.environ.get(USERNAME_VARIABLE), os.environ.get(PASSWORD_VARIABLE)
    if not args.token and not (username and password):
        parser.error(f"status: pass --token, or set {TOKEN_VARIABLE}, or {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}")
    environments = environment_files(args.spec_folder) if args.spec_folder.is_dir() else []
    if not environments:
        print(f"{args.spec_folder}: no environment specs (*.yaml) there; pass --spec-folder", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    try:
        token = args.token or login(args.url, username or "", password or "")
        with AirflowRestClient(args.url, token) as client:
            statuses = read_status(client, environments, now)
    except StatusApiError as error:
        print(f"status: {error}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps([status_to_dict(status) for status in statuses], indent=2))
    else:
        print(render_status_table(statuses, now), end="")
    return 0


def summarize(spec: EnvironmentSpec) -> str:
    """One line: what the spec will create, where."""
    eks = spec.eks
    where = f"EKS cluster {eks.name} ({eks.region}, Kubernetes {eks.kubernetes_version})" if eks else "existing cluster"
    queues = ", ".join(worker.queue for worker in spec.workers)
    noun = "worker" if len(spec.workers) == 1 else "workers"
    return (
        f"environment '{spec.name}': {where}, namespace {spec.namespace}, {len(spec.workers)} {noun} "
        f"(queues: {queues}), chart {spec.chart.version}, identity {spec.identity.mode}"
    )


def render(spec: EnvironmentSpec, section: str, account_id: str, oidc_issuer: str, constraints: str | None,
           deployment_api_url: str = PLACEHOLDER_API_URL, deployment_namespace: str = PLACEHOLDER_NAMESPACE) -> Any:
    """The data of one section, as `remote-agents render --only <section>` prints it."""
    if section == "values":
        role_arns = policies.build_role_arns(spec, account_id) if spec.irsa else None
        return values.build_values(spec, role_arns, deployment_api_url=deployment_api_url,
                                   deployment_namespace=deployment_namespace)
    if section == "manifests":
        return manifests.build_manifests(spec, constraints)
    if section == "policies":
        if not spec.irsa:
            return {"static_credentials_user_policy": policies.build_permission_policy(spec, account_id)}
        return {
            "irsa_roles": {
                str(component or "all"): role
                for component, role in policies.build_irsa_policies(spec, oidc_issuer, account_id).items()
            },
            **({"eks": _eks_roles(spec, account_id)} if spec.eks else {}),
        }
    if section == "management-policy":
        return policies.build_management_policy(spec, account_id)
    return _cluster_requests(spec, spec.eks, account_id) if spec.eks else {}


def _eks_roles(spec: EnvironmentSpec, account_id: str) -> dict[str, Any]:
    names = naming.eks_role_names(spec)
    managed = policies.build_eks_managed_policy_arns(spec)
    return {
        "cluster_role": {"role_name": names["cluster"], "trust_policy": policies.build_eks_cluster_trust_policy(spec), "managed_policy_arns": managed["cluster"]},
        "node_role": {"role_name": names["node"], "trust_policy": policies.build_eks_node_trust_policy(spec), "managed_policy_arns": managed["node"]},
    }


def _cluster_requests(spec: EnvironmentSpec, eks: EksClusterSpec, account_id: str) -> dict[str, Any]:
    partition = policies.aws_partition(eks.region)
    names = naming.eks_role_names(spec)
    cluster_role = eks.cluster_role_arn or f"arn:{partition}:iam::{account_id}:role/{names['cluster']}"
    node_role = eks.node_role_arn or f"arn:{partition}:iam::{account_id}:role/{names['node']}"
    plan = None if eks.subnet_ids else cluster.build_vpc_plan(spec)
    # Without subnets in the spec, the plan's subnet names stand in for the ids the VPC step returns.
    cluster_subnets = list(eks.subnet_ids) or [f"<{name}>" for name in plan["cluster_subnets"]]
    node_subnets = list(eks.subnet_ids) or [f"<{name}>" for name in plan["node_subnets"]]
    return {
        "vpc_plan": plan,
        "create_cluster": cluster.build_create_cluster_request(spec, cluster_role, cluster_subnets),
        "create_nodegroups": cluster.build_nodegroup_requests(spec, node_role, node_subnets),
    }


def _placeholder_oidc_issuer(spec: EnvironmentSpec) -> str:
    region = spec.eks.region if spec.eks else spec.backends.aws_region
    return f"https://oidc.eks.{region}.amazonaws.com/id/{PLACEHOLDER_OIDC_ID}"


def _print_render(spec: EnvironmentSpec, args: argparse.Namespace) -> None:
    oidc_issuer = args.oidc_issuer or _placeholder_oidc_issuer(spec)
    constraints = _read_constraints(args.constraints)
    sections = [args.only] if args.only else list(SECTIONS)
    data = {s: render(spec, s, args.account_id, oidc_issuer, constraints, args.deployment_api_url,
                      args.deployment_namespace) for s in sections}
    note = _placeholder_note(spec, args, sections, oidc_issuer)
    if args.output == "json":
        if note:
            print(note, file=sys.stderr)  # JSON has no comments
        print(json.dumps(data[args.only] if args.only else data, indent=2))
        return
    if note:
        print("\n".join(f"# {line}" for line in note.splitlines()))
    if args.only == "manifests":
        print(yaml.dump_all(data["manifests"], Dumper=_ReviewDumper, sort_keys=False, width=YAML_WIDTH), end="")
    else:
        print(yaml.dump(data[args.only] if args.only else data, Dumper=_ReviewDumper, sort_keys=False, width=YAML_WIDTH), end="")


def _placeholder_note(spec: EnvironmentSpec, args: argparse.Namespace, sections: list[str], oidc_issuer: str) -> str:
    lines = []
    if args.account_id == PLACEHOLDER_ACCOUNT_ID and set(sections) & {"values", "policies", "cluster", "management-policy"}:
        lines.append(f"AWS account {PLACEHOLDER_ACCOUNT_ID} is a placeholder; pass --account-id for real ARNs.")
    if "values" in sections and not spec.astro.deployment_api_url and args.deployment_api_url == PLACEHOLDER_API_URL:
        lines.append(f"astroDeploymentAPIURL {PLACEHOLDER_API_URL} is a placeholder (the bootstrap reads it from "
                     "Astro); pass --deployment-api-url for the real one.")
    if "values" in sections and args.deployment_namespace == PLACEHOLDER_NAMESPACE:
        lines.append(f"ASTRO_DEPLOYMENT_NAMESPACE {PLACEHOLDER_NAMESPACE} is a placeholder (the bootstrap reads it "
                     "from Astro); pass --deployment-namespace for the real one.")
    if not args.oidc_issuer and "policies" in sections and spec.irsa:
        lines.append(f"OIDC issuer {oidc_issuer} is a placeholder; pass --oidc-issuer (EKS describe-cluster).")
    if "manifests" in sections:
        lines.append(
            f"Secret values are the placeholder '{manifests.SECRET_PLACEHOLDER}'; the bootstrap fills them at run time."
        )
    return "\n".join(lines)


def _read_constraints(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None  # only an error if a worker needs it; build_manifests says so


class _VersionAction(argparse.Action):
    """`--version`, looked up only when asked for: importlib.metadata reads every installed
    distribution's metadata, which every other command would pay for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the package version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from importlib.metadata import version

        print(f"{parser.prog} {version(DISTRIBUTION)}")  # on stdout, as argparse's own version action
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remote-agents", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate specs and the Helm values they render; one line each")
    validate.add_argument("specs", type=Path, nargs="+", metavar="SPEC")
    validate.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA,
                          help="the agent chart's values JSON schema the rendered values are checked against")
    validate.add_argument("--output", choices=("text", "json"), default="text")
    render_cmd = commands.add_parser("render", help="print the desired state computed from a spec")
    render_cmd.add_argument("spec", type=Path)
    render_cmd.add_argument("--only", choices=SECTIONS + EXTRA_SECTIONS,
                            help="print one section (default: all but management-policy)")
    render_cmd.add_argument("--output", "--format", dest="output", choices=("yaml", "json"), default="yaml",
                            help="--format is its older spelling")
    render_cmd.add_argument("--account-id", default=PLACEHOLDER_ACCOUNT_ID, help="AWS account id for ARNs")
    render_cmd.add_argument("--deployment-namespace", default=PLACEHOLDER_NAMESPACE,
                            help="the Deployment's namespace as Astro reports it (ASTRO_DEPLOYMENT_NAMESPACE)")
    render_cmd.add_argument("--deployment-api-url", default=PLACEHOLDER_API_URL,
                            help="the Deployment's agent API URL, when the spec leaves astro.deployment_api_url out")
    render_cmd.add_argument("--oidc-issuer", help="the EKS cluster's OIDC issuer URL, for IRSA trust policies")
    render_cmd.add_argument("--constraints", type=Path, default=DEFAULT_CONSTRAINTS, help="agent image pip constraints")
    plan = commands.add_parser("plan", help="what the bootstrap would create, update or leave unchanged (its dry run)")
    plan.add_argument("spec", type=Path)
    plan.add_argument("--dags-folder", type=Path, default=DEFAULT_DAGS_FOLDER,
                      help="the project's dags/ folder, holding remote_agents_bootstrap.py")
    plan.add_argument("--output", choices=("text", "json"), default="text")
    status = commands.add_parser("status", help="every environment's last bootstrap, health, drift, tokens and chart, "
                                                "from a running Airflow's REST API")
    status.add_argument("--spec-folder", type=Path, default=Path(os.environ.get(ENVIRONMENTS_VARIABLE) or DEFAULT_SPEC_FOLDER),
                        help=f"the environment specs (default: ${ENVIRONMENTS_VARIABLE}, else include/environments)")
    status.add_argument("--url", default=os.environ.get(URL_VARIABLE),
                        help=f"the Airflow api-server's URL (default: ${URL_VARIABLE})")
    status.add_argument("--token", default=os.environ.get(TOKEN_VARIABLE),
                        help=f"a bearer token for its REST API (default: ${TOKEN_VARIABLE}; or set "
                             f"${USERNAME_VARIABLE} and ${PASSWORD_VARIABLE})")
    status.add_argument("--output", choices=("text", "json"), default="text")
    return parser
