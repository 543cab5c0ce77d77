"""The `remote-agents` command (cli.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from remote_agents.cli import PLACEHOLDER_ACCOUNT_ID, PLACEHOLDER_API_URL, PLACEHOLDER_NAMESPACE, main
from remote_agents.render.manifests import build_manifests
from remote_agents.render.policies import build_role_arns
from remote_agents.render.values import build_values
from remote_agents.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "include" / "environments").glob("*.yaml"))
CONSOLE_SCRIPT = ROOT / ".venv" / "bin" / "remote-agents"


@pytest.fixture
def bad_spec(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "include" / "environments" / "tutorial.yaml").read_text())
    data["workers"][0]["replicas"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("spec_file", SPEC_FILES, ids=lambda p: p.stem)
def test_validate_accepts_each_example_spec(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK ") and out.count("\n") == 1


def test_validate_names_the_bad_field_and_exits_2(bad_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(bad_spec)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "workers[0].replicas" in captured.err


def test_missing_spec_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("spec_file", SPEC_FILES, ids=lambda p: p.stem)
def test_render_values_prints_yaml_equal_to_build_values(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(spec_file), "--only", "values"]) == 0
    spec = load_spec(spec_file)
    role_arns = build_role_arns(spec, PLACEHOLDER_ACCOUNT_ID) if spec.irsa else None
    assert yaml.safe_load(capsys.readouterr().out) == build_values(spec, role_arns, PLACEHOLDER_API_URL, PLACEHOLDER_NAMESPACE)


def test_render_values_without_a_spec_url_says_it_is_a_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    sandbox_spec = next(path for path in SPEC_FILES if path.stem == "sandbox")
    assert main(["render", str(sandbox_spec), "--only", "values"]) == 0
    out = capsys.readouterr().out
    assert f"astroDeploymentAPIURL {PLACEHOLDER_API_URL} is a placeholder" in out
    url = "https://clreal.external.astronomer.run/d1real"
    assert main(["render", str(sandbox_spec), "--only", "values", "--deployment-api-url", url]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["astroDeploymentAPIURL"] == url


def test_render_says_when_the_account_is_a_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    main(["render", str(SPEC_FILES[0]), "--only", "policies"])
    out = capsys.readouterr().out
    assert out.startswith("# ") and PLACEHOLDER_ACCOUNT_ID in out.splitlines()[0]


def test_render_uses_the_given_account_and_issuer(capsys: pytest.CaptureFixture[str]) -> None:
    issuer = "https://oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF"
    tutorial = ROOT / "include" / "environments" / "tutorial.yaml"
    main(["render", str(tutorial), "--only", "policies", "--format", "json", "--account-id", "210987654321", "--oidc-issuer", issuer])
    captured = capsys.readouterr()
    role = json.loads(captured.out)["irsa_roles"]["all"]
    assert role["trust_policy"]["Statement"][0]["Principal"]["Federated"] == (
        "arn:aws:iam::210987654321:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF"
    )
    assert "placeholder" not in captured.out


def test_render_manifests_prints_a_multi_document_stream(capsys: pytest.CaptureFixture[str]) -> None:
    tutorial = ROOT / "include" / "environments" / "tutorial.yaml"
    main(["render", str(tutorial), "--only", "manifests"])
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    constraints = (ROOT / "include" / "agent-constraints.txt").read_text()
    assert documents == build_manifests(load_spec(tutorial), constraints)


@pytest.mark.parametrize("spec_file", SPEC_FILES, ids=lambda p: p.stem)
def test_render_everything_as_json_has_every_section(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(spec_file), "--format", "json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["values", "manifests", "policies", "cluster"]


def test_console_script_validates_a_spec() -> None:
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "validate", str(ROOT / "include" / "environments" / "tutorial.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("OK ")
