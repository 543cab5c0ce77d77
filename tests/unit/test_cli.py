"""The `remote-agents` command (cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from remote_agents.cli import (
    DEFAULT_SCHEMA,
    PLACEHOLDER_ACCOUNT_ID,
    PLACEHOLDER_API_URL,
    PLACEHOLDER_NAMESPACE,
    main,
    render,
    summarize,
)
from remote_agents.render.manifests import build_manifests
from remote_agents.render.policies import build_role_arns
from remote_agents.render.values import build_values
from remote_agents.spec import load_spec
from remote_agents.values_schema import load_values_schema, values_schema_problems

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted((ROOT / "include" / "environments").glob("*.yaml"))
CONSOLE_SCRIPT = ROOT / ".venv" / "bin" / "remote-agents"


TUTORIAL = ROOT / "include" / "environments" / "tutorial.yaml"


def tutorial_with(tmp_path: Path, name: str, **worker: object) -> Path:
    """The tutorial spec with its first worker changed, written to ``tmp_path / name``."""
    data = yaml.safe_load(TUTORIAL.read_text())
    data["workers"][0].update(worker)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def bad_spec(tmp_path: Path) -> Path:
    return tutorial_with(tmp_path, "bad.yaml", replicas=0)


@pytest.fixture
def long_queue_spec(tmp_path: Path) -> Path:
    """Valid as a spec (queue names up to 63 characters, as the chart's schema) but not under ``strict_schema``."""
    return tutorial_with(tmp_path, "long-queue.yaml", queue="q" * 20)


@pytest.fixture
def strict_schema(tmp_path: Path) -> Path:
    """The chart's values schema, with queue names limited to 10 characters: a chart version stricter than the spec."""
    schema = json.loads((ROOT / "include" / "schemas" / "agent-values.schema.json").read_text())
    schema_text = json.dumps(schema).replace('"maxLength": 63, "description": "Exactly one queue',
                                             '"maxLength": 10, "description": "Exactly one queue')
    assert schema_text != json.dumps(schema)
    path = tmp_path / "strict.schema.json"
    path.write_text(schema_text)
    return path


@pytest.mark.parametrize("spec_file", SPEC_FILES, ids=lambda p: p.stem)
def test_validate_accepts_each_example_spec(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK ") and out.count("\n") == 1


def test_validate_names_the_bad_field_and_exits_1(bad_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(bad_spec)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "workers[0].replicas" in captured.err


def test_missing_spec_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(tmp_path / "nope.yaml")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_validate_reports_every_file_and_exits_1_when_one_is_invalid(
    bad_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(TUTORIAL), str(bad_spec), str(SPEC_FILES[0])]) == 1
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [f"OK {TUTORIAL}", f"OK {SPEC_FILES[0]}"]
    assert captured.err.startswith(f"{bad_spec}: 1 problem") and "workers[0].replicas" in captured.err


def test_validate_refuses_values_the_chart_schema_refuses(
    long_queue_spec: Path, strict_schema: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_spec(long_queue_spec)  # a valid spec: only the schema check can refuse it

    assert main(["validate", str(long_queue_spec), "--schema", str(strict_schema)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{long_queue_spec}: 1 problem")
    assert "values.workers[0].queues: " in captured.err and "is too long" in captured.err


def test_validate_output_json_lists_each_file_with_its_summary_or_problems(
    bad_spec: Path, long_queue_spec: Path, strict_schema: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(TUTORIAL), str(bad_spec), str(long_queue_spec), "--output", "json",
                 "--schema", str(strict_schema)]) == 1
    captured = capsys.readouterr()
    good, bad, long_queue = json.loads(captured.out)
    assert good == {"file": str(TUTORIAL), "valid": True, "summary": summarize(load_spec(TUTORIAL))}
    assert (bad["file"], bad["valid"], list(bad)) == (str(bad_spec), False, ["file", "valid", "problems"])
    assert [p.split(":")[0] for p in bad["problems"]] == ["workers[0].replicas"]
    assert [p.split(":")[0] for p in long_queue["problems"]] == ["values.workers[0].queues"]
    assert captured.err == ""


def test_validate_with_every_example_spec_at_once_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, SPEC_FILES), "--output", "json"]) == 0
    assert [entry["valid"] for entry in json.loads(capsys.readouterr().out)] == [True] * len(SPEC_FILES)


def test_values_schema_problems_name_the_values_path_of_each_error() -> None:
    schema = load_values_schema(DEFAULT_SCHEMA)
    values = render(load_spec(TUTORIAL), "values", PLACEHOLDER_ACCOUNT_ID, "https://oidc.example/id/X", None)
    assert values_schema_problems(values, schema) == []
    values["resourceNamePrefix"] = "Not_A_Label"
    del values["namespace"]
    problems = values_schema_problems(values, schema)
    assert [p.split(":")[0] for p in problems] == ["values", "values.resourceNamePrefix"]
    assert "'namespace' is a required property" in problems[0]


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


def test_render_output_json_is_the_format_json_it_replaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(TUTORIAL), "--output", "json"]) == 0
    spelled_output = capsys.readouterr().out
    assert main(["render", str(TUTORIAL), "--format", "json"]) == 0
    assert json.loads(spelled_output) == json.loads(capsys.readouterr().out)


def test_render_output_json_of_an_invalid_spec_exits_1(bad_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(bad_spec), "--output", "json"]) == 1
    assert "workers[0].replicas" in capsys.readouterr().err


def test_version_prints_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"remote-agents {version('airflow-provider-remote-agents')}\n"


@pytest.mark.parametrize("argv", [[], ["validate"], ["render", str(TUTORIAL), "--output", "xml"], ["plan"], ["deploy", "x"]],
                         ids=["no command", "no spec", "bad choice", "plan without spec", "unknown command"])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage: remote-agents" in capsys.readouterr().err


def test_plan_of_an_invalid_spec_exits_1_before_importing_airflow(bad_spec: Path) -> None:
    result = run_without_airflow("plan", str(bad_spec))
    assert result.returncode == 1, result.stderr
    assert "workers[0].replicas" in result.stderr


def test_plan_without_a_bootstrap_dag_file_in_the_dags_folder_exits_1(tmp_path: Path) -> None:
    result = run_without_airflow("plan", str(TUTORIAL), "--dags-folder", str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert f"{tmp_path}: no remote_agents_bootstrap.py" in result.stderr


def test_plan_refuses_a_spec_whose_folder_gives_its_name_to_two_files(tmp_path: Path) -> None:
    """The bootstrap Dag of that folder is the invalid-spec Dag: there is nothing to plan (no network: a
    throw-away Airflow parses the Dag files and stops)."""
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(TUTORIAL.read_text())
    result = subprocess.run([str(CONSOLE_SCRIPT), "plan", str(tmp_path / "a.yaml")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert "'tutorial' is the name of 2 spec files (a.yaml, b.yaml)" in result.stderr


def test_validate_and_render_do_not_import_airflow() -> None:
    for argv in (["validate", str(TUTORIAL)], ["render", str(TUTORIAL), "--output", "json"]):
        result = run_without_airflow(*argv)
        assert result.returncode == 0, result.stderr


def run_without_airflow(*argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, which fails if the command imported Airflow."""
    check = (
        "import sys; from remote_agents.cli import main; code = main(sys.argv[1:]); "
        "assert 'airflow' not in sys.modules, 'Airflow was imported'; raise SystemExit(code)"
    )
    return subprocess.run([sys.executable, "-c", check, *argv], capture_output=True, text=True, timeout=60, check=False)


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


def test_console_script_completes_commands_through_argcomplete(tmp_path: Path) -> None:
    """What bash's completion hook asks (the protocol of argcomplete's register-python-argcomplete)."""
    line = "remote-agents val"
    answer = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
    result = subprocess.run([str(CONSOLE_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert answer.read_text().split() == ["validate"]


def test_console_script_prints_its_version() -> None:
    result = subprocess.run([str(CONSOLE_SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout) == (0, f"remote-agents {version('airflow-provider-remote-agents')}\n")


def test_status_without_a_url_or_credentials_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("AIRFLOW_API_URL", "AIRFLOW_API_TOKEN", "AIRFLOW_API_USERNAME", "AIRFLOW_API_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as no_url:
        main(["status", "--token", "t0ken"])
    with pytest.raises(SystemExit) as no_token:
        main(["status", "--url", "http://127.0.0.1:9"])

    assert no_url.value.code == 2 and no_token.value.code == 2
    err = capsys.readouterr().err
    assert "AIRFLOW_API_URL" in err and "AIRFLOW_API_TOKEN" in err and "t0ken" not in err


def test_status_of_a_folder_without_specs_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--spec-folder", str(tmp_path), "--url", "http://127.0.0.1:9", "--token", "t0ken"]) == 1
    assert "no environment specs" in capsys.readouterr().err
