"""Fault injection: workloads that never become ready, N× 5xx on matching paths, added latency."""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

POD_FAILURE_REASONS = ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError")


@dataclass
class NeverReady:
    namespace: str | None
    name: str | None  # the workload's name (Deployment/StatefulSet/Job) or a bare Pod's name
    image: str | None  # substring of any container image, e.g. a bad tag
    reason: str

    def matches(self, namespace: str, names: tuple[str, ...], images: list[str]) -> bool:
        return (
            self.namespace in (None, namespace)
            and (self.name is None or self.name in names)
            and (self.image is None or any(self.image in image for image in images))
        )


@dataclass
class FailingRequests:
    path_pattern: str
    remaining: int
    status: int
    method: str | None


@dataclass
class Latency:
    path_pattern: str
    seconds: float


class Faults:
    """Thread-safe fault rules; the emulator consults them on every request and reconcile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._never_ready: list[NeverReady] = []
        self._failing: list[FailingRequests] = []
        self._latency: list[Latency] = []

    def never_ready(self, namespace: str | None = None, name: str | None = None, image: str | None = None,
                    reason: str = "ImagePullBackOff") -> None:
        """Pods of matching workloads stay unready, their container waiting with `reason`."""
        if reason not in POD_FAILURE_REASONS:
            raise ValueError(f"reason must be one of {POD_FAILURE_REASONS}, got {reason!r}")
        with self._lock:
            self._never_ready.append(NeverReady(namespace, name, image, reason))

    def fail_requests(self, path_pattern: str, times: int = 1, status: int = 503, method: str | None = None) -> None:
        """The next `times` requests whose path matches the regex (re.search) get a `status` error."""
        re.compile(path_pattern)
        with self._lock:
            self._failing.append(FailingRequests(path_pattern, times, status, method and method.upper()))

    def add_latency(self, seconds: float, path_pattern: str = ".*") -> None:
        with self._lock:
            self._latency.append(Latency(path_pattern, seconds))

    def clear(self) -> None:
        with self._lock:
            self._never_ready.clear()
            self._failing.clear()
            self._latency.clear()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "never_ready": [asdict(f) for f in self._never_ready],
                "failing_requests": [asdict(f) for f in self._failing if f.remaining > 0],
                "latency": [asdict(f) for f in self._latency],
            }

    # --- consulted by the emulator -----------------------------------------------------------
    def pod_failure(self, namespace: str, names: tuple[str, ...], images: list[str]) -> str | None:
        with self._lock:
            rule = next((r for r in self._never_ready if r.matches(namespace, names, images)), None)
        return None if rule is None else rule.reason

    def take_error(self, method: str, path: str) -> int | None:
        with self._lock:
            for rule in self._failing:
                if rule.remaining > 0 and rule.method in (None, method) and re.search(rule.path_pattern, path):
                    rule.remaining -= 1
                    return rule.status
        return None

    def latency(self, path: str) -> float:
        with self._lock:
            return sum(rule.seconds for rule in self._latency if re.search(rule.path_pattern, path))
