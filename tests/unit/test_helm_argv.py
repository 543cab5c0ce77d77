"""HelmHook's pure parts: argv builders, helm output parsing, error mapping and redaction. No helm binary."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.log import mask_secret
from remote_agents.errors import ConfigError
from remote_agents.hooks.helm import (
    ChartNotFoundError,
    ChartRef,
    ClusterUnreachableError,
    FailedReleaseError,
    HelmBinaryError,
    InvalidValuesError,
    ReleaseNotFoundError,
    ReleasePendingError,
    ReleaseRevision,
    ReleaseStatus,
    chart_argv,
    checked_helm_binary,
    get_values_argv,
    helm_error,
    history_argv,
    last_good_revision,
    list_argv,
    manifest_workloads,
    redact_text,
    rollback_argv,
    split_chart,
    template_argv,
    uninstall_argv,
    upgrade_install_argv,
)

REPO_CHART = ChartRef("astronomer/astro-remote-execution-agent", "https://helm.astronomer.io", "2.3.3")
LOCAL_CHART = ChartRef("/charts/agent", None)


def test_repo_chart_is_fetched_by_name_repo_and_pinned_version() -> None:
    assert chart_argv(REPO_CHART) == [
        "astro-remote-execution-agent", "--repo", "https://helm.astronomer.io", "--version", "2.3.3"
    ]


def test_local_chart_is_its_path() -> None:
    assert chart_argv(LOCAL_CHART) == ["/charts/agent"]


def test_repo_chart_without_version_is_refused() -> None:
    with pytest.raises(ConfigError, match="pin a chart version"):
        ChartRef("astro-remote-execution-agent", "https://helm.astronomer.io", None)


def test_upgrade_install_reads_values_from_stdin_and_resets_old_values() -> None:
    argv = upgrade_install_argv("astro-agent", "agents", LOCAL_CHART, timeout=300)
    assert argv == [
        "upgrade", "astro-agent", "/charts/agent", "--install", "--namespace", "agents",
        "--values", "-", "--reset-values", "--output", "json", "--timeout", "300s",
    ]


def test_upgrade_install_waits_only_when_asked() -> None:
    assert "--wait" in upgrade_install_argv("r", "ns", LOCAL_CHART, 60, wait=True)
    assert "--atomic" in upgrade_install_argv("r", "ns", LOCAL_CHART, 60, atomic=True)
    assert not {"--wait", "--atomic"} & set(upgrade_install_argv("r", "ns", LOCAL_CHART, 60))


@pytest.mark.parametrize("argv", [
    upgrade_install_argv("r", "ns", REPO_CHART, 60),
    template_argv("r", "ns", REPO_CHART),
    rollback_argv("r", "ns", 2, 60),
    uninstall_argv("r", "ns", 60),
])
def test_no_argv_carries_a_credential_flag(argv: list[str]) -> None:
    assert not [arg for arg in argv if arg.startswith(("--kube-token", "--password", "--set"))]


def test_timeout_is_whole_seconds_and_at_least_one() -> None:
    assert rollback_argv("r", "ns", 3, 0.2) == ["rollback", "r", "3", "--namespace", "ns", "--timeout", "1s"]


def test_read_commands_ask_for_json() -> None:
    assert list_argv("r", "ns") == ["list", "--namespace", "ns", "--filter", "^r$", "--all", "--output", "json"]
    assert history_argv("r", "ns") == ["history", "r", "--namespace", "ns", "--output", "json"]


def test_get_values_of_a_revision_with_chart_defaults() -> None:
    assert get_values_argv("r", "ns", revision=2, all_values=True) == [
        "get", "values", "r", "--namespace", "ns", "--output", "json", "--revision", "2", "--all"
    ]


def test_template_renders_values_from_stdin() -> None:
    assert template_argv("r", "ns", LOCAL_CHART) == [
        "template", "r", "/charts/agent", "--namespace", "ns", "--values", "-"
    ]


@pytest.mark.parametrize("text, expected", [
    ("astro-remote-execution-agent-2.3.3", ("astro-remote-execution-agent", "2.3.3")),
    ("my-chart-2-1.0.0-rc.1", ("my-chart-2", "1.0.0-rc.1")),
    ("weird", ("weird", "")),
])
def test_history_chart_column_splits_into_name_and_version(text: str, expected: tuple[str, str]) -> None:
    assert split_chart(text) == expected


def test_last_good_revision_skips_pending_and_failed_revisions() -> None:
    def revision(number: int, status: str) -> ReleaseRevision:
        return ReleaseRevision(number, ReleaseStatus(status), "c", "1.0.0", "", "", "")

    history = [revision(1, "superseded"), revision(2, "failed"), revision(3, "deployed"),
               revision(4, "pending-upgrade")]
    assert last_good_revision(history) == 3
    assert last_good_revision(history, before=3) == 1
    assert last_good_revision([revision(1, "pending-install")]) is None


def test_manifest_workloads_are_the_deployments() -> None:
    manifest = (
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: agents}\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\n"
    )
    workloads = manifest_workloads(manifest, "default")
    assert [(w.namespace, w.name) for w in workloads] == [("agents", "web"), ("default", "api")]


@pytest.mark.parametrize("stderr, error", [
    ("Error: release: not found", ReleaseNotFoundError),
    ("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress", ReleasePendingError),
    ('Error: Kubernetes cluster unreachable: Get "https://x/version": dial tcp: connection refused',
     ClusterUnreachableError),
    ("Error: values don't meet the specifications of the schema(s) in the following chart(s):", InvalidValuesError),
    ('Error: chart "astro-remote-execution-agent" version "9.9.9" not found in https://helm.astronomer.io repository',
     ChartNotFoundError),
    ("Error: release has no 9 version", FailedReleaseError),
    ('Error: looks like "https://helm.astronomer.io" is not a valid chart repository or cannot be reached: Get '
     '"https://helm.astronomer.io/index.yaml": dial tcp: lookup helm.astronomer.io: no such host', ChartNotFoundError),
])
def test_stderr_maps_to_a_typed_error(stderr: str, error: type[Exception]) -> None:
    assert type(helm_error("helm x", 1, stderr)) is error


def test_error_message_names_the_action_and_quotes_stderr_once() -> None:
    error = helm_error("helm upgrade --install r", 1, "Error: boom\nError: boom\n")
    assert str(error).startswith("helm upgrade --install r failed (helm exit code 1)")
    assert str(error).count("Error: boom") == 1
    assert error.stderr == "Error: boom"


def test_redaction_removes_given_masked_and_bearer_secrets() -> None:
    mask_secret("registered-secret-value-42")
    text = ("token given-secret-value; Authorization: Bearer abc.DEF-123; registered-secret-value-42; "
            "k8s-aws-v1.aHR0cHM6Ly9zdHM")
    redacted = redact_text(text, ["given-secret-value"])
    for secret in ("given-secret-value", "abc.DEF-123", "registered-secret-value-42", "k8s-aws-v1.aHR0"):
        assert secret not in redacted
    assert "Bearer ***" in redacted


def fake_helm(tmp_path: Path, version: str) -> str:
    script = tmp_path / "helm"
    script.write_text(f"#!/bin/sh\necho {version}\n")
    script.chmod(0o755)
    return str(script)


def test_helm_4_is_refused_with_the_supported_range(tmp_path: Path) -> None:
    with pytest.raises(HelmBinaryError, match=r"helm v4.1.3; remote-agents needs helm >= 3.8.0 and < 4.0.0"):
        checked_helm_binary(fake_helm(tmp_path, "v4.1.3"))


def test_missing_helm_binary_names_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(HelmBinaryError, match="not found; install helm 3"):
        checked_helm_binary(str(tmp_path / "no-such-helm"))
