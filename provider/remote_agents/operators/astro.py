"""Operators that put Astro tokens straight into Kubernetes Secrets (reference 2, 3.1, 3.6, 5.1).

- ``EnsureAgentTokenOperator``: an agent token (runtime auth of the agents) in the Secret
  ``agentTokenSecretName`` names, under key ``token``.
- ``EnsureRegistrySecretOperator``: a Deployment API token (DEPLOYMENT_ADMIN) in the image pull
  Secret ``imagePullSecretName`` names, for ``images.astronomer.cloud`` with user ``cli``.
- ``RevokeAgentTokenOperator`` / ``RevokeRegistryTokenOperator``: teardown.
- ``UpdateRemoteExecutionSettingsOperator``: allowed IP ranges and task log bucket of the Deployment.

A token's value exists only in the create answer: it is masked at once and written to the Secret
in the same task, never returned, logged or templated. The Secret carries the token's *id* in an
annotation, which is how a re-run knows the token is still live (then it writes nothing). After a
rotation it also carries the replaced token's id, so a run killed before it revoked that token is
finished by the next run (after the same rollout wait) or by teardown.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from airflow.sdk import BaseOperator

from remote_agents.changes import Action, Change, diff_values
from remote_agents.errors import AstroUncertainCreateError, ClusterError, ConfigError
from remote_agents.hooks.astro import AstroHook
from remote_agents.hooks.kubernetes import ClusterObjects, object_ref
from remote_agents.naming import environment_ownership_labels
from remote_agents.operators.base import (
    CLUSTER_TEMPLATE_FIELDS,
    DEFAULT_DEFERRABLE,
    ClusterOperator,
    as_bool,
    defer_or_wait,
    report_changes,
)
from remote_agents.operators.kubernetes import (
    DEFAULT_REGISTRY,
    converge_object,
    is_owned,
    require_owned,
    restart_deployments,
    restart_targets,
    secret_manifest,
    secret_values,
)
from remote_agents.render.manifests import AGENT_TOKEN_KEY, DOCKERCONFIGJSON_KEY

TOKEN_ID_ANNOTATION = "remote-agents.astronomer.io/astro-token-id"
# The token a rotation replaced, kept until it is revoked: a run killed while it waited for the agents to
# roll out leaves the id here, not only in its trigger's payload, so the next run or teardown revokes it.
REPLACED_TOKEN_ID_ANNOTATION = "remote-agents.astronomer.io/astro-replaced-token-id"


class _Tokens:
    """One kind of Astro token, as the operators need it: is it live, create, revoke."""

    def __init__(self, astro: AstroHook, deployment_id: str) -> None:
        self.astro = astro
        self.deployment_id = deployment_id

    def resource(self, token_id: str) -> str:
        raise NotImplementedError

    def fetch(self, token_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def create(self, name: str, description: str, expiry_days: int) -> dict[str, Any]:
        raise NotImplementedError

    def revoke(self, token_id: str) -> bool:
        raise NotImplementedError

    def listed(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def is_live(self, token_id: str) -> bool:
        token = self.fetch(token_id)
        return token is not None and _unexpired(token)

    def live_named(self, name: str) -> list[str]:
        """Ids of the live tokens called ``name``: how a token is found whose id no Secret holds."""
        return sorted(str(t["id"]) for t in self.listed() if t.get("name") == name and _unexpired(t))


def _unexpired(token: dict[str, Any]) -> bool:
    end = token.get("endAt")
    return not end or datetime.fromisoformat(end.replace("Z", "+00:00")) > datetime.now(UTC)


class _AgentTokens(_Tokens):
    def resource(self, token_id: str) -> str:
        return f"astro:agent-token/{self.deployment_id}/{token_id}"

    def fetch(self, token_id: str) -> dict[str, Any] | None:
        return self.astro.get_agent_token(self.deployment_id, token_id)

    def create(self, name: str, description: str, expiry_days: int) -> dict[str, Any]:
        return self.astro.create_agent_token(self.deployment_id, name=name, description=description,
                                             expiry_days=expiry_days)

    def revoke(self, token_id: str) -> bool:
        return self.astro.delete_agent_token(self.deployment_id, token_id)

    def listed(self) -> list[dict[str, Any]]:
        return self.astro.list_agent_tokens(self.deployment_id)


class _DeploymentApiTokens(_Tokens):
    def resource(self, token_id: str) -> str:
        return f"astro:api-token/{token_id}"

    def fetch(self, token_id: str) -> dict[str, Any] | None:
        return self.astro.get_api_token(token_id)

    def create(self, name: str, description: str, expiry_days: int) -> dict[str, Any]:
        return self.astro.create_deployment_token(self.deployment_id, name=name, description=description,
                                                  expiry_days=expiry_days)

    def revoke(self, token_id: str) -> bool:
        return self.astro.delete_api_token(token_id)

    def listed(self) -> list[dict[str, Any]]:
        return self.astro.list_deployment_tokens(self.deployment_id)


class _AstroTokenOperator(ClusterOperator):
    """Shared parameters: which Astro Deployment and which Secret of which environment.

    Every token is created with one name per environment and Secret (``token_name``), so a token
    whose id no Secret holds (its run was killed between the create and the Secret write, or
    before it revoked a rotated token) is still found, and revoked, by the next run or teardown.

    :param deployment_id: the Astro Deployment the token belongs to
    :param namespace: the namespace of the Secret
    :param secret_name: the Secret holding the token
    :param environment: the environment's name: the Secret's ownership labels and the default ``token_name``
    :param astro_conn_id: the ``astro`` Connection (Astro Platform API: host, API token, ``extra.organization_id``)
    :param organization_id: overrides the Connection's ``extra.organization_id``
    :param token_name: the token's name in Astro; None means ``remote-agents-<environment>`` (with
        ``-registry`` appended for the image pull token). Every live token of this name that the
        Secret does not hold is revoked as an orphan, so give no other token this name
    """

    tokens_class: ClassVar[type[_Tokens]]
    name_suffix: ClassVar[str]
    template_fields: Sequence[str] = (
        *CLUSTER_TEMPLATE_FIELDS, "deployment_id", "organization_id", "astro_conn_id", "namespace", "secret_name",
        "environment", "token_name",
    )

    def __init__(
        self,
        *,
        deployment_id: str,
        namespace: str,
        secret_name: str,
        environment: str,
        astro_conn_id: str = AstroHook.default_conn_name,
        organization_id: str | None = None,
        token_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deployment_id = deployment_id
        self.namespace = namespace
        self.secret_name = secret_name
        self.environment = environment
        self.astro_conn_id = astro_conn_id
        self.organization_id = organization_id
        self.token_name = token_name

    @property
    def ownership(self) -> dict[str, str]:
        return environment_ownership_labels(self.environment)

    @property
    def secret_resource(self) -> str:
        return object_ref("Secret", self.secret_name, self.namespace)

    def tokens(self) -> _Tokens:
        return self.tokens_class(AstroHook(self.astro_conn_id, self.organization_id), self.deployment_id)

    def our_token_name(self) -> str:
        return self.token_name or f"remote-agents-{self.environment}{self.name_suffix}"

    def revoke_unheld(self, tokens: _Tokens, held: set[str | None]) -> list[Change]:
        """Revoke the live tokens of ours that are not ``held`` (in a dry run: say they would be)."""
        changes = []
        for token_id in tokens.live_named(self.our_token_name()):
            if token_id in held:
                continue
            self.log.warning("token %s (%s) is ours but no Secret holds it: revoking it", token_id,
                             self.our_token_name())
            revoked = self.is_dry_run or tokens.revoke(token_id)
            changes.append(Change(tokens.resource(token_id), Action.DELETED if revoked else Action.ABSENT,
                                  dry_run=self.is_dry_run))
        return changes


class _EnsureTokenSecretOperator(_AstroTokenOperator):
    """Create a token and write it into the Secret, unless the Secret already holds a live one.

    :param token_description: the description of a new token; None names the environment and the Secret
    :param token_expiry_days: days until a new token expires; 0 means it never expires (templated: a
        string is converted to an int)
    :param rotate: replace a live token with a new one, then revoke the old one (templated: the
        strings ``"True"``/``"False"`` are accepted)
    :param labels: extra labels for the Secret, set whenever it is written; the ownership labels win
    """

    secret_data_key: ClassVar[str]
    template_fields: Sequence[str] = (
        *_AstroTokenOperator.template_fields, "labels", "token_description", "token_expiry_days", "rotate",
    )

    def __init__(
        self,
        *,
        token_description: str | None = None,
        token_expiry_days: int | str = 365,
        rotate: bool | str = False,
        labels: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token_description = token_description
        self.token_expiry_days = token_expiry_days
        self.rotate = rotate
        self.labels = labels

    def secret_values(self, token: str) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def check_arguments(self) -> None:
        """Refuse an impossible request before anything is created."""

    def execute(self, context: Any) -> dict[str, Any]:
        self.check_arguments()
        objects, tokens = ClusterObjects(self.cluster_access), self.tokens()
        current = objects.get("Secret", self.secret_name, self.namespace)
        if current is not None:
            require_owned(current, self.ownership)
        old_id = _token_id(current, self.secret_data_key)
        old_live = old_id is not None and tokens.is_live(old_id)
        if old_id and old_live and not as_bool(self.rotate):
            replaced_id = _replaced_token_id(current)
            unfinished = replaced_id if replaced_id not in (None, old_id) and tokens.is_live(replaced_id) else None
            unchanged = [Change(tokens.resource(old_id), Action.UNCHANGED, dry_run=self.is_dry_run),
                         Change(self.secret_resource, Action.UNCHANGED, dry_run=self.is_dry_run),
                         *self.revoke_unheld(tokens, {old_id, unfinished})]
            if unfinished and not self.is_dry_run:
                self.log.warning("an earlier rotation did not revoke the token %s it replaced: finishing it", unfinished)
                return self.retire(context, objects, tokens, unchanged, old_id, unfinished)
            if unfinished:
                unchanged.append(Change(tokens.resource(unfinished), Action.DELETED, dry_run=True))
            return report_changes(self.log, unchanged, token_id=old_id, secret_name=self.secret_name)
        live_old_id = old_id if old_live else None
        if self.is_dry_run:
            return report_changes(self.log, [*self.plan(current, live_old_id), *self.revoke_unheld(tokens, {old_id})],
                                  token_id=old_id, secret_name=self.secret_name)
        changes, new_id = self.replace_token(objects, tokens, current, old_id, live_old_id)
        # The old token stays until the agents run with the new one (finish); any other is an orphan.
        changes.extend(self.revoke_unheld(tokens, {new_id, live_old_id}))
        return self.finish(context, objects, tokens, changes, new_id, live_old_id)

    def plan(self, current: dict[str, Any] | None, live_old_id: str | None) -> list[Change]:
        tokens = self.tokens()
        plan = [Change(tokens.resource("<new>"), Action.CREATED, dry_run=True),
                Change(self.secret_resource, Action.UPDATED if current else Action.CREATED, dry_run=True)]
        if live_old_id:
            plan.append(Change(tokens.resource(live_old_id), Action.DELETED, dry_run=True))
        return plan

    def replace_token(self, objects: ClusterObjects, tokens: _Tokens, current: dict[str, Any] | None,
                      old_id: str | None, live_old_id: str | None) -> tuple[list[Change], str]:
        """New token -> Secret, in one create or one replace, so the Secret is never empty."""
        created = self.create_token(tokens, old_id)
        new_id = str(created["id"])
        annotations = {TOKEN_ID_ANNOTATION: new_id}
        if live_old_id:
            annotations[REPLACED_TOKEN_ID_ANNOTATION] = live_old_id
        try:
            kube_type, values = self.secret_values(created.pop("token"))
            desired = secret_manifest(
                self.secret_name, self.namespace, values, secret_type=kube_type,
                labels={**(self.labels or {}), **self.ownership}, annotations=annotations,
            )
            secret_change = converge_object(objects, desired, self.ownership, dry_run=False, current=current)
        except Exception:
            # The value is lost with this task; revoke it so it does not count against the token limit.
            tokens.revoke(new_id)
            raise
        token_change = Change(tokens.resource(new_id), Action.CREATED, {"id": {"from": old_id, "to": new_id}})
        return [token_change, secret_change], new_id

    def create_token(self, tokens: _Tokens, old_id: str | None) -> dict[str, Any]:
        """Create our token; after a create whose answer was lost, revoke what it may have made (a token of
        our name that is not the one in use: its value is lost with the answer) and create once more."""
        name = self.our_token_name()
        try:
            return tokens.create(name, self.description(), int(self.token_expiry_days))
        except AstroUncertainCreateError as uncertain:
            self.log.warning("%s; revoking any token it made, then creating again", uncertain)
        for token_id in tokens.live_named(name):
            if token_id != old_id:
                tokens.revoke(token_id)
        return tokens.create(name, self.description(), int(self.token_expiry_days))

    def finish(self, context: Any, objects: ClusterObjects, tokens: _Tokens, changes: list[Change], new_id: str,
               live_old_id: str | None) -> dict[str, Any]:
        """After the Secret holds ``new_id``: make its users take it up, then revoke ``live_old_id``."""
        return self.retire(context, objects, tokens, changes, new_id, live_old_id)

    def retire(self, context: Any, objects: ClusterObjects, tokens: _Tokens, changes: list[Change], new_id: str,
               old_id: str | None) -> dict[str, Any]:
        """Revoke ``old_id`` once nothing may still hold it (image pulls read the Secret when they happen)."""
        if old_id:
            changes.append(self.revoke_change(tokens, old_id))
        return report_changes(self.log, changes, token_id=new_id, secret_name=self.secret_name)

    @staticmethod
    def revoke_change(tokens: _Tokens, token_id: str) -> Change:
        return Change(tokens.resource(token_id), Action.DELETED if tokens.revoke(token_id) else Action.ABSENT)

    def description(self) -> str:
        return self.token_description or (
            f"Managed by remote-agents (environment {self.environment}); held in Secret "
            f"{self.namespace}/{self.secret_name}"
        )


def _replaced_token_id(secret: dict[str, Any] | None) -> str | None:
    return ((secret or {}).get("metadata", {}).get("annotations") or {}).get(REPLACED_TOKEN_ID_ANNOTATION)


def _token_id(secret: dict[str, Any] | None, data_key: str) -> str | None:
    """The id of the token the Secret holds, if it holds one."""
    if secret is None or not (secret.get("data") or {}).get(data_key):
        return None
    return (secret["metadata"].get("annotations") or {}).get(TOKEN_ID_ANNOTATION)


class EnsureAgentTokenOperator(_EnsureTokenSecretOperator):
    """Keep a live Astro agent token in the Secret the chart's ``agentTokenSecretName`` names (key ``token``).

    A Secret holding a token Astro still lists is left alone (no writes). A missing Secret, or one
    whose token was revoked or expired, gets a new token. ``rotate=True`` creates a new token,
    replaces the Secret in one write, restarts the agent Deployments (``restart_selector`` and/or
    ``restart_deployments``), waits until they have rolled out (deferred, or polling in the task), then revokes the old
    token, so running agents always hold a valid token. Whenever the token changes, the agent
    Deployments are restarted, since Pods read the Secret only when they start.

    Example::

        EnsureAgentTokenOperator(
            task_id="agent_token", deployment_id="clxyz...", namespace="astro-agents",
            secret_name="astro-agent-token", environment="prod", astro_conn_id="astro_default",
            restart_selector="remote-agents.astronomer.io/environment=prod", rotate="{{ params.rotate }}",
            eks_cluster_name="agents-prod", aws_conn_id="aws_default", region_name="eu-west-1",
        )

    Returns ``{"changes": [...], "token_id": ..., "secret_name": ...}``: the token's id, never its value.

    :param restart_selector: label selector of the agent Deployments in ``namespace`` to restart when
        the token changes; ``rotate`` needs this or ``restart_deployments``
    :param restart_deployments: names of agent Deployments in ``namespace`` to restart as well
    :param revoke_after_rollout: after a rotation, revoke the old token only once the restarted
        Deployments have rolled out; False revokes it right after the restart, without waiting
    :param rollout_timeout: seconds the rollout may take; after that the task fails and both tokens stay live
    :param poll_interval: seconds between two checks of the rollout
    :param deferrable: wait for the rollout in the triggerer; defaults to ``[operators] default_deferrable``
        (off unless set), and without it the same wait runs in the task (not templated)
    """

    tokens_class = _AgentTokens
    name_suffix = ""
    secret_data_key = AGENT_TOKEN_KEY
    template_fields: Sequence[str] = (
        *_EnsureTokenSecretOperator.template_fields, "restart_selector", "restart_deployments",
    )

    def __init__(
        self,
        *,
        secret_name: str = "astro-agent-token",
        restart_selector: str | None = None,
        restart_deployments: Sequence[str] = (),
        revoke_after_rollout: bool = True,
        rollout_timeout: float = 900.0,
        poll_interval: float = 5.0,
        deferrable: bool = DEFAULT_DEFERRABLE,
        **kwargs: Any,
    ) -> None:
        super().__init__(secret_name=secret_name, **kwargs)
        self.deferrable = deferrable
        self.restart_selector = restart_selector
        self.restart_deployments = restart_deployments
        self.revoke_after_rollout = revoke_after_rollout
        self.rollout_timeout = rollout_timeout
        self.poll_interval = poll_interval

    def check_arguments(self) -> None:
        if as_bool(self.rotate) and not (self.restart_selector or self.restart_deployments):
            raise ConfigError(
                ["restart_selector: rotate=True needs restart_selector or restart_deployments, so the agents "
                 "restart with the new token before the old one is revoked"],
                source=self.task_id,
            )

    def secret_values(self, token: str) -> tuple[str, dict[str, str]]:
        return secret_values("generic", token, key=AGENT_TOKEN_KEY)

    def plan(self, current: dict[str, Any] | None, live_old_id: str | None) -> list[Change]:
        plan = super().plan(current, live_old_id)
        if self.restart_selector or self.restart_deployments:
            plan[2:2] = restart_deployments(ClusterObjects(self.cluster_access), self.namespace,
                                            selector=self.restart_selector, names=self.restart_deployments,
                                            dry_run=True)
        return plan

    def finish(self, context: Any, objects: ClusterObjects, tokens: _Tokens, changes: list[Change], new_id: str,
               live_old_id: str | None) -> dict[str, Any]:
        restarted = restart_deployments(objects, self.namespace, selector=self.restart_selector,
                                        names=self.restart_deployments, dry_run=False)
        changes.extend(restarted)
        rolling = [c.resource.rsplit("/", 1)[-1] for c in restarted if c.action is Action.UPDATED]
        if live_old_id and self.revoke_after_rollout and not rolling:
            report_changes(self.log, changes, token_id=new_id, secret_name=self.secret_name)
            raise ClusterError(
                f"no agent Deployment in namespace {self.namespace} matched restart_selector "
                f"{self.restart_selector!r} or restart_deployments {list(self.restart_deployments)}, so no agent "
                f"restarted with the new token {new_id} that Secret {self.namespace}/{self.secret_name} now holds. "
                f"The old token {live_old_id} was NOT revoked: running agents still use it. Fix the selector to a "
                "label every agent Pod carries (the chart's `labels` value), re-run, then revoke the old token in "
                "the Astro UI (Deployment > Remote Agents > Tokens)"
            )
        if not (live_old_id and self.revoke_after_rollout):
            return super().retire(context, objects, tokens, changes, new_id, live_old_id)
        return self._retire_after_rollout(context, changes, new_id, live_old_id, rolling)

    def retire(self, context: Any, objects: ClusterObjects, tokens: _Tokens, changes: list[Change], new_id: str,
               old_id: str | None) -> dict[str, Any]:
        """An earlier run restarted the agents, then was killed while it waited: wait for the same Deployments."""
        rolling = sorted(restart_targets(objects, self.namespace, selector=self.restart_selector,
                                         names=self.restart_deployments))
        if not (old_id and rolling and self.revoke_after_rollout):
            return super().retire(context, objects, tokens, changes, new_id, old_id)
        return self._retire_after_rollout(context, changes, new_id, old_id, rolling)

    def _retire_after_rollout(self, context: Any, changes: list[Change], new_id: str, old_id: str,
                              rolling: list[str]) -> dict[str, Any]:
        so_far = report_changes(self.log, changes, token_id=new_id, secret_name=self.secret_name)
        self.log.info("Waiting for %s to roll out before revoking token %s", ", ".join(rolling), old_id)
        from remote_agents.triggers.rollout import RolloutTrigger  # Airflow's trigger base: not at Dag parse

        trigger = RolloutTrigger(
            access=self.cluster_access.to_dict(),
            namespace=self.namespace,
            deployments=rolling,
            deadline=time.time() + self.rollout_timeout,
            poll_interval=self.poll_interval,
            return_value={**so_far, "old_token_id": old_id},
        )
        return defer_or_wait(self, context, trigger, timedelta(seconds=self.rollout_timeout + 60))

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Revoke the old token once the agents run with the new one; on a failed rollout keep both live."""
        event = event or {}
        facts = event.get("return_value") or {}
        old_id = facts.get("old_token_id")
        if event.get("status") != "success":
            unready = "; ".join(f"{name}: {why}" for name, why in (event.get("unready") or {}).items())
            raise ClusterError(
                f"agent Deployments did not roll out ({event.get('message', 'no event')}"
                f"{': ' + unready if unready else ''}). Secret {self.namespace}/{self.secret_name} holds the new "
                f"token {facts.get('token_id')}; the old token {old_id} was NOT revoked, so running agents keep "
                f"working. Fix the rollout (kubectl -n {self.namespace} rollout status deployment/<name>), then "
                "revoke the old token in the Astro UI (Deployment > Remote Agents > Tokens)"
            )
        revoked = report_changes(self.log, [self.revoke_change(self.tokens(), old_id)] if old_id else [])
        kept = {key: facts[key] for key in ("token_id", "secret_name") if key in facts}
        return {"changes": [*facts.get("changes", []), *revoked["changes"]], **kept}


class EnsureRegistrySecretOperator(_EnsureTokenSecretOperator):
    """Keep a live Deployment API token in the image pull Secret ``imagePullSecretName`` names.

    The Secret is ``kubernetes.io/dockerconfigjson`` for ``registry`` (``images.astronomer.cloud``)
    with user ``cli``, the token created with scope DEPLOYMENT and role DEPLOYMENT_ADMIN: the only
    built-in Deployment role (a custom Deployment role is an id, and Astronomer does not document
    which permissions an image pull needs, so none narrower is known to work). As with the
    agent token, a live token means no writes; ``rotate=True`` replaces it, then revokes the old one
    (image pulls read the Secret when they happen, so no restart is needed).

    Example::

        EnsureRegistrySecretOperator(
            task_id="registry_secret", deployment_id="clxyz...", namespace="astro-agents",
            secret_name="astro-registry", environment="prod", kubernetes_conn_id="kubernetes_default",
        )

    Returns ``{"changes": [...], "token_id": ..., "secret_name": ...}``.

    :param registry: the registry host the image pull Secret is for
    """

    tokens_class = _DeploymentApiTokens
    name_suffix = "-registry"
    secret_data_key = DOCKERCONFIGJSON_KEY
    template_fields: Sequence[str] = (*_EnsureTokenSecretOperator.template_fields, "registry")

    def __init__(self, *, secret_name: str = "astro-registry", registry: str = DEFAULT_REGISTRY,
                 **kwargs: Any) -> None:
        super().__init__(secret_name=secret_name, **kwargs)
        self.registry = registry

    def secret_values(self, token: str) -> tuple[str, dict[str, str]]:
        return secret_values("dockerconfigjson", token, registry=self.registry)


class _RevokeTokenOperator(_AstroTokenOperator):
    """Revoke the token our Secret's annotation names, and every live token called ``token_name``.

    The Secret is read only while its cluster is there; the tokens are revoked through the Astro API
    either way, so a teardown after the cluster is gone still leaves no live token. The Secret itself
    is left for deletion.
    """

    def execute(self, context: Any) -> dict[str, Any]:
        tokens = self.tokens()
        changes, token_id = self._revoke_held(tokens) if self._secret_readable() else ([], None)
        changes.extend(self.revoke_unheld(tokens, {token_id}))
        return report_changes(self.log, changes, token_id=token_id)

    def _secret_readable(self) -> bool:
        if self.eks_cluster_name and not self._eks_cluster_exists():
            self.log.info("EKS cluster %s is gone, and Secret %s with it: revoking by token name %s",
                          self.eks_cluster_name, self.secret_resource, self.our_token_name())
            return False
        return True

    def _revoke_held(self, tokens: _Tokens) -> tuple[list[Change], str | None]:
        current = ClusterObjects(self.cluster_access).get("Secret", self.secret_name, self.namespace)
        if current is None:
            self.log.info("Secret %s/%s does not exist: no token id to revoke", self.namespace, self.secret_name)
            return [Change(self.secret_resource, Action.ABSENT, dry_run=self.is_dry_run)], None
        if not is_owned(current, self.ownership):
            self.log.warning("%s was not created by remote-agents for this environment; its token is left alone",
                             self.secret_resource)
            return [Change(self.secret_resource, Action.UNCHANGED, dry_run=self.is_dry_run)], None
        token_id = (current["metadata"].get("annotations") or {}).get(TOKEN_ID_ANNOTATION)
        if not token_id:
            return [Change(self.secret_resource, Action.ABSENT, dry_run=self.is_dry_run)], None
        replaced_id = _replaced_token_id(current)
        unfinished = replaced_id not in (None, token_id) and tokens.is_live(replaced_id)
        held = [token_id, *([replaced_id] if unfinished else [])]
        return [self._revoke(tokens, held_id) for held_id in held], token_id

    def _revoke(self, tokens: _Tokens, token_id: str) -> Change:
        if self.is_dry_run:
            action = Action.DELETED if tokens.fetch(token_id) is not None else Action.ABSENT
        else:
            action = Action.DELETED if tokens.revoke(token_id) else Action.ABSENT
        return Change(tokens.resource(token_id), action, dry_run=self.is_dry_run)


class RevokeAgentTokenOperator(_RevokeTokenOperator):
    """Teardown: revoke the agent token held in our agent-token Secret; an already revoked one is ``absent``.

    Run it before the Secret or its namespace is deleted: the token id lives in the Secret's annotation.

    Example::

        RevokeAgentTokenOperator(task_id="revoke_agent_token", deployment_id="clxyz...", namespace="astro-agents",
                                 environment="prod", kubernetes_conn_id="kubernetes_default")
    """

    tokens_class = _AgentTokens
    name_suffix = ""

    def __init__(self, *, secret_name: str = "astro-agent-token", **kwargs: Any) -> None:
        super().__init__(secret_name=secret_name, **kwargs)


class RevokeRegistryTokenOperator(_RevokeTokenOperator):
    """Teardown: revoke the Deployment API token behind our image pull Secret; already revoked is ``absent``.

    Example::

        RevokeRegistryTokenOperator(task_id="revoke_registry_token", deployment_id="clxyz...",
                                    namespace="astro-agents", environment="prod",
                                    kubernetes_conn_id="kubernetes_default")
    """

    tokens_class = _DeploymentApiTokens
    name_suffix = "-registry"

    def __init__(self, *, secret_name: str = "astro-registry", **kwargs: Any) -> None:
        super().__init__(secret_name=secret_name, **kwargs)


class UpdateRemoteExecutionSettingsOperator(BaseOperator):
    """Converge a Remote Execution Deployment's settings: allowed IP ranges and task log bucket.

    Only the settings given (not None) are managed; the others keep their value, and so does every
    other setting of the Deployment (the update body is rebuilt from a GET, see
    ``AstroHook.update_remote_execution``). Equal settings mean no write. The agents' egress IPs must
    be in the allowed ranges, or their heartbeats get 403.

    :param deployment_id: the Remote Execution Deployment
    :param allowed_ip_address_ranges: the exact list of allowed ranges (CIDRs)
    :param include_allowed_ip_address_ranges: ranges that must be allowed, keeping any others; items
        are CIDRs, bare IPs (taken as ``/32``) or lists of them (an XCom such as a cluster's ``egress_ips``)
    :param exclude_allowed_ip_address_ranges: ranges to take out (teardown), same forms
    :param task_log_bucket: the bucket URL Astro reads task logs from
    :param task_log_url_pattern: the URL pattern of one task's log in that bucket
    :param clear_task_logs: unset the task log bucket and URL pattern (teardown)
    :param astro_conn_id: the ``astro`` Connection
    :param organization_id: overrides the Connection's ``extra.organization_id``
    :param dry_run: report what would change, change nothing

    Example::

        UpdateRemoteExecutionSettingsOperator(
            task_id="allowed_ip_ranges", deployment_id="clxyz...",
            include_allowed_ip_address_ranges=["203.0.113.0/24", cluster.output["egress_ips"]],
        )

    Returns ``{"changes": [...], "remote_api_url": ...}`` (the chart's ``astroDeploymentAPIURL``).
    """

    # task_log_url_pattern is not templated: it is itself a Jinja template, which Astro renders per task.
    template_fields: Sequence[str] = (
        "deployment_id", "organization_id", "astro_conn_id", "allowed_ip_address_ranges",
        "include_allowed_ip_address_ranges", "exclude_allowed_ip_address_ranges", "task_log_bucket", "dry_run",
    )

    def __init__(
        self,
        *,
        deployment_id: str,
        allowed_ip_address_ranges: Sequence[str] | None = None,
        include_allowed_ip_address_ranges: Sequence[Any] | None = None,
        exclude_allowed_ip_address_ranges: Sequence[Any] | None = None,
        task_log_bucket: str | None = None,
        task_log_url_pattern: str | None = None,
        clear_task_logs: bool = False,
        astro_conn_id: str = AstroHook.default_conn_name,
        organization_id: str | None = None,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deployment_id = deployment_id
        self.clear_task_logs = clear_task_logs
        self.allowed_ip_address_ranges = allowed_ip_address_ranges
        self.include_allowed_ip_address_ranges = include_allowed_ip_address_ranges
        self.exclude_allowed_ip_address_ranges = exclude_allowed_ip_address_ranges
        self.task_log_bucket = task_log_bucket
        self.task_log_url_pattern = task_log_url_pattern
        self.astro_conn_id = astro_conn_id
        self.organization_id = organization_id
        self.dry_run = dry_run

    def execute(self, context: Any) -> dict[str, Any]:
        if self.allowed_ip_address_ranges is not None and (self.include_allowed_ip_address_ranges is not None
                                                           or self.exclude_allowed_ip_address_ranges is not None):
            raise ConfigError(["allowed_ip_address_ranges: give the exact list, or ranges to include/exclude, "
                               "not both"], source=self.task_id)
        astro = AstroHook(self.astro_conn_id, self.organization_id)
        deployment = astro.get_deployment(self.deployment_id)
        settings = deployment.get("remoteExecution") or {}
        if not settings.get("enabled"):
            raise ConfigError(
                [f"deployment_id: {self.deployment_id} does not have Remote Execution enabled; create a Remote "
                 "Execution Deployment (astro deployment create --remote-execution-enabled) and use its id"],
                source=self.task_id,
            )
        current = _remote_execution_view(settings)
        wanted = {
            "allowedIpAddressRanges": self._wanted_ranges(current["allowedIpAddressRanges"]),
            "taskLogBucket": self.task_log_bucket,
            "taskLogUrlPattern": self.task_log_url_pattern,
        }
        desired = {**current, **{key: value for key, value in wanted.items() if value is not None}}
        if self.clear_task_logs:
            desired.update(taskLogBucket=None, taskLogUrlPattern=None)
        diff = diff_values(current, desired)
        dry_run = as_bool(self.dry_run)
        if diff and not dry_run:
            astro.update_remote_execution(self.deployment_id, allowed_ip_address_ranges=wanted["allowedIpAddressRanges"],
                                          task_log_bucket=self.task_log_bucket,
                                          task_log_url_pattern=self.task_log_url_pattern,
                                          clear_task_logs=self.clear_task_logs, current=deployment)
        change = Change(f"astro:deployment/{self.deployment_id}/remoteExecution",
                        Action.UPDATED if diff else Action.UNCHANGED, diff, dry_run)
        return report_changes(self.log, [change], remote_api_url=settings.get("remoteApiUrl"))

    def _wanted_ranges(self, current: list[str]) -> list[str] | None:
        if self.allowed_ip_address_ranges is not None:
            return sorted(_ranges(self.allowed_ip_address_ranges))
        if self.include_allowed_ip_address_ranges is None and self.exclude_allowed_ip_address_ranges is None:
            return None
        included = set(current) | _ranges(self.include_allowed_ip_address_ranges or [])
        return sorted(included - _ranges(self.exclude_allowed_ip_address_ranges or []))


def _ranges(items: Sequence[Any]) -> set[str]:
    """CIDRs from CIDRs, bare IPs (/32) and nested lists of either (an XCom of egress IPs)."""
    flat: set[str] = set()
    for item in items:
        if isinstance(item, (list, tuple)):
            flat |= _ranges(item)
        elif item:
            flat.add(str(item) if "/" in str(item) else f"{item}/32")
    return flat


def _remote_execution_view(settings: Mapping[str, Any]) -> dict[str, Any]:
    # Astro does not promise an order for the ranges; sorted, equal sets compare equal.
    return {
        "allowedIpAddressRanges": sorted(settings.get("allowedIpAddressRanges") or []),
        "taskLogBucket": settings.get("taskLogBucket"),
        "taskLogUrlPattern": settings.get("taskLogUrlPattern"),
    }
