"""Teardown of the Secrets Manager secrets this project writes itself (the health checks' canaries).

The secrets the agents read (the customer's Variables and Connections under the backend's
prefixes) are never ours and never touched; only the named secrets that carry every ownership tag
are deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from remote_agents.changes import Action, Change
from remote_agents.errors import ConfigError
from remote_agents.operators.base import AWS_TEMPLATE_FIELDS, AwsOperator, report_changes


class DeleteOwnedSecretsOperator(AwsOperator):
    """Delete the named secrets that carry all ``tags``, without a recovery window; others are skipped.

    No recovery window, because a re-created environment writes a secret of the same name, which AWS
    refuses while the old one is scheduled for deletion.

    .. code-block:: python

        DeleteOwnedSecretsOperator(
            task_id="delete_canary_secrets", region_name="eu-west-1",
            secret_ids=["airflow/variables/remote_agents_canary__prod", "airflow/connections/remote_agents_canary__prod"],
            tags={"remote-agents:environment": "prod", "remote-agents:managed-by": "remote-agents"},
        )

    :param secret_ids: names (or ARNs) of the secrets to delete
    :param tags: the ownership tags a secret must carry, every one with this value, to be deleted
    """

    template_fields: Sequence[str] = (*AWS_TEMPLATE_FIELDS, "secret_ids", "tags")

    def __init__(self, *, secret_ids: Sequence[str], tags: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secret_ids = secret_ids
        self.tags = tags

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.secrets_manager import SecretsManagerHook

        from remote_agents.hooks.aws import owns, tag_dict

        if not self.tags:
            raise ConfigError(["tags: give the ownership tags; without them every secret would look like ours"],
                              source=self.task_id)
        client = self.aws_hook(SecretsManagerHook).conn
        changes, skipped = [], []
        for secret_id in self.secret_ids:
            resource = f"secretsmanager:secret/{secret_id}"
            try:
                found = client.describe_secret(SecretId=secret_id)
            except client.exceptions.ResourceNotFoundException:
                changes.append(Change(resource, Action.ABSENT, dry_run=self.is_dry_run))
                continue
            if found.get("DeletedDate"):
                changes.append(Change(resource, Action.ABSENT, dry_run=self.is_dry_run))
            elif not owns(tag_dict(found.get("Tags")), self.tags):
                self.log.warning("%s does not carry the ownership tags %s: not ours, left alone", resource, self.tags)
                skipped.append(resource)
            else:
                if not self.is_dry_run:
                    client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
                changes.append(Change(resource, Action.DELETED, dry_run=self.is_dry_run))
        return report_changes(self.log, changes, skipped=skipped)
