"""The environment spec: one YAML file describes one Remote Execution environment.

``load_spec(path)`` reads and validates it before anything touches a network. Every problem is
reported at once, each naming the field path, the bad value and the fix (see ``ConfigError``).
Secrets are never part of a spec: it names Airflow Connections that hold them.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import CroniterBadDateError, croniter
from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from remote_agents import naming
from remote_agents.errors import ConfigError

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
IMAGE_WITH_TAG = re.compile(r"[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})")
MIN_KUBERNETES = (1, 30)
IAM_ROLE_NAME_MAX = 64
INT32_MAX = 2**31 - 1
# helm's --timeout is a Go time.Duration: int64 nanoseconds.
HELM_TIMEOUT_MAX_SECONDS = (2**63 - 1) // 10**9
# The largest gp2/gp3 EBS volume a node group's root disk can be.
EBS_VOLUME_MAX_GIB = 16384
# Airflow's cron presets (airflow.utils.dates.cron_presets), which Airflow expands before croniter
# reads them. '@once' and '@continuous' are not cron: the health and drift Dags run on a
# CronTriggerTimetable, which refuses them.
CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8}([0-9a-f]{9})?")
# Path components and the name take role-name characters, so no wildcard or policy variable gets in.
IAM_ROLE_ARN = re.compile(
    rf"arn:aws(-cn|-us-gov)?:iam::[0-9]{{12}}:role/([A-Za-z0-9_+=,.@-]+/)*[A-Za-z0-9_+=,.@-]{{1,{IAM_ROLE_NAME_MAX}}}"
)
KMS_KEY_ARN = re.compile(r"arn:aws(-cn|-us-gov)?:kms:[a-z]{2}(-gov)?-[a-z]+-[0-9]:[0-9]{12}:key/([0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|mrk-[0-9a-f]{32})")
SEMVER = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
# Astro ids become segments of API paths, where '/', '?' or '..' would name another resource.
ASTRO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
REGISTRY_HOST = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
# The partitions whose ARNs the policies write (render/policies.aws_partition); other partitions'
# regions would get 'aws' ARNs.
AWS_PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
# Keys that would carry a secret value, and the field that names the Connection holding it instead.
SECRET_KEYS = {
    "token": "astro.connection_id",
    "agent_token": "astro.connection_id",
    "agenttoken": "astro.connection_id",
    "api_token": "astro.connection_id",
    "registry_token": "astro.connection_id",
    "imagepullsecretdata": "astro.connection_id",
    "git_token": "dag_bundles[].git_conn_id",
    "password": "the matching *_conn_id field",
    "secret": "the matching *_conn_id field",
    "secret_key": "identity.aws_conn_id (mode: static-credentials)",
    "access_key": "identity.aws_conn_id (mode: static-credentials)",
    "aws_secret_access_key": "identity.aws_conn_id (mode: static-credentials)",
}
# Shapes of credentials, found anywhere in a label or annotation value: whoever can read an object
# reads its labels and annotations. Repeats are bounded so that a 256 KiB value is searched in linear time.
SECRET_SHAPES = (
    ("a private key", re.compile(r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----")),
    ("a JSON Web Token (like an Astro API token)", re.compile(r"eyJ[A-Za-z0-9_-]{2,200}\.eyJ")),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22})")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10}")),
    ("a URL with credentials", re.compile(r"://[^/?#\s@]{1,256}@")),
    ("a URL with a credential in its query", re.compile(
        r"[?&][A-Za-z_-]{0,32}?(token|key|secret|password|signature|sig|credential)[A-Za-z_-]{0,32}=", re.IGNORECASE,
    )),
    ("an Authorization header value", re.compile(r"(^|\s)(Bearer|Basic) {1,8}[A-Za-z0-9._~+/-]{16}", re.IGNORECASE)),
)
# The agent chart selects each component's Pods by these labels and sets them itself
# (sandbox/chart/README.md); the same key in `labels` would override a selector.
CHART_SELECTOR_LABELS = ("app", "component", "release", "queue")
OWN_LABELS = (naming.OWNER_LABEL, naming.ENVIRONMENT_LABEL)
# Kubernetes refuses an object whose annotations' keys and values total more than 256 KiB
# (apimachinery's TotalAnnotationSizeLimitB); 1 KiB is left for those Helm, the IRSA role ARN and
# rollouts add.
ANNOTATIONS_MAX_BYTES = 256 * 1024 - 1024
DEFAULT_CHART_REPO_URL = "https://helm.astronomer.io"
DEFAULT_AGENT_IMAGE = (
    "images.astronomer.cloud/baseimages/astro-remote-execution-agent:3.3-1-python-3.12-astro-agent-1.8.2"
)


def _problem(kind: str, message: str) -> PydanticCustomError:
    """One problem with the value being validated; ``_describe`` adds its path and the value."""
    return PydanticCustomError(kind, message)


def _problems(items: list[tuple[str, str]]) -> PydanticCustomError:
    """Several problems found by one validator, each reported on its own line with its own path.

    Each item is (path relative to the validated value, e.g. ``[1].queue`` or ``""``; message with
    the bad value and the fix). ``_describe`` adds no input to these, so a message can hide a secret.
    """
    summary = "; ".join(f"{path}: {message}" if path else message for path, message in items)
    return PydanticCustomError("problems", "{summary}", {"summary": summary, "problems": items})


def _is_ipv4_network(cidr: str) -> bool:
    try:
        return "/" in cidr and ipaddress.ip_network(cidr, strict=True).version == 4
    except ValueError:
        return False


def _cidr_suggestion(text: str) -> str:
    try:
        return repr(str(ipaddress.ip_network(text if "/" in text else f"{text}/32", strict=False)))
    except ValueError:
        return "a range like '203.0.113.0/24' or one address like '198.51.100.7/32'"


def _dns_label(value: str, what: str) -> str:
    if not DNS_LABEL.fullmatch(value):
        suggestion = re.sub(r"[^a-z0-9]+", "-", value.lower())[:63].strip("-") or "agents"
        raise _problem(
            "dns_label",
            f"{what} must be a DNS label (lowercase letters, digits and '-', at most 63 characters, "
            f"starting and ending with a letter or digit); write {suggestion!r}",
        )
    return value


def _prefix(value: str) -> str:
    if value.strip("/") and (value.startswith("/") or value.endswith("/")):
        raise _problem("prefix", f"a prefix has no leading or trailing '/'; write '{value.strip('/')}'")
    if not value.strip("/") or "//" in value or "*" in value:
        raise _problem("prefix", "a prefix is a non-empty path like 'xcom' or 'env/xcom', with no '//' or '*'")
    # The characters Secrets Manager allows in names; the IAM policies put prefixes into ARNs, where
    # '*' and '?' are wildcards and '${...}' is a policy variable.
    if not re.fullmatch(r"[A-Za-z0-9_.=+@/-]+", value):
        raise _problem(
            "prefix",
            "a prefix uses letters, digits and '/_.=+@-' only: the IAM policies' ARNs would read '*' and '?' "
            "as wildcards and '${...}' as policy variables; rename it, like 'env/xcom'",
        )
    return value


def _bucket(value: str) -> str:
    if not BUCKET_NAME.fullmatch(value) or ".." in value or re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", value):
        raise _problem(
            "bucket_name",
            "not a valid S3 bucket name; use 3-63 lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit, like 'acme-agents-xcom'",
        )
    return value


@functools.cache
def _aws_regions(services: tuple[str, ...]) -> list[str]:
    """The regions offering every one of ``services``, from the endpoint data botocore ships (no network)."""
    # Imported here: only validating a region pays for loading botocore's endpoint data.
    import botocore.session

    session = botocore.session.get_session()
    offered = [
        {region for partition in AWS_PARTITIONS for region in session.get_available_regions(service, partition)}
        for service in services
    ]
    return sorted(set.intersection(*offered))


def _aws_region(*services: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        regions = _aws_regions(services)
        if value not in regions:
            # Sorted candidates and a stable sort: of equally close regions the first, like 'us-east-1'.
            closest = sorted(regions, key=lambda r: -difflib.SequenceMatcher(None, value.lower(), r).ratio())[0]
            raise _problem(
                "aws_region",
                f"not an AWS region with {' and '.join(services)} in botocore's endpoint data "
                f"({', '.join(AWS_PARTITIONS)}); write it like {closest!r}, or upgrade botocore for a newer region",
            )
        return value

    return check


def _kms_key_arn(value: str) -> str:
    if not KMS_KEY_ARN.fullmatch(value):
        raise _problem("kms_key_arn", "not a KMS key ARN; write the key's ARN like "
                       "'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab' (IAM grants "
                       "name keys, not aliases)")
    return value


def _secret_reason(key: str, text: str) -> str | None:
    """Why a label or annotation looks like it holds a secret, or None."""
    if key.rsplit("/", 1)[-1].lower().replace("-", "_") in SECRET_KEYS:
        return "the key names a secret"
    return next((f"the value looks like {what}" for what, shape in SECRET_SHAPES if shape.search(text)), None)


def _hide_credentials(url: str) -> str:
    """``url`` with its user info and its query, either of which can carry credentials, shown as '***'."""
    hidden = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1***@", url)
    return re.sub(r"\?.*", "?***", hidden, flags=re.DOTALL)


def _branch_problem(ref: str) -> str | None:
    """What ``git check-ref-format --branch`` refuses in ``ref``, or None."""
    refused = sorted({char for char in ref if ord(char) < 0x20 or ord(char) == 0x7F or char in " ~^:?*[\\"})
    if refused:
        return f"it contains {', '.join(map(repr, refused))}"
    for part, why in (("..", "'..'"), ("@{", "'@{'"), ("//", "'//'")):
        if part in ref:
            return f"it contains {why}"
    if any(component.startswith(".") or component.endswith(".lock") for component in ref.split("/")):
        return "a part of it starts with '.' or ends with '.lock'"
    for refused_when, why in (
        (ref == "", "it is empty"),
        (ref == "@", "it is '@'"),
        (ref.startswith("-"), "it starts with '-'"),
        (ref.startswith("/") or ref.endswith("/"), "it starts or ends with '/'"),
        (ref.endswith("."), "it ends with '.'"),
    ):
        if refused_when:
            return why
    return None


def _conn_id(value: str) -> str:
    if not CONN_ID.fullmatch(value):
        raise _problem(
            "conn_id", "a connection id uses letters, digits, '_', '.' and '-' only; rename it, like 'aws_default'"
        )
    return value


ConnId = Annotated[str, AfterValidator(_conn_id)]
Prefix = Annotated[str, AfterValidator(_prefix)]
BucketName = Annotated[str, Field(description="S3 bucket name"), AfterValidator(_bucket)]
EksRegion = Annotated[str, Field(description="AWS region, like 'us-east-1'"), AfterValidator(_aws_region("eks"))]
BackendsRegion = Annotated[
    str, Field(description="AWS region, like 'us-east-1'"), AfterValidator(_aws_region("s3", "secretsmanager"))
]
KmsKeyArn = Annotated[str, AfterValidator(_kms_key_arn)]


def _duplicates(items: list[Any], field: str, listed_as: str | None, fix: str) -> list[tuple[str, str]]:
    """One problem per item whose ``field`` repeats an earlier item's (``listed_as``: the list's field name)."""
    first: dict[Any, int] = {}
    problems: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        value = getattr(item, field)
        if value in first:
            problems.append((f"[{index}].{field}", f"{value!r} is already used by {listed_as}[{first[value]}]; {fix}"))
        first.setdefault(value, index)
    return problems


class SpecModel(BaseModel):
    """Base of every spec part: unknown keys are errors and parts are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        problems = [
            (
                str(key),
                f"a secret written inline (value not shown); keep it in an Airflow Connection and set {where} to its id",
            )
            for key in data
            if isinstance(key, str) and (where := SECRET_KEYS.get(key.lower().replace("-", "_")))
        ]
        if problems:
            raise _problems(problems)
        return data


class AstroSpec(SpecModel):
    """The Astro side: which Remote Execution Deployment the agents serve."""

    connection_id: Annotated[ConnId, Field(description="Airflow Connection of type `astro`: host = API URL, password = API token, extra.organization_id")] = "astro_default"
    organization_id: Annotated[str, Field(min_length=1, description="the Astro organization id")]
    workspace_id: Annotated[str | None, Field(description="Astro workspace id (optional; shown in the agents' environment).")] = None
    deployment_id: Annotated[str, Field(min_length=1, description="the Remote Execution Deployment id")]
    deployment_api_url: Annotated[str | None, Field(description="`astroDeploymentAPIURL`: https://<clusterId>.external.astronomer.run/<deploymentShortId>. Leave it out to use the one Astro reports for the Deployment (`remoteExecution.remoteApiUrl`).")] = None
    deployment_connection_id: Annotated[ConnId, Field(description="Connection to the Deployment's Airflow REST API (health checks)")] = "astro_deployment"
    agent_image: Annotated[str, Field(description="Agent image, pinned; its Runtime must not be newer than the Deployment's.")] = DEFAULT_AGENT_IMAGE
    registry: Annotated[str, Field(description="Registry of the agent image; the pull Secret is made for it (user `cli`).")] = "images.astronomer.cloud"
    agent_token_secret_name: Annotated[str, Field(description="Kubernetes Secret holding the agent token (key `token`); chart `agentTokenSecretName`.")] = "astro-agent-token"
    registry_secret_name: Annotated[str, Field(description="Kubernetes `dockerconfigjson` Secret for the registry; chart `imagePullSecretName`.")] = "astro-registry"
    agent_token_expiry_days: Annotated[int, Field(description="Lifetime of agent and Deployment API tokens the bootstrap creates.", ge=1, le=3650)] = 365
    show_task_logs: Annotated[bool, Field(description="Point the Deployment's task logs (`remoteExecution.taskLogBucket` and `taskLogUrlPattern`) at `backends.logs`, so the Airflow UI shows the agents' logs; teardown unsets them. Astro also needs read access to that bucket (a customer-managed workload identity), which this project does not create.")] = False
    allowed_ip_ranges: Annotated[list[str] | None, Field(description="Manage the Deployment's allowed IP address ranges: the bootstrap makes sure they include these CIDRs and the egress IP of the VPC it created (its NAT gateway), and teardown takes them out again. Ranges added by anyone else are kept. Left out: the bootstrap does not touch the setting.")] = None

    @field_validator("deployment_api_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"https://[^/\s]+/\S+", value):
            raise _problem(
                "https_url",
                "use the https URL shown in the Deployment's Remote Agents tab (astroDeploymentAPIURL), "
                "like https://<clusterId>.external.astronomer.run/<deploymentShortId>",
            )
        return value.rstrip("/")

    @field_validator("organization_id", "workspace_id", "deployment_id")
    @classmethod
    def _astro_id(cls, value: str | None) -> str | None:
        if value is not None and not ASTRO_ID.fullmatch(value):
            raise _problem(
                "astro_id",
                "an Astro id uses letters, digits, '-' and '_' only (it is part of API paths); "
                "copy the id from the Astro UI, like 'clx1abc2def3ghi4'",
            )
        return value

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        if not REGISTRY_HOST.fullmatch(value):
            host = re.sub(r"^[A-Za-z]+://", "", value.strip()).split("/")[0].lower()
            fix = f"write {host!r}" if REGISTRY_HOST.fullmatch(host) else "like 'images.astronomer.cloud'"
            raise _problem(
                "registry", f"the registry is a host name, optionally with ':port', without a scheme or path; {fix}"
            )
        return value

    @field_validator("allowed_ip_ranges")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [cidr for cidr in value if not _is_ipv4_network(cidr)]
        if bad:
            fixes = ", ".join(f"{cidr!r} -> {_cidr_suggestion(cidr)}" for cidr in bad)
            raise _problem("cidr", f"not IPv4 CIDRs with their host bits zero; write {fixes}")
        return sorted(set(value))

    @field_validator("agent_image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        if not IMAGE_WITH_TAG.fullmatch(value) or value.endswith(":latest"):
            raise _problem(
                "image",
                "the agent image needs a registry path and a pinned tag (':latest' is not pinned); "
                f"use one like '{DEFAULT_AGENT_IMAGE}'",
            )
        return value

    @field_validator("agent_token_secret_name", "registry_secret_name")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        return _dns_label(value, "a Kubernetes Secret name")


class ChartSpec(SpecModel):
    """Which agent Helm chart to install."""

    repo_url: Annotated[str, Field(description="Helm repository of the agent chart, without credentials.")] = DEFAULT_CHART_REPO_URL
    name: Annotated[str, Field(description="Chart name in that repository.")] = "astro-remote-execution-agent"
    version: Annotated[str, Field(description="Pinned chart version; decides version-dependent values (openLineage >= 2.2, stateStoreBackend >= 2.3).")] = "2.3.3"
    path: Annotated[str | None, Field(description="A local chart directory used instead of the repo; a relative path is resolved against the project (the folder holding `dags/` and `include/`), not the worker's working directory.")] = None
    open_lineage: Annotated[bool, Field(description="Send lineage to Astro (chart >= 2.2).")] = False
    open_lineage_conn_id: Annotated[ConnId, Field(description="Airflow Connection whose password is the Deployment API token lineage is sent with; the bootstrap copies it into the chart's API-key Secret.")] = "astro_openlineage"
    sentinel: Annotated[bool, Field(description="Run the Sentinel agent monitor (chart >= 1.2).")] = True
    rollout_timeout_seconds: Annotated[int, Field(description="How long an install or upgrade may take to become ready before it is rolled back.", ge=30, le=HELM_TIMEOUT_MAX_SECONDS)] = 600

    @field_validator("repo_url")
    @classmethod
    def _repo(cls, value: str) -> str:
        hidden = _hide_credentials(value)
        if hidden != value:
            raise _problems([(
                "",
                f"got {hidden!r} (credentials hidden): user info or a query in the URL can carry credentials, "
                "which helm's output and the Airflow UI would show; remove it (the repository must be readable "
                "without credentials, or use chart.path)",
            )])
        if not re.fullmatch(r"https?://[^/\s]+\S*", value):
            raise _problem("chart_repo_url", f"use the http(s) URL of the Helm repository, like {DEFAULT_CHART_REPO_URL!r}")
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        try:
            Version(value)
        except InvalidVersion:
            pass
        else:
            if SEMVER.fullmatch(value):
                return value
        raise _problem("chart_version", "not a pinned chart version; use a semantic version like '2.3.3'")

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)


class NodeGroupSpec(SpecModel):
    name: Annotated[str, Field(description="Managed node group name.")] = "workers"
    instance_types: Annotated[list[str], Field(description="EC2 instance types; m5.xlarge fits three 1-CPU agents plus overhead.", min_length=1)] = ["m5.xlarge"]
    min_size: Annotated[int, Field(description="Smallest number of nodes.", ge=0)] = 0
    max_size: Annotated[int, Field(description="Largest number of nodes.", ge=1)] = 4
    desired_size: Annotated[int, Field(description="Nodes to start with.", ge=0)] = 2
    disk_size_gib: Annotated[int, Field(description="Root volume size per node.", ge=20, le=EBS_VOLUME_MAX_GIB)] = 50

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "a node group name")

    @model_validator(mode="after")
    def _sizes(self) -> NodeGroupSpec:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise _problems([(
                "desired_size",
                f"need min_size <= desired_size <= max_size, got {self.min_size} <= {self.desired_size} <= "
                f"{self.max_size}; set desired_size between min_size and max_size",
            )])
        return self


class EksClusterSpec(SpecModel):
    """An EKS cluster that the bootstrap creates, or adopts when it already exists and matches."""

    kind: Annotated[Literal["eks"], Field(description="`eks`: the bootstrap creates the cluster, or adopts a matching one.")]
    name: Annotated[str, Field(description="EKS cluster name")]
    region: Annotated[EksRegion, Field(description="AWS region of the cluster.")]
    kubernetes_version: Annotated[str, Field(description="Kubernetes 'MAJOR.MINOR', at least 1.30; drift is reported, never applied.")] = "1.33"
    node_groups: Annotated[list[NodeGroupSpec], Field(description="Managed node groups.", min_length=1)] = [NodeGroupSpec()]
    subnet_ids: Annotated[list[str], Field(description="Existing subnets; empty = create a VPC with public and private subnets in two AZs")] = []
    cluster_role_arn: Annotated[str | None, Field(description="Existing EKS cluster role; empty = the bootstrap creates one.")] = None
    node_role_arn: Annotated[str | None, Field(description="Existing node role; empty = the bootstrap creates one.")] = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", value):
            raise _problem(
                "cluster_name", "an EKS cluster name uses letters, digits, '-' and '_'; rename it, at most 100 characters"
            )
        return value

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        problems = [
            (f"[{index}]", f"got {subnet!r}: not a subnet id; write it like 'subnet-0123456789abcdef0'")
            for index, subnet in enumerate(value)
            if not SUBNET_ID.fullmatch(subnet)
        ]
        if not problems and len(set(value)) == 1:
            problems.append(("", f"got {value!r}: EKS needs subnets in at least two Availability Zones; give at least "
                                 "two subnet ids, or none to have the bootstrap create a VPC"))
        if problems:
            raise _problems(problems)
        return value

    @field_validator("cluster_role_arn", "node_role_arn")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        if value is not None and not IAM_ROLE_ARN.fullmatch(value):
            raise _problem(
                "role_arn",
                "not an IAM role ARN; write it like 'arn:aws:iam::123456789012:role/eks-cluster-role', "
                "or leave it out to have the bootstrap create the role",
            )
        return value

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _k8s_version(cls, value: Any) -> str:
        text = str(value)
        match = re.fullmatch(r"1\.([0-9]+)", text)
        if isinstance(value, float) and not re.fullmatch(r"1\.[0-9][0-9]", text):
            raise _problem("kubernetes_version", f"YAML read an unquoted number; quote the version, like '{value:.2f}'")
        if not match:
            raise _problem("kubernetes_version", "write the Kubernetes version as a quoted 'MAJOR.MINOR', like '1.33'")
        if (1, int(match.group(1))) < MIN_KUBERNETES:
            raise _problem(
                "kubernetes_version",
                "Remote Execution Agents need Kubernetes 1.30 or newer; set '1.33' (the tutorial's version)",
            )
        return text

    @field_validator("node_groups")
    @classmethod
    def _unique_node_groups(cls, value: list[NodeGroupSpec], info: ValidationInfo) -> list[NodeGroupSpec]:
        if problems := _duplicates(value, "name", info.field_name, "give each node group its own name"):
            raise _problems(problems)
        return value


class ExistingClusterSpec(SpecModel):
    """A cluster that already exists (on-prem or elsewhere), reached through a Kubernetes Connection."""

    kind: Annotated[Literal["existing"], Field(description="`existing`: an existing (e.g. on-prem) cluster.")]
    kubernetes_conn_id: Annotated[ConnId, Field(description="Airflow Kubernetes Connection to the cluster (kube_config_path or kube_config).")] = "kubernetes_default"


ClusterSpec = Annotated[EksClusterSpec | ExistingClusterSpec, Field(discriminator="kind")]


class ResourcesSpec(SpecModel):
    """Requests = limits for a worker container, as in the chart's defaults."""

    cpu: Annotated[str, Field(description="CPU request and limit.")] = "1"
    memory: Annotated[str, Field(description="Memory request and limit.")] = "2Gi"
    ephemeral_storage: Annotated[str, Field(description="Ephemeral storage request and limit.")] = "1Gi"

    @field_validator("cpu", "memory", "ephemeral_storage", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> str:
        text = str(value)
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?", text):
            raise _problem("quantity", "not a Kubernetes quantity; write it like '500m', '1' or '2Gi'")
        return text


class WorkerSpec(SpecModel):
    """One worker agent Deployment, consuming exactly one queue."""

    name: Annotated[str, Field(description="Worker name; its Deployment and ServiceAccount are `<prefix>-worker-<name>`.")] = "default-worker"
    queue: Annotated[str, Field(description="The one queue this worker consumes; route tasks with `queue=`.")] = "default"
    replicas: Annotated[int, Field(description="Worker Pods (a Kubernetes int32).", ge=1, le=INT32_MAX)] = 1
    sync_slots: Annotated[int, Field(description="Concurrent tasks per Pod.", ge=1)] = 20
    resources: Annotated[ResourcesSpec, Field(description="Requests = limits per worker container.")] = ResourcesSpec()
    pip_packages: Annotated[list[str], Field(description="Extra packages pip-installed at Pod start into a shared volume, pinned with '=='")] = []

    @model_validator(mode="before")
    @classmethod
    def _one_queue(cls, data: Any) -> Any:
        if isinstance(data, dict) and "queues" in data:
            raise _problems([(
                "queues",
                f"got {data['queues']!r}: a worker consumes exactly one queue; write 'queue: <name>' "
                "and add one worker entry per queue",
            )])
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "a worker name")

    @field_validator("queue", mode="before")
    @classmethod
    def _queue(cls, value: Any) -> str:
        if isinstance(value, list):
            raise _problem(
                "one_queue",
                "a worker consumes exactly one queue; add one worker entry per queue",
            )
        if not isinstance(value, str):
            read_as = "null (nothing after 'queue:')" if value is None else f"a {type(value).__name__}"
            raise _problem(
                "queue_type",
                f"YAML read this as {read_as}, not a queue name; write the name quoted, like queue: 'default'",
            )
        # 63: the chart's values schema (the queue is also a label value, whose limit it is).
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", value):
            raise _problem(
                "queue",
                "a queue name uses letters, digits, '_', '.' and '-', at most 63 characters; for several queues add "
                "one worker entry per queue",
            )
        return value

    @field_validator("pip_packages")
    @classmethod
    def _pinned_packages(cls, value: list[str]) -> list[str]:
        # Imported here: only specs with pip packages pay for the requirement parser at Dag parse time.
        from packaging.requirements import InvalidRequirement, Requirement

        problems: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            try:
                specifier = list(Requirement(item).specifier)
            except InvalidRequirement:
                specifier = []
            if len(specifier) != 1 or specifier[0].operator != "==":
                problems.append((
                    f"[{index}]",
                    f"got {item!r}: pin it with '==', like 'apache-airflow-providers-amazon==9.9.0' "
                    "(the constraints ConfigMap keeps the rest consistent)",
                ))
        if problems:
            raise _problems(problems)
        return value


class DagBundleSpec(SpecModel):
    """A git Dag bundle the agents' Dag processor reads (the Remote Execution way to ship Dags)."""

    name: Annotated[str, Field(description="Dag bundle name, unique in the spec")]
    repo_url: Annotated[str, Field(description="https (or git@) URL of the Dag repository, without credentials")]
    branch: Annotated[str, Field(description="Branch (tracking ref) to follow.")] = "main"
    git_conn_id: Annotated[ConnId, Field(description="Airflow git Connection holding the credentials, read by the agents from the secrets backend.")] = "git_default"
    subdir: Annotated[str, Field(description="Folder of the repository holding the Dags, relative to its root.")] = "dags"
    refresh_interval: Annotated[int, Field(description="Seconds between fetches.", ge=1)] = 60

    @field_validator("repo_url")
    @classmethod
    def _repo(cls, value: str) -> str:
        hidden = _hide_credentials(value)
        if hidden != value:
            raise _problems([(
                "",
                f"got {hidden!r} (credentials hidden): user info or a query in the URL can carry credentials, "
                "which would leak; remove it and keep the credentials in the Connection named by git_conn_id",
            )])
        if not re.fullmatch(r"(https://|git@)\S+", value):
            raise _problem("repo_url", "use the https (or git@) URL of the repository; credentials go in git_conn_id")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if problem := _branch_problem(value):
            raise _problem("git_branch", f"not a git branch name: {problem} (git check-ref-format); write one like 'main'")
        return value

    @field_validator("subdir")
    @classmethod
    def _subdir(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or ".." in parts or any(ord(char) < 0x20 for char in value):
            inside = "/".join(part for part in parts if part not in ("", "..") and part.isprintable()) or "dags"
            raise _problem(
                "subdir", f"the Dag folder is a path inside the repository, relative and without '..'; write {inside!r}"
            )
        return value


class XComBackendSpec(SpecModel):
    bucket: Annotated[BucketName, Field(description="S3 bucket for XCom objects (the customer's; not created by the bootstrap).")]
    prefix: Annotated[Prefix, Field(description="Key prefix, no leading or trailing '/'.")] = "xcom"
    threshold_bytes: Annotated[int, Field(description="XComs larger than this go to S3; 0 = always")] = 0
    compression: Annotated[Literal["zip", "gzip", "snappy", "bz2", "lzma"] | None, Field(description="Compression of XCom objects.")] = None
    kms_key_arn: Annotated[KmsKeyArn | None, Field(description="KMS key the bucket encrypts with (SSE-KMS); the agents get kms:GenerateDataKey and kms:Decrypt on it through S3 only.")] = None

    @field_validator("threshold_bytes")
    @classmethod
    def _threshold(cls, value: int) -> int:
        if value < 0:
            raise _problem(
                "threshold",
                "the XCom threshold must be >= 0; -1 would keep XComs in the Astro metadata database, "
                "which remote agents cannot reach; use 0 (every XCom in S3) or a size in bytes",
            )
        return value


class SecretsBackendSpec(SpecModel):
    connections_prefix: Annotated[Prefix, Field(description="Secrets Manager prefix of Airflow Connections.")] = "airflow/connections"
    variables_prefix: Annotated[Prefix, Field(description="Secrets Manager prefix of Airflow Variables.")] = "airflow/variables"
    kms_key_arn: Annotated[KmsKeyArn | None, Field(description="Customer managed KMS key of the secrets; the agents get kms:Decrypt on it through Secrets Manager only.")] = None


class LogsBackendSpec(SpecModel):
    bucket: Annotated[BucketName, Field(description="S3 bucket for task logs.")]
    prefix: Annotated[Prefix, Field(description="Key prefix of task logs.")] = "logs"
    kms_key_arn: Annotated[KmsKeyArn | None, Field(description="KMS key the log bucket encrypts with (SSE-KMS); kms:GenerateDataKey and kms:Decrypt through S3 only.")] = None


class StateStoreSpec(SpecModel):
    """Airflow 3.3 task state store (chart >= 2.3.0); kept under the XCom bucket."""

    prefix: Annotated[Prefix, Field(description="Key prefix in the XCom bucket.")] = "state"


class BackendsSpec(SpecModel):
    """Where agents keep XCom, read secrets and ship task logs (all AWS here)."""

    aws_region: Annotated[BackendsRegion, Field(description="Region of the buckets and secrets.")]
    xcom: Annotated[XComBackendSpec, Field(description="XCom object storage: bucket, prefix, threshold")]
    secrets: Annotated[SecretsBackendSpec, Field(description="AWS Secrets Manager backend prefixes.")] = SecretsBackendSpec()
    logs: Annotated[LogsBackendSpec, Field(description="task log bucket and prefix")]
    state_store: Annotated[StateStoreSpec | None, Field(description="Task state store (chart >= 2.3); defaults on from chart 2.3.")] = None


class IrsaIdentitySpec(SpecModel):
    """IAM roles for service accounts: the agents' ServiceAccounts assume a role through EKS OIDC."""

    mode: Annotated[Literal["irsa"], Field(description="`irsa`: the agents' ServiceAccounts assume an IAM role through the cluster's OIDC provider.")]
    role_name: Annotated[str | None, Field(description="IAM role name; default `<name>-remote-agents`.")] = None
    per_component: Annotated[bool, Field(description="One role per component (workers, Dag processor, triggerer) instead of one for all")] = False

    @field_validator("role_name")
    @classmethod
    def _role_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(rf"[A-Za-z0-9_+=,.@-]{{1,{IAM_ROLE_NAME_MAX}}}", value):
            raise _problem(
                "role_name",
                f"an IAM role name uses letters, digits and '+=,.@_-'; rename it, at most {IAM_ROLE_NAME_MAX} characters",
            )
        return value


class StaticCredentialsIdentitySpec(SpecModel):
    """On-prem: AWS keys from an Airflow Connection are copied into a Kubernetes Secret for the agents."""

    mode: Annotated[Literal["static-credentials"], Field(description="`static-credentials`: AWS keys from a Connection, copied into a Kubernetes Secret.")]
    aws_conn_id: Annotated[ConnId, Field(description="Airflow AWS Connection whose keys the agents use.")] = "agents_aws"
    secret_name: Annotated[str, Field(description="Kubernetes Secret the keys are copied into.")] = "astro-agent-aws-credentials"

    @field_validator("secret_name")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        return _dns_label(value, "a Kubernetes Secret name")


IdentitySpec = Annotated[IrsaIdentitySpec | StaticCredentialsIdentitySpec, Field(discriminator="mode")]


class NotifierSpec(SpecModel):
    kind: Annotated[Literal["none", "slack", "webhook"], Field(description="Where health-check failures go.")] = "none"
    connection_id: Annotated[ConnId | None, Field(description="Connection holding the Slack or webhook URL.")] = None

    @model_validator(mode="after")
    def _needs_connection(self) -> NotifierSpec:
        if self.kind != "none" and not self.connection_id:
            raise _problems([(
                "connection_id",
                f"missing for kind '{self.kind}'; set it to the Connection holding the webhook URL",
            )])
        return self


class HealthSpec(SpecModel):
    schedule: Annotated[str, Field(description="Cron schedule of the health Dag (also runs after each bootstrap).")] = "*/30 * * * *"
    drift_schedule: Annotated[str, Field(description="Schedule of the drift check (live state vs the spec).")] = "@daily"
    selftest_timeout_seconds: Annotated[int, Field(description="How long the self-test may take before queues are reported as not consumed.", ge=30)] = 300
    token_expiry_warning_days: Annotated[int, Field(description="Warn this many days before the agent or registry token expires (the fix: bootstrap with rotate tokens).", ge=1, le=3650)] = 14
    notifier: Annotated[NotifierSpec, Field(description="Failure and recovery notifications.")] = NotifierSpec()

    @field_validator("schedule", "drift_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if value.startswith("@") and value not in CRON_PRESETS:
            presets = ", ".join(repr(preset) for preset in CRON_PRESETS)
            raise _problem("cron", f"not a preset these Dags can run on (they run on a cron timetable); use a cron "
                                   f"expression like '*/30 * * * *' or one of {presets}")
        expression = CRON_PRESETS.get(value, value)
        if not croniter.is_valid(expression):
            raise _problem("cron", "not a schedule; use a cron expression like '*/30 * * * *' or a preset like '@daily'")
        try:
            croniter(expression).get_next()
        except CroniterBadDateError:
            raise _problem("cron", "its next time never comes (a day the month does not have?); use a cron "
                                   "expression that fires, like '*/30 * * * *'") from None
        return value


class EnvironmentSpec(SpecModel):
    """Everything needed to bootstrap and health-check one Remote Execution environment."""

    name: Annotated[str, Field(description="environment name, a DNS label used in dag_ids and resource names")]
    aws_conn_id: Annotated[ConnId, Field(description="Management-side AWS Connection (EKS, IAM, S3, Secrets Manager)")] = "aws_default"
    astro: Annotated[AstroSpec, Field(description="the Astro organization and Remote Execution Deployment")]
    chart: Annotated[ChartSpec, Field(description="The agent Helm chart.")] = ChartSpec()
    cluster: Annotated[ClusterSpec, Field(description="kind: eks (created) or kind: existing (a Kubernetes Connection)")]
    namespace: Annotated[str, Field(description="Kubernetes namespace of the agents.")] = "astro-agents"
    release_name: Annotated[str, Field(description="Helm release name.")] = "astro-agent"
    resource_name_prefix: Annotated[str, Field(description="Chart `resourceNamePrefix`: prefix of every object the chart creates.")] = "astro-agent"
    workers: Annotated[list[WorkerSpec], Field(description="Worker agents, one per queue.", min_length=1)] = [WorkerSpec()]
    dag_bundles: Annotated[list[DagBundleSpec], Field(description="Git Dag bundles the agents read; empty = the image's dags folder.")] = []
    backends: Annotated[BackendsSpec, Field(description="aws_region, xcom and logs buckets, secrets prefixes")]
    identity: Annotated[IdentitySpec, Field(description="How the agents get AWS credentials.")] = IrsaIdentitySpec(mode="irsa")
    labels: Annotated[dict[str, str], Field(description="Labels on every object the chart creates.")] = {}
    annotations: Annotated[dict[str, str], Field(description="Annotations on every object the chart creates.")] = {}
    health: Annotated[HealthSpec, Field(description="Health-check schedule and notifications.")] = HealthSpec()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "the environment name (used in dag_ids and resource names)")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _dns_label(value, "a namespace")

    @field_validator("release_name", "resource_name_prefix")
    @classmethod
    def _release(cls, value: str) -> str:
        if len(value) > 40:
            raise _problem(
                "name_too_long",
                f"{len(value)} characters; shorten it to at most 40: the chart appends '-worker-<name>' to it",
            )
        return _dns_label(value, "a Helm release name / resource prefix")

    @field_validator("labels", "annotations")
    @classmethod
    def _keys(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        secret = {key: reason for key, text in value.items() if (reason := _secret_reason(key, text))}
        problems = [
            (str(key), f"{reason} (value not shown); labels and annotations are readable by anyone who can read "
                       "the objects: keep the secret in an Airflow Connection and remove it here")
            for key, reason in secret.items()
        ]
        problems += [
            ("", f"key {key!r} is not a Kubernetes key; use letters, digits, '-', '_' and '.', optionally "
                 "after a DNS prefix and '/', like 'team' or 'acme.io/team'")
            for key in value
            if not LABEL_KEY.fullmatch(key)
        ]
        if info.field_name == "labels":
            for key, text in value.items():
                if key in secret:
                    continue
                if key in CHART_SELECTOR_LABELS:
                    problems.append((key, f"got {text!r}: the chart selects its Pods by this label and sets it "
                                          f"itself; rename the key, like 'acme.io/{key}'"))
                elif key in OWN_LABELS:
                    problems.append((key, f"got {text!r}: remote-agents sets this label to find the objects it "
                                          "owns; remove it"))
                elif not LABEL_VALUE.fullmatch(text):
                    problems.append((key, f"got {text!r}: a label value has at most 63 letters, digits, '-', '_' "
                                          "and '.', starting and ending with a letter or digit; shorten it or move "
                                          "it to annotations"))
        else:
            size = sum(len(key.encode()) + len(text.encode()) for key, text in value.items())
            if size > ANNOTATIONS_MAX_BYTES:
                problems.append(("", f"got {size} bytes of keys and values; Kubernetes allows 256 KiB in all and "
                                     f"the chart, Helm and IRSA add some, so keep them to {ANNOTATIONS_MAX_BYTES} "
                                     "bytes: move large values into a ConfigMap"))
        if problems:
            raise _problems(problems)
        return value

    @field_validator("workers")
    @classmethod
    def _unique_workers(cls, value: list[WorkerSpec], info: ValidationInfo) -> list[WorkerSpec]:
        problems = [
            *_duplicates(value, "name", info.field_name, "give each worker its own name"),
            # The API server routes a queue to the agents that heartbeat it; two Deployments on one
            # queue are one worker pool configured twice.
            *_duplicates(
                value, "queue", info.field_name, "give each worker its own queue, or raise the first worker's replicas"
            ),
        ]
        if problems:
            raise _problems(problems)
        return value

    @field_validator("dag_bundles")
    @classmethod
    def _unique_bundles(cls, value: list[DagBundleSpec], info: ValidationInfo) -> list[DagBundleSpec]:
        if problems := _duplicates(value, "name", info.field_name, "give each Dag bundle its own name"):
            raise _problems(problems)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> EnvironmentSpec:
        """Checks across parts; they run once every part is valid on its own."""
        problems: list[tuple[str, str]] = []
        if isinstance(self.identity, IrsaIdentitySpec) and self.cluster.kind != "eks":
            problems.append((
                "identity.mode",
                f"got 'irsa' with cluster.kind '{self.cluster.kind}': IRSA needs an EKS cluster; for an "
                "existing cluster use identity.mode: static-credentials",
            ))
        version = self.chart.parsed_version
        if self.backends.state_store and version < Version("2.3.0"):
            problems.append((
                "backends.state_store",
                f"chart.version {self.chart.version!r} has no stateStoreBackend (added in 2.3.0); "
                "set chart.version to '2.3.3' or remove backends.state_store",
            ))
        if self.chart.open_lineage and version < Version("2.2.0"):
            problems.append((
                "chart.open_lineage",
                f"chart.version {self.chart.version!r} has no openLineage block (added in 2.2.0); "
                "set chart.version to '2.3.3' or open_lineage: false",
            ))
        problems += self._role_name_problems()
        if problems:
            raise _problems(problems)
        return self

    def _role_name_problems(self) -> list[tuple[str, str]]:
        """The IAM roles the bootstrap creates: names IAM accepts, and no role shared by two components."""
        # (role name, the field it is made from, whose role it is, another way out)
        roles: list[tuple[str, str, str, str]] = []
        if eks := self.eks:
            names = naming.eks_role_names(self)
            if not eks.cluster_role_arn:
                roles.append((names["cluster"], "name", "the EKS cluster role", " or set cluster.cluster_role_arn"))
            if not eks.node_role_arn:
                roles.append((names["node"], "name", "the EKS node role", " or set cluster.node_role_arn"))
        if irsa := self.irsa:
            source, way_out = ("identity.role_name", "") if irsa.role_name else ("name", " or set identity.role_name")
            for component, name in naming.irsa_role_names(self).items():
                roles.append((name, source, f"the IRSA role of the {component}" if component else "the IRSA role", way_out))
        problems: list[tuple[str, str]] = []
        # IAM role names are unique regardless of case.
        owners: dict[str, str] = {}
        for name, source, whose, way_out in roles:
            if len(name) > IAM_ROLE_NAME_MAX:
                problems.append((source, f"{whose} would be {name!r} ({len(name)} characters, IAM allows "
                                         f"{IAM_ROLE_NAME_MAX}); shorten it by {len(name) - IAM_ROLE_NAME_MAX} "
                                         f"characters{way_out}"))
            owner = owners.setdefault(name.lower(), whose)
            if owner != whose:
                problems.append((source, f"{whose} would be {name!r}, the name of {owner} too (IAM ignores case "
                                         f"in role names); give it another name{way_out}"))
        return problems

    @property
    def state_store(self) -> StateStoreSpec | None:
        """The task state store the agents use: as written, else the default from chart 2.3.0 on.

        Agents >= 1.8 on Runtime 3.3 refuse to start without one, and chart 2.3 installs them.
        """
        if self.backends.state_store or self.chart.parsed_version < Version("2.3.0"):
            return self.backends.state_store
        return StateStoreSpec()

    @property
    def eks(self) -> EksClusterSpec | None:
        return self.cluster if isinstance(self.cluster, EksClusterSpec) else None

    @property
    def irsa(self) -> IrsaIdentitySpec | None:
        return self.identity if isinstance(self.identity, IrsaIdentitySpec) else None


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML keeps only the last of two equal keys without a word; a spec refuses them instead."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise ConfigError([f"line {line}: a {type(key).__name__} is used as a key; keys are field names, "
                               "write 'name: value'"])
        if key in first:
            raise ConfigError([f"line {line}: key {key!r} appears twice (first on line {first[key]}); keep one of them"])
        first[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_spec(data: Any, source: str = "spec") -> EnvironmentSpec:
    """Validate a mapping as an EnvironmentSpec; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__} ({_short(data)})"
        raise ConfigError(
            [f"(document): got {got}; a spec is a mapping of fields, start from include/environments/tutorial.yaml"],
            source,
        )
    try:
        return EnvironmentSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError([line for e in error.errors() for line in _describe(e)], source) from None


# A spec is a page of YAML: bounds far above any real one, far below what stalls a Dag processor.
MAX_SPEC_BYTES = 256 * 1024
MAX_EXPANDED_NODES = 100_000


def load_spec(path: str | Path) -> EnvironmentSpec:
    """Read and validate a spec file."""
    path = Path(path)
    try:
        text = _read_text(path)
        _refuse_alias_expansion(text)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError([f"(file): no such file {str(path)!r}; check the path"], str(path)) from None
    except IsADirectoryError:
        raise ConfigError([f"(file): {str(path)!r} is a directory, not a spec file; rename it"], str(path)) from None
    except ConfigError as error:
        raise ConfigError(error.problems, str(path)) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError([f"{where}: not valid YAML: {error.problem}; fix the syntax there"], str(path)) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"(file): not valid YAML: {' '.join(str(error).split())}"], str(path)) from None
    return parse_spec(data, str(path))


# Discriminated-union members: pydantic puts the tag in the error path, users never wrote it there.
_TAGGED: dict[str, type[SpecModel]] = {
    "eks": EksClusterSpec,
    "existing": ExistingClusterSpec,
    "irsa": IrsaIdentitySpec,
    "static-credentials": StaticCredentialsIdentitySpec,
}
# Pydantic's messages say what is wrong; these say how to fix it (placeholders are the error's ctx).
# literal_error is absent: its message already lists the accepted values.
_FIXES = {
    "greater_than_equal": "use a value >= {ge}",
    "greater_than": "use a value > {gt}",
    "less_than_equal": "use a value <= {le}",
    "less_than": "use a value < {lt}",
    "too_short": "give at least {min_length} item(s)",
    "too_long": "give at most {max_length} item(s)",
    "string_too_short": "give at least {min_length} character(s)",
    "string_too_long": "shorten it to at most {max_length} characters",
    "int_type": "write a whole number, like 2",
    "int_parsing": "write a whole number, like 2",
    "int_from_float": "write a whole number, like 2",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "string_type": "write a string (quote it in YAML)",
    "list_type": "write a YAML list, one '- item' per line",
    "dict_type": "write a mapping of 'key: value' lines",
    "model_type": "write a mapping of 'key: value' lines",
    "model_attributes_type": "write a mapping of 'key: value' lines",
}


def _describe(error: Any) -> list[str]:
    """Lines naming the field path, the bad value, what is wrong and how to fix it."""
    loc = _path(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "problems":
        return [f"{_join(loc, relative)}: {message}" for relative, message in ctx["problems"]]
    if kind == "extra_forbidden":
        return [f"{loc}: unknown field {error['loc'][-1]!r}{_did_you_mean(error['loc'])}"]
    if kind == "missing":
        return [f"{loc}: required field is missing; add it{_about(error['loc'])}"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(ctx.get("discriminator", "")).strip("'")
        expected = ", ".join(repr(t) for t, model in _TAGGED.items() if tag in model.model_fields)
        if kind == "union_tag_not_found":
            return [f"{loc}.{tag}: required field is missing; add {tag}: one of {expected}"]
        return [f"{loc}.{tag}: got {ctx.get('tag')!r}: use one of {expected}"]
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" got {_short(value)}:"
    fix = _FIXES.get(kind)
    return [f"{loc}:{shown} {error['msg']}" + (f"; {fix.format_map(ctx)}" if fix else "")]


def _short(value: Any, limit: int = 120) -> str:
    # reprlib stops at a few levels and items: a full repr() of input built from YAML aliases can be
    # exponentially long (a 2 KB file, gigabytes of text).
    text = _BOUNDED_REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_BOUNDED_REPR = reprlib.Repr()
_BOUNDED_REPR.maxlevel, _BOUNDED_REPR.maxlist, _BOUNDED_REPR.maxdict = 3, 6, 6
_BOUNDED_REPR.maxstring = _BOUNDED_REPR.maxother = 120


def _join(base: str, relative: str) -> str:
    if not base or not relative:
        return base or relative
    return base + relative if relative.startswith("[") else f"{base}.{relative}"


def _path(loc: tuple[Any, ...]) -> str:
    path = ""
    for previous, item in zip((None, *loc), loc):
        if _is_tag(previous, item):
            continue
        path = _join(path, f"[{item}]" if isinstance(item, int) else str(item))
    return path


def _is_tag(previous: Any, item: Any) -> bool:
    return previous in ("cluster", "identity") and item in _TAGGED


def _about(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    field = model.model_fields.get(str(loc[-1])) if model else None
    return f" ({field.description})" if field and field.description else ""


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise IsADirectoryError(path)
    with path.open("rb") as handle:
        raw = handle.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise ConfigError([f"(file): larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a page of YAML"])
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(["(file): UTF-16 text; save the spec as UTF-8"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError([f"line {line}: byte {raw[error.start]:#04x} is not UTF-8 (Latin-1?); save the spec as "
                           "UTF-8"]) from None


def _refuse_alias_expansion(text: str) -> None:
    """Anchors and aliases are fine, until they expand a small file into gigabytes (a YAML bomb):
    count the nodes the document expands to, each alias as the size of what it names."""
    sizes: dict[str, int] = {}
    open_nodes: list[list[Any]] = [[0, None]]  # [expanded size so far, anchor] of each open collection
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            open_nodes.append([1, event.anchor])
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size, anchor = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            size, anchor = 1, event.anchor
        elif isinstance(event, yaml.AliasEvent):
            size, anchor = sizes.get(event.anchor, 1), None
        else:
            continue
        if anchor:
            sizes[anchor] = size
        open_nodes[-1][0] += size
        if open_nodes[-1][0] > MAX_EXPANDED_NODES:
            raise ConfigError([f"(file): its YAML aliases (*name) expand it to more than {MAX_EXPANDED_NODES} "
                               "values; write the values out, or use fewer aliases"])


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; remove it (known fields: {', '.join(model.model_fields)})"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = EnvironmentSpec
    for previous, item in zip((None, *loc), loc):
        if isinstance(item, int):
            continue
        if _is_tag(previous, item):
            model = _TAGGED[item]
            continue
        field = model.model_fields.get(str(item))
        if field is None:
            return None
        nested = _first_model(field.annotation)
        if nested is None:
            return None
        model = nested
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _first_model(arg)
        if found is not None:
            return found
    return None
