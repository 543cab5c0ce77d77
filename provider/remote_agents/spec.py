"""The environment spec: one YAML file describes one Remote Execution environment.

``load_spec(path)`` reads and validates it before anything touches a network. Every problem is
reported at once, each naming the field path, the bad value and the fix (see ``ConfigError``).
Secrets are never part of a spec: it names Airflow Connections that hold them.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import croniter
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from remote_agents.errors import ConfigError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
AWS_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
IMAGE_WITH_TAG = re.compile(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$")
MIN_KUBERNETES = (1, 30)
# Keys that would carry a secret value; a spec names the Connection that holds it instead.
SECRET_KEYS = {
    "token", "agent_token", "agenttoken", "api_token", "password", "secret", "secret_key",
    "aws_secret_access_key", "access_key", "registry_token", "git_token", "imagepullsecretdata",
}
DEFAULT_AGENT_IMAGE = (
    "images.astronomer.cloud/baseimages/astro-remote-execution-agent:3.3-1-python-3.12-astro-agent-1.8.2"
)


def _problem(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _dns_label(value: str, what: str) -> str:
    if not DNS_LABEL.match(value):
        raise _problem(
            "dns_label",
            f"{what} must be a DNS label (lowercase letters, digits and '-', at most 63 characters, "
            "starting and ending with a letter or digit)",
        )
    return value


def _s3_prefix(value: str) -> str:
    if value.startswith("/") or value.endswith("/"):
        fixed = value.strip("/")
        raise _problem("s3_prefix", f"an S3 prefix has no leading or trailing '/'; write '{fixed}'")
    if not value or "//" in value or "*" in value:
        raise _problem("s3_prefix", "an S3 prefix is a non-empty path like 'xcom' or 'env/xcom', with no '*'")
    return value


def _conn_id(value: str) -> str:
    if not CONN_ID.match(value):
        raise _problem("conn_id", "a connection id uses letters, digits, '_', '.' and '-' only")
    return value


ConnId = Annotated[str, AfterValidator(_conn_id)]


class SpecModel(BaseModel):
    """Base of every spec part: unknown keys are errors and parts are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS:
                    raise _problem(
                        "inline_secret",
                        f"'{key}' would put a secret in the spec; secrets live in Airflow Connections — "
                        "store it in one and give its id (e.g. astro.connection_id, dag_bundles[].git_conn_id)",
                    )
        return data


class AstroSpec(SpecModel):
    """The Astro side: which Remote Execution Deployment the agents serve."""

    connection_id: Annotated[ConnId, Field(description="Airflow Connection of type `astro`: host = API URL, password = API token, extra.organization_id")] = "astro_default"
    organization_id: Annotated[str, Field(min_length=1, description="Astro organization id")]
    workspace_id: str | None = None
    deployment_id: Annotated[str, Field(min_length=1, description="Remote Execution Deployment id")]
    deployment_api_url: Annotated[str, Field(description="`astroDeploymentAPIURL`: https://<clusterId>.external.astronomer.run/<deploymentShortId>")]
    deployment_connection_id: Annotated[ConnId, Field(description="Connection to the Deployment's Airflow REST API (health checks)")] = "astro_deployment"
    agent_image: str = DEFAULT_AGENT_IMAGE
    registry: str = "images.astronomer.cloud"
    agent_token_secret_name: str = "astro-agent-token"
    registry_secret_name: str = "astro-registry"
    agent_token_expiry_days: Annotated[int, Field(ge=1, le=3650)] = 365

    @field_validator("deployment_api_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not re.match(r"^https://[^/\s]+/\S+$", value):
            raise _problem(
                "https_url",
                "astroDeploymentAPIURL is the https URL shown in the Deployment's Remote Agents tab, "
                "like https://<clusterId>.external.astronomer.run/<deploymentShortId>",
            )
        return value.rstrip("/")

    @field_validator("agent_image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        if not IMAGE_WITH_TAG.match(value) or value.endswith(":latest"):
            raise _problem(
                "image",
                "the agent image needs a registry path and a pinned tag, like "
                f"'{DEFAULT_AGENT_IMAGE}' (':latest' is not pinned)",
            )
        return value

    @field_validator("agent_token_secret_name", "registry_secret_name")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        return _dns_label(value, "a Kubernetes Secret name")


class ChartSpec(SpecModel):
    """Which agent Helm chart to install."""

    repo_url: str = "https://helm.astronomer.io"
    name: str = "astro-remote-execution-agent"
    version: str = "2.3.3"
    path: Annotated[str | None, Field(description="A local chart directory (relative to the repository root) used instead of the repo")] = None
    open_lineage: bool = False
    sentinel: bool = True

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        try:
            Version(value)
        except InvalidVersion:
            raise _problem("chart_version", "the chart version is a pinned semantic version like '2.3.3'") from None
        return value

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)


class NodeGroupSpec(SpecModel):
    name: str = "workers"
    instance_types: Annotated[list[str], Field(min_length=1)] = ["m5.xlarge"]
    min_size: Annotated[int, Field(ge=0)] = 1
    max_size: Annotated[int, Field(ge=1)] = 4
    desired_size: Annotated[int, Field(ge=0)] = 2
    disk_size_gib: Annotated[int, Field(ge=20)] = 50

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "a node group name")

    @model_validator(mode="after")
    def _sizes(self) -> NodeGroupSpec:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise _problem(
                "node_group_size",
                f"node group '{self.name}': need min_size <= desired_size <= max_size, got "
                f"{self.min_size} <= {self.desired_size} <= {self.max_size}",
            )
        return self


class EksClusterSpec(SpecModel):
    """An EKS cluster that the bootstrap creates, or adopts when it already exists and matches."""

    kind: Literal["eks"]
    name: str
    region: str
    kubernetes_version: str = "1.33"
    node_groups: Annotated[list[NodeGroupSpec], Field(min_length=1)] = [NodeGroupSpec()]
    subnet_ids: Annotated[list[str], Field(description="Existing subnets; empty = create a VPC with public and private subnets in two AZs")] = []
    cluster_role_arn: str | None = None
    node_role_arn: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$", value):
            raise _problem("cluster_name", "an EKS cluster name uses letters, digits, '-' and '_' (at most 100)")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not AWS_REGION.match(value):
            raise _problem("aws_region", "an AWS region looks like 'us-east-1'")
        return value

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _k8s_version(cls, value: Any) -> str:
        text = str(value)
        match = re.match(r"^1\.(\d+)$", text)
        if not match:
            raise _problem("kubernetes_version", "write the Kubernetes version as a quoted 'MAJOR.MINOR', like '1.33'")
        if (1, int(match.group(1))) < MIN_KUBERNETES:
            raise _problem(
                "kubernetes_version",
                "Remote Execution Agents need Kubernetes 1.30 or newer; set '1.33' (the tutorial's version)",
            )
        return text

    @model_validator(mode="after")
    def _unique_node_groups(self) -> EksClusterSpec:
        names = [g.name for g in self.node_groups]
        if len(names) != len(set(names)):
            raise _problem("duplicate", f"node group names must be unique, got {names}")
        return self


class ExistingClusterSpec(SpecModel):
    """A cluster that already exists (on-prem or elsewhere), reached through a Kubernetes Connection."""

    kind: Literal["existing"]
    kubernetes_conn_id: ConnId = "kubernetes_default"


ClusterSpec = Annotated[EksClusterSpec | ExistingClusterSpec, Field(discriminator="kind")]


class ResourcesSpec(SpecModel):
    """Requests = limits for a worker container, as in the chart's defaults."""

    cpu: str = "1"
    memory: str = "2Gi"
    ephemeral_storage: str = "1Gi"

    @field_validator("cpu", "memory", "ephemeral_storage", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> str:
        text = str(value)
        if not re.match(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$", text):
            raise _problem("quantity", "a Kubernetes quantity looks like '500m', '1', '2Gi'")
        return text


class WorkerSpec(SpecModel):
    """One worker agent Deployment, consuming exactly one queue."""

    name: str = "default-worker"
    queue: str = "default"
    replicas: Annotated[int, Field(ge=1)] = 1
    sync_slots: Annotated[int, Field(ge=1)] = 20
    resources: ResourcesSpec = ResourcesSpec()
    pip_packages: Annotated[list[str], Field(description="Extra packages pip-installed at Pod start into a shared volume, pinned with '=='")] = []

    @model_validator(mode="before")
    @classmethod
    def _one_queue(cls, data: Any) -> Any:
        if isinstance(data, dict) and "queues" in data:
            queues = data["queues"]
            raise _problem(
                "one_queue",
                f"a worker consumes exactly one queue, but 'queues' was given ({queues!r}); "
                "write 'queue: <name>' and add one worker entry per queue",
            )
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
        text = str(value)
        if not re.match(r"^[A-Za-z0-9_.-]{1,200}$", text):
            raise _problem("queue", "a queue name uses letters, digits, '_', '.' and '-' (no commas or spaces)")
        return text

    @field_validator("pip_packages")
    @classmethod
    def _pinned_packages(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                requirement = Requirement(item)
            except InvalidRequirement:
                raise _problem("requirement", f"'{item}' is not a pip requirement") from None
            if len(requirement.specifier) != 1 or next(iter(requirement.specifier)).operator != "==":
                raise _problem(
                    "requirement",
                    f"pin '{item}' with '==' (the constraints ConfigMap keeps the rest consistent)",
                )
        return value


class DagBundleSpec(SpecModel):
    """A git Dag bundle the agents' Dag processor reads (the Remote Execution way to ship Dags)."""

    name: str
    repo_url: str
    branch: str = "main"
    git_conn_id: ConnId = "git_default"
    subdir: str = "dags"
    refresh_interval: Annotated[int, Field(ge=1)] = 60

    @field_validator("repo_url")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not re.match(r"^(https://|git@)\S+$", value):
            raise _problem("repo_url", "use the https (or git@) URL of the repository; credentials go in git_conn_id")
        if re.match(r"^https://[^/]*@", value):
            raise _problem("inline_secret", "credentials in the URL would leak; put them in the git connection")
        return value


class XComBackendSpec(SpecModel):
    bucket: str
    prefix: str = "xcom"
    threshold_bytes: Annotated[int, Field(description="XComs larger than this go to S3; 0 = always")] = 0
    compression: Literal["zip", "gzip", "snappy", "bz2", "lzma"] | None = None

    @field_validator("threshold_bytes")
    @classmethod
    def _threshold(cls, value: int) -> int:
        if value < 0:
            raise _problem(
                "threshold",
                "the XCom threshold must be >= 0 (0 = every XCom in S3); -1 would keep XComs in the "
                "Astro metadata database, which remote agents cannot reach",
            )
        return value


class SecretsBackendSpec(SpecModel):
    connections_prefix: str = "airflow/connections"
    variables_prefix: str = "airflow/variables"


class LogsBackendSpec(SpecModel):
    bucket: str
    prefix: str = "logs"


class StateStoreSpec(SpecModel):
    """Airflow 3.3 task state store (chart >= 2.3.0); kept under the XCom bucket."""

    prefix: str = "state"


class BackendsSpec(SpecModel):
    """Where agents keep XCom, read secrets and ship task logs (all AWS here)."""

    aws_region: str
    xcom: XComBackendSpec
    secrets: SecretsBackendSpec = SecretsBackendSpec()
    logs: LogsBackendSpec
    state_store: StateStoreSpec | None = None

    @field_validator("aws_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not AWS_REGION.match(value):
            raise _problem("aws_region", "an AWS region looks like 'us-east-1'")
        return value


class IrsaIdentitySpec(SpecModel):
    """IAM roles for service accounts: the agents' ServiceAccounts assume a role through EKS OIDC."""

    mode: Literal["irsa"]
    role_name: str | None = None
    per_component: Annotated[bool, Field(description="One role per component (workers, Dag processor, triggerer) instead of one for all")] = False

    @field_validator("role_name")
    @classmethod
    def _role_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[\w+=,.@-]{1,64}$", value):
            raise _problem("role_name", "an IAM role name uses letters, digits and '+=,.@_-' (at most 64)")
        return value


class StaticCredentialsIdentitySpec(SpecModel):
    """On-prem: AWS keys from an Airflow Connection are copied into a Kubernetes Secret for the agents."""

    mode: Literal["static-credentials"]
    aws_conn_id: ConnId = "agents_aws"
    secret_name: str = "astro-agent-aws-credentials"


IdentitySpec = Annotated[IrsaIdentitySpec | StaticCredentialsIdentitySpec, Field(discriminator="mode")]


class NotifierSpec(SpecModel):
    kind: Literal["none", "slack", "webhook"] = "none"
    connection_id: str | None = None

    @model_validator(mode="after")
    def _needs_connection(self) -> NotifierSpec:
        if self.kind != "none" and not self.connection_id:
            raise _problem(
                "notifier",
                f"a '{self.kind}' notifier needs connection_id: the Connection holding the webhook URL",
            )
        return self


class HealthSpec(SpecModel):
    schedule: str = "*/30 * * * *"
    drift_schedule: str = "@daily"
    selftest_timeout_seconds: Annotated[int, Field(ge=30)] = 300
    notifier: NotifierSpec = NotifierSpec()

    @field_validator("schedule", "drift_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not value.startswith("@") and not croniter.is_valid(value):
            raise _problem("cron", "a schedule is a cron expression like '*/30 * * * *' or a preset like '@daily'")
        return value


class EnvironmentSpec(SpecModel):
    """Everything needed to bootstrap and health-check one Remote Execution environment."""

    name: str
    aws_conn_id: Annotated[ConnId, Field(description="Management-side AWS Connection (EKS, IAM, S3, Secrets Manager)")] = "aws_default"
    astro: AstroSpec
    chart: ChartSpec = ChartSpec()
    cluster: ClusterSpec
    namespace: str = "astro-agents"
    release_name: str = "astro-agent"
    resource_name_prefix: str = "astro-agent"
    workers: Annotated[list[WorkerSpec], Field(min_length=1)] = [WorkerSpec()]
    dag_bundles: list[DagBundleSpec] = []
    backends: BackendsSpec
    identity: IdentitySpec = IrsaIdentitySpec(mode="irsa")
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    health: HealthSpec = HealthSpec()

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
            raise _problem("too_long", "keep it at most 40 characters: the chart appends '-worker-<name>' to it")
        return _dns_label(value, "a Helm release name / resource prefix")

    @field_validator("labels", "annotations")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_KEY.match(key):
                raise _problem("label_key", f"'{key}' is not a valid Kubernetes label/annotation key")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> EnvironmentSpec:
        problems = [
            *self._duplicate_workers(),
            *self._bucket_problems(),
            *self._chart_problems(),
        ]
        if isinstance(self.identity, IrsaIdentitySpec) and self.cluster.kind != "eks":
            problems.append(
                "identity.mode: 'irsa' needs an EKS cluster (cluster.kind: eks); for an existing "
                "cluster use identity.mode: static-credentials"
            )
        names = [b.name for b in self.dag_bundles]
        if len(names) != len(set(names)):
            problems.append(f"dag_bundles: names must be unique, got {names}")
        if problems:
            raise _problem("cross_field", "\n".join(problems))
        return self

    def _duplicate_workers(self) -> list[str]:
        problems, seen_names, seen_queues = [], {}, {}
        for index, worker in enumerate(self.workers):
            if worker.name in seen_names:
                problems.append(
                    f"workers[{index}].name: '{worker.name}' is already used by workers[{seen_names[worker.name]}]; "
                    "worker names must be unique"
                )
            if worker.queue in seen_queues:
                problems.append(
                    f"workers[{index}].queue: '{worker.queue}' is already consumed by workers[{seen_queues[worker.queue]}]; "
                    "give each worker its own queue, or raise that worker's replicas"
                )
            seen_names.setdefault(worker.name, index)
            seen_queues.setdefault(worker.queue, index)
        return problems

    def _bucket_problems(self) -> list[str]:
        problems = []
        for path, bucket in (("backends.xcom.bucket", self.backends.xcom.bucket), ("backends.logs.bucket", self.backends.logs.bucket)):
            if not BUCKET_NAME.match(bucket) or ".." in bucket or re.match(r"^\d+\.\d+\.\d+\.\d+$", bucket):
                problems.append(
                    f"{path}: '{bucket}' is not a valid S3 bucket name; use 3-63 lowercase letters, digits, '.' and '-', "
                    "starting and ending with a letter or digit"
                )
        for path, prefix in (
            ("backends.xcom.prefix", self.backends.xcom.prefix),
            ("backends.logs.prefix", self.backends.logs.prefix),
            ("backends.secrets.connections_prefix", self.backends.secrets.connections_prefix),
            ("backends.secrets.variables_prefix", self.backends.secrets.variables_prefix),
            *((("backends.state_store.prefix", self.backends.state_store.prefix),) if self.backends.state_store else ()),
        ):
            try:
                _s3_prefix(prefix)
            except PydanticCustomError as error:
                problems.append(f"{path}: '{prefix}': {error.message()}")
        return problems

    def _chart_problems(self) -> list[str]:
        version = self.chart.parsed_version
        problems = []
        if self.backends.state_store and version < Version("2.3.0"):
            problems.append(
                f"backends.state_store: chart {self.chart.version} has no stateStoreBackend (added in 2.3.0); "
                "remove backends.state_store or set chart.version to '2.3.3'"
            )
        if self.chart.open_lineage and version < Version("2.2.0"):
            problems.append(
                f"chart.open_lineage: chart {self.chart.version} has no openLineage block (added in 2.2.0); "
                "set chart.version to '2.3.3' or open_lineage: false"
            )
        return problems

    @property
    def eks(self) -> EksClusterSpec | None:
        return self.cluster if isinstance(self.cluster, EksClusterSpec) else None

    @property
    def irsa(self) -> IrsaIdentitySpec | None:
        return self.identity if isinstance(self.identity, IrsaIdentitySpec) else None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps only the last of two equal keys without a word; a spec refuses them instead."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError([f"line {key_node.start_mark.line + 1}: key '{key}' appears twice; keep one"])
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_spec(data: Any, source: str = "spec") -> EnvironmentSpec:
    """Validate a mapping as an EnvironmentSpec; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"the spec must be a mapping of keys to values, got {type(data).__name__}"], source)
    try:
        return EnvironmentSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError([line for e in error.errors() for line in _describe(e)], source) from None


def load_spec(path: str | Path) -> EnvironmentSpec:
    """Read and validate a spec file."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"], str(path)) from None
    except FileNotFoundError:
        raise ConfigError([f"no such file: {path}"], str(path)) from None
    return parse_spec(data, str(path))


def _describe(error: Any) -> list[str]:
    """Lines naming the field path, the bad value, what is wrong and how to fix it."""
    loc = _path(error["loc"])
    value = error.get("input")
    if error["type"] == "cross_field":
        return [line if not loc else f"{loc}: {line}" for line in error["msg"].splitlines()]
    if error["type"] == "extra_forbidden":
        return [f"{loc}: unknown field '{error['loc'][-1]}'{_did_you_mean(error['loc'])}"]
    if error["type"] == "missing":
        return [f"{loc}: required field is missing; add it (see docs/spec-reference.md)"]
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = "kind" if loc == "cluster" else "mode"
        expected = error["ctx"].get("expected_tags", "")
        return [f"{loc}.{tag}: got {error['ctx'].get('tag')!r}: use one of {expected}"]
    shown = "" if isinstance(value, (dict, list)) else f" got {value!r}:"
    return [f"{loc}:{shown} {error['msg']}"]


def _path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("eks", "existing", "irsa", "static-credentials"):
            continue  # pydantic adds the union member's tag to the path; users never wrote it
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known fields: {', '.join(model.model_fields)}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = EnvironmentSpec
    tags = {"eks": EksClusterSpec, "existing": ExistingClusterSpec, "irsa": IrsaIdentitySpec, "static-credentials": StaticCredentialsIdentitySpec}
    for item in loc:
        if isinstance(item, int):
            continue
        if item in tags:
            model = tags[item]
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
