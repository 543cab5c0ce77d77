"""One error hierarchy for the provider: every failure we raise on purpose is a RemoteAgentsError."""

from __future__ import annotations


class RemoteAgentsError(Exception):
    """Base of every error this provider raises deliberately."""


class ConfigError(RemoteAgentsError):
    """The environment spec (or an operator argument) is invalid; raised before any network call.

    ``problems`` holds one line per problem, each naming the field path, the bad value and the fix.
    """

    def __init__(self, problems: list[str], source: str = "spec") -> None:
        self.problems = problems
        self.source = source
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun}\n" + "\n".join(f"  - {p}" for p in problems))


class ClusterError(RemoteAgentsError):
    """The Kubernetes cluster (EKS or existing) is not in the state we need."""


class HelmError(RemoteAgentsError):
    """helm exited non-zero; ``stderr`` is already redacted."""

    def __init__(self, message: str, returncode: int = 1, stderr: str = "") -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


class AstroApiError(RemoteAgentsError):
    """The Astro Platform API answered with an error."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class AstroUncertainCreateError(AstroApiError):
    """A create whose answer was lost (a 5xx or a timeout): the object may exist. Not retried blindly:
    the caller looks it up by name, revokes or adopts it, and only then creates again."""


class HealthCheckError(RemoteAgentsError):
    """A health check failed; the message is the diagnosis (component, evidence, likely fix)."""


class AwsError(RemoteAgentsError):
    """An AWS call failed; ``code`` and ``action`` (``iam:CreateRole``) say which and how."""

    def __init__(self, message: str, code: str = "", action: str = "") -> None:
        self.code = code
        self.action = action
        super().__init__(message)


class AwsPermissionError(AwsError):
    """AWS denied an action: the management identity lacks the IAM permission named by ``action``."""


class AwsQuotaError(AwsError):
    """An AWS service quota is reached; ``quota`` names it."""

    def __init__(self, message: str, code: str = "", action: str = "", quota: str = "") -> None:
        self.quota = quota
        super().__init__(message, code, action)
