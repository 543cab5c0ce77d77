"""The run report: structured from the tasks' results and states, rendered with the failure first. No I/O."""

from __future__ import annotations

from typing import Any

from remote_agents.summary import build_report, render_report

RESULTS: dict[str, Any] = {
    "ensure_namespace": [{"changes": [{"resource": "k8s:Namespace/agents", "action": "created", "diff": {}}]}],
    "ensure_irsa_role": [{"changes": [{"resource": "iam:role/r", "action": "updated", "diff": {"trust": {}}}],
                          "role_arn": "arn:aws:iam::1:role/r"}],
}


def report(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "kind": "bootstrap", "environment": "prod", "dry_run": False, "results": RESULTS,
        "states": {"ensure_namespace": "success", "ensure_irsa_role": "success"}, "failures": {},
        "facts": {"release": "astro-agent", "revision": None}, "next_step": "the health Dag runs next.",
    }
    return build_report(**{**arguments, **overrides})


def test_an_applied_run_lists_every_resource_and_its_facts() -> None:
    applied = report()

    assert (applied["outcome"], applied["tags"], applied["counts"]) == ("applied", [], {"created": 1, "updated": 1})
    assert applied["resources"][1] == {"task_id": "ensure_irsa_role", "resource": "iam:role/r", "action": "updated",
                                       "changed": ["trust"]}
    assert applied["facts"] == {"release": "astro-agent"}  # None facts are left out
    assert render_report(applied).endswith("**Next:** the health Dag runs next.\n")


def test_a_failed_run_leads_with_the_failure_lists_what_did_not_run_and_says_to_rerun() -> None:
    failed = report(states={"ensure_namespace": "success", "ensure_irsa_role": "failed", "helm_upgrade_install": "upstream_failed",
                            "announce": "skipped"},
                    failures={"ensure_irsa_role": "AwsError: AccessDenied on iam:CreateRole"})
    text = render_report(failed)

    assert failed["outcome"] == "failed" and failed["not_attempted"] == ["helm_upgrade_install"]
    assert text.splitlines()[:5] == ["# Bootstrap of environment `prod` FAILED", "", "**Failed:**", "",
                                     "- `ensure_irsa_role`: AwsError: AccessDenied on iam:CreateRole"]
    assert "**Not attempted** (a task before them failed): `helm_upgrade_install`" in text
    assert "**Done before the failure: 1 created, 1 updated**" in text
    assert "health Dag" not in text and "trigger `remote_agents_bootstrap__prod` again" in failed["next_step"]


def test_a_dry_run_is_tagged_and_says_nothing_was_changed() -> None:
    planned = report(dry_run=True, kind="teardown", next_step="trigger again with dry run off.")

    assert (planned["outcome"], planned["tags"]) == ("planned", ["dry_run"])
    assert render_report(planned).startswith("# Teardown plan (dry run: nothing was changed) of environment `prod`\n")
