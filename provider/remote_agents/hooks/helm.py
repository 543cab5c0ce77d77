"""``HelmHook``: the ``helm`` 3 binary, run with argv lists, values on stdin, results parsed from JSON.

- Cluster access comes from ``hooks.cluster.helm_environment`` for every call: a private temporary helm
  home, and for EKS the token in ``HELM_KUBETOKEN``. No credential is ever in argv.
- Values go in on stdin (``--values -``) as JSON, never in temporary files or ``--set`` flags.
- Output is ``--output json`` parsed into ``Release`` / ``ReleaseRevision``; "not installed" is
  ``None`` from ``get_release``.
- helm's stderr is mapped in one place (``helm_error``) to the ``HelmError`` subclasses below, with
  anything registered through ``mask_secret``, the values given to the hook and bearer tokens redacted.

Argv builders (``*_argv``) are pure functions so they can be unit tested without helm.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret, redact  # redact uses the same masker mask_secret feeds
from packaging.version import InvalidVersion, Version

from remote_agents.errors import ConfigError, HelmError
from remote_agents.hooks.cluster import ClusterAccess, helm_environment

DEFAULT_CHART = "astro-remote-execution-agent"
DEFAULT_CHART_REPO_URL = "https://helm.astronomer.io"
MIN_HELM = Version("3.8.0")  # the oldest helm 3 this provider supports (issue 6); tested with 3.19.0
MAX_HELM = Version("4.0.0")  # exclusive: helm 4 changes defaults (server-side apply) we have not tested
# A hung helm (e.g. an unreachable API server) must not hold the worker forever: helm's own
# --timeout covers hooks and waits, this margin covers everything else.
PROCESS_GRACE_SECONDS = 60
# Variables helm needs from the worker's environment; everything else (a KUBECONFIG pointing at
# another cluster, AWS credentials) is deliberately not inherited.
INHERITED_ENV = ("PATH", "TMPDIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_EKS_TOKEN = re.compile(r"k8s-aws-v1\.[A-Za-z0-9_-]+")
_CHART_AND_VERSION = re.compile(r"^(?P<name>.+?)-(?P<version>v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?)$")
REDACTED_TEXT = "***"


# --- errors ------------------------------------------------------------------------------------
class ReleaseNotFoundError(HelmError):
    """The release does not exist in the namespace."""


class ChartNotFoundError(HelmError):
    """The chart (local path, or name + version in the repository) cannot be found or fetched."""


class HelmTimeoutError(HelmError):
    """helm (or our wait for its workloads) ran out of time."""


class FailedReleaseError(HelmError):
    """helm could not install, upgrade, roll back or uninstall the release."""


class InvalidValuesError(FailedReleaseError):
    """The chart's values schema (or a template) rejected the values."""


class ReleasePendingError(FailedReleaseError):
    """Another helm operation on the release is in progress, or was killed mid-way."""


class ApiServerBusyError(FailedReleaseError):
    """The Kubernetes API server answered that it is unavailable or overloaded (503, 429): it passes."""


# What kube-apiserver answers (and client-go prints) when it is busy, not when the request is wrong:
# 503 and 429 from k8s.io/apimachinery/pkg/api/errors, and etcd's own transient refusals.
_BUSY_MARKERS = (
    "the server is currently unable to handle the request",
    "too many requests",
    "etcdserver: request timed out",
    "etcdserver: leader changed",
)


class ClusterUnreachableError(HelmError):
    """helm could not reach the Kubernetes API server."""


class HelmBinaryError(HelmError):
    """The helm binary is missing or is not a supported version."""


class RolloutFailedError(HelmError):
    """The release was applied but its workloads did not become ready; ``unready`` maps name to reason."""

    def __init__(self, message: str, unready: dict[str, str]) -> None:
        self.unready = unready
        super().__init__(message)


# --- results -----------------------------------------------------------------------------------
class ReleaseStatus(str, Enum):
    UNKNOWN = "unknown"
    DEPLOYED = "deployed"
    UNINSTALLED = "uninstalled"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    UNINSTALLING = "uninstalling"
    PENDING_INSTALL = "pending-install"
    PENDING_UPGRADE = "pending-upgrade"
    PENDING_ROLLBACK = "pending-rollback"

    @property
    def is_pending(self) -> bool:
        return self in (ReleaseStatus.PENDING_INSTALL, ReleaseStatus.PENDING_UPGRADE, ReleaseStatus.PENDING_ROLLBACK)

    @property
    def is_unfinished(self) -> bool:
        """Left by an operation that was killed mid-way (pending) or failed and was not undone."""
        return self.is_pending or self is ReleaseStatus.FAILED

    @property
    def was_deployed(self) -> bool:
        """A revision that ran successfully at some point: a safe target to roll back to."""
        return self in (ReleaseStatus.DEPLOYED, ReleaseStatus.SUPERSEDED)


@dataclass(frozen=True)
class ReleaseRevision:
    """One line of ``helm history``."""

    revision: int
    status: ReleaseStatus
    chart_name: str
    chart_version: str
    app_version: str
    description: str
    updated: str

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ReleaseRevision:
        name, version = split_chart(item.get("chart", ""))
        return cls(
            revision=int(item["revision"]),
            status=ReleaseStatus(item.get("status", "unknown")),
            chart_name=name,
            chart_version=version,
            app_version=item.get("app_version", ""),
            description=item.get("description", ""),
            updated=item.get("updated", ""),
        )


@dataclass(frozen=True)
class Workload:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Release:
    """The current revision of a release (``helm list`` / ``helm upgrade --output json``).

    Only the rendered workloads are kept from the manifest: it may hold chart-made Secrets.
    """

    name: str
    namespace: str
    revision: int
    status: ReleaseStatus
    chart_name: str
    chart_version: str
    app_version: str
    workloads: tuple[Workload, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        """From a whole release (``helm upgrade --output json``)."""
        metadata = (data.get("chart") or {}).get("metadata") or {}
        info = data.get("info") or {}
        namespace = data.get("namespace", "")
        return cls(
            name=data["name"],
            namespace=namespace,
            revision=int(data["version"]),
            status=ReleaseStatus(info.get("status", "unknown")),
            chart_name=metadata.get("name", ""),
            chart_version=metadata.get("version", ""),
            app_version=metadata.get("appVersion", ""),
            workloads=tuple(manifest_workloads(data.get("manifest", ""), namespace)),
        )

    @classmethod
    def from_list_entry(cls, entry: dict[str, Any]) -> Release:
        """From one line of ``helm list --output json`` (no manifest: ``workloads`` stays empty)."""
        name, version = split_chart(entry.get("chart", ""))
        return cls(
            name=entry["name"],
            namespace=entry.get("namespace", ""),
            revision=int(entry["revision"]),
            status=ReleaseStatus(entry.get("status", "unknown")),
            chart_name=name,
            chart_version=version,
            app_version=entry.get("app_version", ""),
        )

    def facts(self) -> dict[str, Any]:
        """Non-secret facts for an operator's XCom."""
        return {
            "release": self.name,
            "namespace": self.namespace,
            "revision": self.revision,
            "status": self.status.value,
            "chart": self.chart_name,
            "chart_version": self.chart_version,
        }


@dataclass(frozen=True)
class ChartRef:
    """A chart in a repository (``chart`` = name, pinned ``version``) or a local directory (``repo_url`` None)."""

    chart: str
    repo_url: str | None = DEFAULT_CHART_REPO_URL
    version: str | None = None

    def __post_init__(self) -> None:
        if self.repo_url and not self.version:
            raise ConfigError(
                [f"chart_version: empty for chart {self.chart!r} from {self.repo_url}; pin a chart version "
                 "(e.g. '2.3.3') so every run installs the same chart"],
                "helm",
            )

    @property
    def is_local(self) -> bool:
        return not self.repo_url

    @property
    def name(self) -> str:
        # "astronomer/astro-remote-execution-agent" is the repo-alias spelling; --repo wants the bare name.
        return self.chart.rsplit("/", 1)[-1]

    def describe(self) -> str:
        return self.chart if self.is_local else f"{self.name} {self.version} from {self.repo_url}"


def split_chart(text: str) -> tuple[str, str]:
    """``helm history``'s "chart" column, "<name>-<version>", as (name, version)."""
    match = _CHART_AND_VERSION.match(text)
    return (match["name"], match["version"]) if match else (text, "")


def manifest_workloads(manifest: str, default_namespace: str) -> list[Workload]:
    """The Deployments a rendered manifest creates; the ones a rollout wait watches."""
    workloads = []
    for doc in yaml.safe_load_all(manifest or ""):
        if isinstance(doc, dict) and doc.get("kind") == "Deployment":
            meta = doc.get("metadata") or {}
            workloads.append(Workload("Deployment", meta.get("namespace") or default_namespace, meta["name"]))
    return workloads


def last_good_revision(history: Iterable[ReleaseRevision], before: int | None = None) -> int | None:
    """The newest revision that once ran successfully (optionally older than ``before``)."""
    good = [r.revision for r in history if r.status.was_deployed and (before is None or r.revision < before)]
    return max(good, default=None)


# --- argv builders (pure) ----------------------------------------------------------------------
def _seconds(timeout: float) -> str:
    return f"{max(1, int(timeout))}s"


def chart_argv(chart: ChartRef) -> list[str]:
    """The chart arguments: a local path, or ``NAME --repo URL --version V`` (no `helm repo add` state)."""
    if chart.is_local:
        return [chart.chart]
    return [chart.name, "--repo", str(chart.repo_url), "--version", str(chart.version)]


def version_argv() -> list[str]:
    return ["version", "--template", "{{.Version}}"]


def list_argv(name: str, namespace: str) -> list[str]:
    # `helm status` leaves out the chart; `list` has it. --all includes pending and failed releases;
    # release names are DNS labels, so the anchored filter needs no escaping.
    return ["list", "--namespace", namespace, "--filter", f"^{name}$", "--all", "--output", "json"]


def history_argv(name: str, namespace: str) -> list[str]:
    return ["history", name, "--namespace", namespace, "--output", "json"]


def get_values_argv(name: str, namespace: str, revision: int | None = None, all_values: bool = False) -> list[str]:
    argv = ["get", "values", name, "--namespace", namespace, "--output", "json"]
    if revision is not None:
        argv += ["--revision", str(revision)]
    if all_values:
        argv.append("--all")
    return argv


def get_manifest_argv(name: str, namespace: str) -> list[str]:
    return ["get", "manifest", name, "--namespace", namespace]


def show_chart_argv(chart: ChartRef) -> list[str]:
    return ["show", "chart", *chart_argv(chart)]


def upgrade_install_argv(
    name: str, namespace: str, chart: ChartRef, timeout: float, wait: bool = False, atomic: bool = False
) -> list[str]:
    # --reset-values: the release holds exactly the values given, never a merge with the last ones.
    argv = ["upgrade", name, *chart_argv(chart), "--install", "--namespace", namespace,
            "--values", "-", "--reset-values", "--output", "json", "--timeout", _seconds(timeout)]
    if atomic:
        argv.append("--atomic")  # implies --wait
    elif wait:
        argv.append("--wait")
    return argv


def rollback_argv(name: str, namespace: str, revision: int, timeout: float, wait: bool = False) -> list[str]:
    argv = ["rollback", name, str(revision), "--namespace", namespace, "--timeout", _seconds(timeout)]
    if wait:
        argv.append("--wait")
    return argv


def uninstall_argv(name: str, namespace: str, timeout: float, wait: bool = False) -> list[str]:
    argv = ["uninstall", name, "--namespace", namespace, "--timeout", _seconds(timeout)]
    if wait:
        argv.append("--wait")
    return argv


def template_argv(name: str, namespace: str, chart: ChartRef) -> list[str]:
    return ["template", name, *chart_argv(chart), "--namespace", namespace, "--values", "-"]


# --- redaction and error mapping ---------------------------------------------------------------
def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets, bearer/EKS tokens and every ``mask_secret`` value replaced."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED_TEXT)
    text = _BEARER.sub(rf"\g<1>{REDACTED_TEXT}", text)
    text = _EKS_TOKEN.sub(REDACTED_TEXT, text)
    return str(redact(text))


def redact_data(data: Any, secrets: Iterable[str] = ()) -> Any:
    """JSON-like ``data`` with ``redact_text`` applied to every string (keys and structure kept)."""
    if isinstance(data, str):
        return redact_text(data, secrets)
    if isinstance(data, dict):
        return {key: redact_data(value, secrets) for key, value in data.items()}
    if isinstance(data, list):
        return [redact_data(item, secrets) for item in data]
    return data


def _strip(stderr: str) -> str:
    # helm prints "Error: ..." once from cobra and sometimes again; keep the message readable.
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    unique = list(dict.fromkeys(lines))
    return "\n".join(unique)


def helm_error(action: str, returncode: int, stderr: str) -> HelmError:
    """The typed error for helm's (already redacted) stderr; ``action`` says what we were doing."""
    detail = _strip(stderr)
    low = detail.lower()
    if "release: not found" in low:
        return ReleaseNotFoundError(f"{action}: release not found; install it first", returncode, detail)
    if "another operation (install/upgrade/rollback) is in progress" in low:
        return ReleasePendingError(
            f"{action}: another helm operation on the release is in progress or was killed mid-way; "
            f"HelmUpgradeInstallOperator recovers a stuck release, or run `helm rollback`\n{detail}",
            returncode, detail,
        )
    if "values don't meet the specifications of the schema" in low or "execution error at" in low:
        return InvalidValuesError(
            f"{action}: the chart rejected the values; fix the environment spec field they come from\n{detail}",
            returncode, detail,
        )
    # Before the cluster check: an unreachable chart repository also says "no such host".
    repository = "not a valid chart repository" in low or "failed to fetch" in low
    if repository or ("not found" in low and any(word in low for word in ("chart", "path", "repo"))):
        return ChartNotFoundError(
            f"{action}: chart not found; check chart, chart_repo_url and chart_version (the version must exist "
            f"in the repository's index.yaml), that the repository is reachable from the worker, or that the "
            f"local chart path exists\n{detail}",
            returncode, detail,
        )
    if "kubernetes cluster unreachable" in low or "connection refused" in low or "no such host" in low:
        return ClusterUnreachableError(
            f"{action}: helm could not reach the Kubernetes API server; check the Kubernetes connection "
            f"(or the EKS cluster endpoint and aws_conn_id)\n{detail}",
            returncode, detail,
        )
    if "timed out waiting for the condition" in low or "context deadline exceeded" in low:
        return HelmTimeoutError(
            f"{action}: timed out; raise timeout or check the workloads\n{detail}", returncode, detail
        )
    if any(marker in low for marker in _BUSY_MARKERS):
        return ApiServerBusyError(
            f"{action} failed: the Kubernetes API server answered that it is unavailable or overloaded, which "
            f"passes: a re-run recovers\n{detail}",
            returncode, detail,
        )
    if "has no" in low and "version" in low:
        return FailedReleaseError(f"{action}: no such revision; see `helm history`\n{detail}", returncode, detail)
    return FailedReleaseError(f"{action} failed (helm exit code {returncode})\n{detail}", returncode, detail)


# --- the binary --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def checked_helm_binary(helm_binary: str | None = None) -> str:
    """Absolute path of a helm 3 (>= 3.8, < 4) binary: ``helm_binary`` or the first ``helm`` on PATH."""
    path = shutil.which(helm_binary or "helm")
    if path is None:
        raise HelmBinaryError(
            f"helm binary {helm_binary or 'helm'!r} not found; install helm 3 (>= {MIN_HELM}, < {MAX_HELM}) "
            "on PATH or pass helm_binary"
        )
    result = subprocess.run(
        [path, *version_argv()], capture_output=True, text=True, timeout=30, check=False,
        env={name: os.environ[name] for name in INHERITED_ENV if name in os.environ},
    )
    text = result.stdout.strip()
    try:
        version = Version(text.lstrip("v"))
    except InvalidVersion:
        raise HelmBinaryError(f"{path} did not report a helm version (got {text!r}); is it helm?") from None
    if not MIN_HELM <= version < MAX_HELM:
        raise HelmBinaryError(
            f"{path} is helm {text}; remote-agents needs helm >= {MIN_HELM} and < {MAX_HELM} "
            "(helm 4 changes apply semantics); install a helm 3 release or pass helm_binary"
        )
    return path


class HelmHook(BaseHook):
    """Runs helm against one cluster (``ClusterAccess``: a Kubernetes connection or an EKS cluster).

    ``secrets``: strings to redact from helm's output in errors, on top of every value registered
    with ``mask_secret`` and anything shaped like a bearer token.
    """

    hook_name = "Helm"

    def __init__(self, access: ClusterAccess, helm_binary: str | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.access = access
        self.helm_binary = helm_binary
        self.secrets = tuple(secrets)
        for secret in self.secrets:
            mask_secret(secret)

    # --- reads ---
    def get_release(self, name: str, namespace: str) -> Release | None:
        """The release's current revision, or None when it is not installed."""
        entries = json.loads(self._run(list_argv(name, namespace), f"helm list {name}") or "[]")
        return next((Release.from_list_entry(e) for e in entries if e.get("name") == name), None)

    def history(self, name: str, namespace: str) -> list[ReleaseRevision]:
        out = self._run(history_argv(name, namespace), f"helm history {name}")
        return [ReleaseRevision.from_json(item) for item in json.loads(out or "[]")]

    def get_values(
        self, name: str, namespace: str, revision: int | None = None, all: bool = False  # noqa: A002 (helm's flag)
    ) -> dict[str, Any]:
        """User-supplied values of the release (or of ``revision``); with ``all``, merged with the chart's."""
        out = self._run(get_values_argv(name, namespace, revision, all), f"helm get values {name}")
        return json.loads(out or "null") or {}

    def get_manifest(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """The objects the release's current revision applied, as rendered (chart-made Secrets included)."""
        out = self._run(get_manifest_argv(name, namespace), f"helm get manifest {name}")
        return [doc for doc in yaml.safe_load_all(out or "") if isinstance(doc, dict) and doc.get("kind")]

    def chart_metadata(self, chart: ChartRef) -> tuple[str, str]:
        """(name, version) the chart would install; offline for a repo chart (its pinned name and version)."""
        if not chart.is_local:
            return chart.name, str(chart.version)
        self._check_local(chart)
        metadata = yaml.safe_load(self._run(show_chart_argv(chart), f"helm show chart {chart.chart}", cluster=False))
        return metadata["name"], str(metadata["version"])

    def template(self, name: str, namespace: str, chart: ChartRef, values: dict[str, Any]) -> list[dict[str, Any]]:
        """The objects the chart renders from ``values`` (offline; validates them against the chart's schema)."""
        self._check_local(chart)
        out = self._run(template_argv(name, namespace, chart), f"helm template {name}", stdin=json.dumps(values),
                        cluster=False)
        return [doc for doc in yaml.safe_load_all(out) if isinstance(doc, dict)]

    # --- writes ---
    def upgrade_install(
        self, name: str, namespace: str, chart: ChartRef, values: dict[str, Any], timeout: float = 300,
        wait: bool = False, atomic: bool = False,
    ) -> Release:
        self._check_local(chart)
        argv = upgrade_install_argv(name, namespace, chart, timeout, wait=wait, atomic=atomic)
        out = self._run(argv, f"helm upgrade --install {name} ({chart.describe()})", stdin=json.dumps(values),
                        timeout=timeout)
        return Release.from_json(json.loads(out))

    def rollback(self, name: str, namespace: str, revision: int, timeout: float = 300, wait: bool = False) -> Release:
        self._run(rollback_argv(name, namespace, revision, timeout, wait), f"helm rollback {name} to {revision}",
                  timeout=timeout)
        release = self.get_release(name, namespace)
        if release is None:
            raise ReleaseNotFoundError(f"helm rollback {name}: the release disappeared during the rollback")
        return release

    def uninstall(self, name: str, namespace: str, timeout: float = 300, wait: bool = False) -> None:
        self._run(uninstall_argv(name, namespace, timeout, wait), f"helm uninstall {name}", timeout=timeout)

    # --- plumbing ---
    def _check_local(self, chart: ChartRef) -> None:
        if chart.is_local and not (Path(chart.chart) / "Chart.yaml").is_file():
            raise ChartNotFoundError(
                f"local chart {chart.chart!r} has no Chart.yaml (working directory {os.getcwd()}); give an "
                "absolute chart path, or chart_repo_url for a chart from a repository"
            )

    def _run(self, argv: list[str], action: str, stdin: str | None = None, timeout: float = 120,
             cluster: bool = True) -> str:
        binary = checked_helm_binary(self.helm_binary)
        base = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        if cluster:
            with helm_environment(self.access) as helm_env:
                # HOME inside the private helm home: helm must not find the worker user's ~/.kube/config.
                env = {**base, **helm_env, "HOME": os.path.dirname(helm_env["HELM_CONFIG_HOME"])}
                return self._execute([binary, *argv], action, env, stdin, timeout)
        with helm_environment_offline() as helm_env:
            return self._execute([binary, *argv], action, {**base, **helm_env}, stdin, timeout)

    def _execute(self, argv: list[str], action: str, env: dict[str, str], stdin: str | None, timeout: float) -> str:
        self.log.debug("Running %s", action)
        try:
            # subprocess.run kills helm if the task is interrupted (it kills the child on any exception).
            result = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                                    timeout=timeout + PROCESS_GRACE_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            raise HelmTimeoutError(
                f"{action}: helm did not finish within {timeout + PROCESS_GRACE_SECONDS:.0f}s and was killed; "
                "check that the Kubernetes API server is reachable"
            ) from None
        if result.returncode != 0:
            stderr = redact_text(result.stderr, [*self.secrets, env.get("HELM_KUBETOKEN", "")])
            raise helm_error(action, result.returncode, stderr)
        return result.stdout


@contextlib.contextmanager
def helm_environment_offline() -> Iterator[dict[str, str]]:
    """A private helm home for commands that never touch a cluster (show chart, template)."""
    with tempfile.TemporaryDirectory(prefix="remote-agents-helm-") as home:
        yield {"HOME": home, "HELM_CACHE_HOME": f"{home}/cache", "HELM_CONFIG_HOME": f"{home}/config",
               "HELM_DATA_HOME": f"{home}/data"}
