"""AWS for the sandbox: moto in server mode on loopback, as strict as we can make it.

`AwsEmulator` starts moto's `ThreadedMotoServer` on 127.0.0.1, creates an admin IAM user while
moto still accepts anonymous calls, then switches IAM enforcement on, so that from then on the
policies of the IRSA role decide what the stand-in agents may do in S3 and Secrets Manager
(moto's switch is `/moto-api/reset-auth`; the patches below say what each one adds). Around moto's WSGI app sits a small middleware that
logs every AWS call, injects faults on request, and serves the admin API under `/sandbox/`.

moto keeps its state per process, so run one `AwsEmulator` per process.

HTTP admin API (JSON bodies and replies):
    GET    /sandbox/info               endpoint_url, region, account_id, admin_credentials
    GET    /sandbox/requests           {"calls": [{"service", "action", "mutating"}, ...]}
    DELETE /sandbox/requests           clear the request log
    GET    /sandbox/faults             current faults
    DELETE /sandbox/faults             clear all faults
    POST   /sandbox/faults/throttle    {"service": "eks", "action": "DescribeCluster" | null, "count": 1}
    POST   /sandbox/faults/latency     {"service": "s3", "seconds": 0.5}
    GET    /sandbox/eks-delays         {"cluster_seconds", "nodegroup_seconds"}
    PUT    /sandbox/eks-delays         same shape; either key may be left out
    GET    /sandbox/ec2-delays         {"nat_gateway_deletion_seconds"}
    PUT    /sandbox/ec2-delays         same shape
    POST   /sandbox/reset              wipe moto state, keep admin user, enforcement and the delays
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qs

import boto3
import botocore.session
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.wrappers import Request, Response

from sandbox import moto_iam

DEFAULT_REGION = "us-east-1"
ADMIN_USER_NAME = "sandbox-admin"
ADMIN_PATH_PREFIX = "/sandbox/"

_READ_ONLY_PREFIXES = ("Describe", "List", "Get", "Head")
# Exchanging a token for credentials creates nothing a re-run could avoid, so it is not a change.
_READ_ONLY_ACTIONS = frozenset({"AssumeRole", "AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"})
# Real AWS does not sign these calls (no credentials exist yet), so IAM enforcement must let them through.
_UNSIGNED_STS_ACTIONS = frozenset({"AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"})

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class AwsCall:
    service: str
    action: str
    mutating: bool


@dataclass(frozen=True)
class AdminCredentials:
    access_key_id: str
    secret_access_key: str


@dataclass
class EksDelays:
    """How long new clusters and node groups report CREATING before ACTIVE (moto makes them ACTIVE at once)."""

    cluster_seconds: float = 0.0
    nodegroup_seconds: float = 0.0


@dataclass
class Ec2Delays:
    """How long a deleted NAT gateway reports ``deleting`` before ``deleted`` (moto deletes it at once)."""

    nat_gateway_deletion_seconds: float = 0.0


# Read by the patched EKS and EC2 models; module-level because moto's backends are process-global too.
_eks_delays = EksDelays()
_ec2_delays = Ec2Delays()
# The Kubernetes API that sandbox EKS clusters answer with (moto's endpoint is a fake hostname).
_eks_endpoint: dict[str, str] = {}
_patch_lock = threading.Lock()
_patches_applied = False


# --------------------------------------------------------------------------------------------
# In-process adjustments of moto, applied once per process before the server starts
# --------------------------------------------------------------------------------------------


def apply_moto_patches() -> None:
    """Apply the patches below and AWS's policy evaluation (``sandbox.moto_iam``); safe to call repeatedly."""
    global _patches_applied
    with _patch_lock:
        if _patches_applied:
            return
        _answer_unsigned_calls_like_aws()
        _scope_secrets_manager_checks_to_the_secret_arn()
        _sign_bodiless_requests_with_an_empty_body()
        _delay_eks_activation()
        _delay_nat_gateway_deletion()
        _point_eks_clusters_at_the_emulator()
        _authorize_head_bucket_as_list_bucket()
        moto_iam.apply()
        _patches_applied = True


def _answer_unsigned_calls_like_aws() -> None:
    # Patch A: with enforcement on, moto reads the Authorization header of every call and crashes
    # with a 500 (KeyError 'HTTP_AUTHORIZATION') when there is none. AWS never signs
    # AssumeRoleWithWebIdentity (the caller has no credentials yet), so let it through, and deny
    # any other anonymous call with a 403, as AWS does.
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import AccessDeniedError
    from moto.iam.access_control import S3IAMRequest
    from moto.s3.exceptions import S3AccessDeniedError

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authenticate(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        enforcing = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
        if "Authorization" in self.headers or not enforcing:
            return original(self, iam_request_cls, resource)
        action = self._get_action()
        if action in _UNSIGNED_STS_ACTIONS:
            return None
        if iam_request_cls is S3IAMRequest:
            raise S3AccessDeniedError()
        raise AccessDeniedError(user_arn="anonymous", action=action)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate


def _scope_secrets_manager_checks_to_the_secret_arn() -> None:
    # Patch B: moto checks Secrets Manager calls against resource "*", so a policy scoped to
    # `secret:airflow/*` never matches. Give the check the secret's real ARN instead.
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.utilities.utils import get_partition

    def secret_arn(self: Any) -> str:
        secret_id = self._get_param("SecretId") or self._get_param("Name")
        if not secret_id:
            return "*"
        if secret_id in self.backend.secrets:
            return self.backend.secrets[secret_id].arn
        if secret_id.startswith("arn:"):
            return secret_id
        partition = get_partition(self.region)
        return f"arn:{partition}:secretsmanager:{self.region}:{self.current_account}:secret:{secret_id}"

    SecretsManagerResponse._determine_resource = secret_arn


def _sign_bodiless_requests_with_an_empty_body() -> None:
    # Patch C: for a request with neither body nor query string (EKS ListClusters, DescribeCluster)
    # moto fills its parameters with the request headers and then signs those as the payload, so
    # the signature never matches. Only form posts (IAM, STS) carry their parameters in the body.
    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase._create_aws_request

    def create_aws_request_with_the_real_body(self: Any) -> Any:
        request = original(self)
        content_type = self._headers.get("Content-Type") or ""
        if not self._body and not content_type.startswith("application/x-www-form-urlencoded"):
            request.data = b""
        return request

    IAMRequestBase._create_aws_request = create_aws_request_with_the_real_body


def _delay_eks_activation() -> None:
    # moto sets `status = "ACTIVE"` in the constructors; a property reports CREATING until the
    # configured delay has passed since `created_at`, which is enough for waiters and triggers.
    from moto.core.utils import utcnow
    from moto.eks.models import Cluster, Nodegroup

    def status_property(delay_of: Callable[[], float]) -> property:
        def get_status(self: Any) -> str:
            status = self.__dict__["_sandbox_status"]
            age = (utcnow() - self.created_at).total_seconds()
            return "CREATING" if status == "ACTIVE" and age < delay_of() else status

        def set_status(self: Any, value: str) -> None:
            self.__dict__["_sandbox_status"] = value

        return property(get_status, set_status)

    Cluster.status = status_property(lambda: _eks_delays.cluster_seconds)
    Nodegroup.status = status_property(lambda: _eks_delays.nodegroup_seconds)


def _delay_nat_gateway_deletion() -> None:
    # AWS keeps a deleted NAT gateway "deleting" for about a minute, holding its elastic IP and
    # subnet; moto sets "deleted" at once. A property reports "deleting" until the configured delay
    # has passed since the first delete, so waiting for the deletion can be observed.
    from moto.core.utils import utcnow
    from moto.ec2.models.nat_gateways import NatGateway

    def get_state(self: Any) -> str:
        state = self.__dict__["_sandbox_state"]
        deleted_at = self.__dict__.get("_sandbox_deleted_at")
        if state == "deleted" and deleted_at and (utcnow() - deleted_at).total_seconds() < _ec2_delays.nat_gateway_deletion_seconds:
            return "deleting"
        return str(state)

    def set_state(self: Any, value: str) -> None:
        if value == "deleted" and "_sandbox_deleted_at" not in self.__dict__:
            self.__dict__["_sandbox_deleted_at"] = utcnow()
        self.__dict__["_sandbox_state"] = value

    NatGateway.state = property(get_state, set_state)


def _authorize_head_bucket_as_list_bucket() -> None:
    # moto checks HeadBucket against "s3:HeadBucket", which is no IAM action; AWS requires
    # s3:ListBucket. s3fs probes the bucket with HeadBucket before writing an XCom (and tries
    # CreateBucket when that is denied), so a least-privilege role would fail only on moto.
    from moto.s3.responses import ACTION_MAP

    ACTION_MAP["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"


def _point_eks_clusters_at_the_emulator() -> None:
    # moto gives each cluster a made-up https endpoint; the sandbox's clusters answer at the
    # Kubernetes emulator instead, so everything built from describe_cluster (kubeconfig, tokens,
    # helm) reaches a real API. Without an override moto's endpoint is kept.
    from moto.eks.models import Cluster

    def get_endpoint(self: Any) -> str:
        return _eks_endpoint.get("url") or self.__dict__["_sandbox_endpoint"]

    def set_endpoint(self: Any, value: str) -> None:
        self.__dict__["_sandbox_endpoint"] = value

    Cluster.endpoint = property(get_endpoint, set_endpoint)


# --------------------------------------------------------------------------------------------
# Identifying calls, faults and the request log
# --------------------------------------------------------------------------------------------


def is_mutating(action: str) -> bool:
    return not (action.startswith(_READ_ONLY_PREFIXES) or action in _READ_ONLY_ACTIONS)


def _signing_service(environ: Environ) -> str | None:
    # SigV4: "AWS4-HMAC-SHA256 Credential=AKIA.../20250101/us-east-1/eks/aws4_request, ..."
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        return auth.split(",")[0].split()[1].split("/")[3]
    except IndexError:
        return None


def _form_params(environ: Environ) -> dict[str, list[str]]:
    """Query-protocol parameters (IAM, STS) from the query string or the form body, leaving the body readable."""
    params = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        params.update(parse_qs(body.decode()))
    return params


def _rest_action(service: str, environ: Environ) -> str | None:
    # S3 and EKS are REST APIs: reuse moto's router, built from botocore's models, on a copy of
    # the request without its body (the router needs method, path, query and headers only).
    from moto.core.request import Request as MotoRequest
    from moto.core.routing import get_service_router

    bodiless = {**environ, "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0"}
    try:
        operation, _ = get_service_router(service).match(MotoRequest(bodiless))
    except (HTTPException, KeyError, ValueError):
        return None
    return str(operation.name)


def identify_call(environ: Environ) -> AwsCall:
    params = _form_params(environ)
    action = params.get("Action", [""])[0]
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    # moto sends unsigned calls it cannot place (anything but the STS web-identity exchange) to S3.
    service = _signing_service(environ) or ("sts" if action in _UNSIGNED_STS_ACTIONS else "s3")
    if target:
        action = target.rsplit(".", 1)[-1]
    if not action:
        action = _rest_action(service, environ) or ""
    if not action:
        method = environ["REQUEST_METHOD"]
        return AwsCall(service, f"{method} {environ.get('PATH_INFO', '')}", method not in ("GET", "HEAD"))
    return AwsCall(service, action, is_mutating(action))


@cache
def _protocol(service: str) -> str:
    try:
        return str(botocore.session.get_session().get_service_model(service).protocol)
    except Exception:  # an unknown service name: answer like S3, moto's default service
        return "rest-xml"


def throttling_response(service: str) -> Response:
    """The throttling error each protocol's botocore parser recognises (and retries)."""
    request_id = str(uuid.uuid4())
    protocol = _protocol(service)
    if protocol == "query":
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return Response(body, status=400, content_type="text/xml")
    if protocol == "json":
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
        return Response(body, status=400, content_type="application/x-amz-json-1.1")
    if protocol == "rest-json":
        headers = {"x-amzn-ErrorType": "ThrottlingException", "x-amzn-RequestId": request_id}
        return Response(json.dumps({"message": "Rate exceeded"}), 429, headers, content_type="application/json")
    body = (
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    )
    return Response(body, status=503, content_type="application/xml")


class Faults:
    """Throttling for the next N calls of a service (or one action of it) and added latency per service."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._throttles: dict[tuple[str, str | None], int] = {}
        self._latency: dict[str, float] = {}

    def throttle(self, service: str, action: str | None = None, count: int = 1) -> None:
        with self._lock:
            self._throttles[(service, action)] = count

    def add_latency(self, service: str, seconds: float) -> None:
        with self._lock:
            self._latency[service] = seconds

    def clear(self) -> None:
        with self._lock:
            self._throttles.clear()
            self._latency.clear()

    def latency_for(self, service: str) -> float:
        return self._latency.get(service, 0.0)

    def take_throttle(self, call: AwsCall) -> bool:
        """Consume one throttled call for this service/action if any is left."""
        with self._lock:
            for key in ((call.service, call.action), (call.service, None)):
                if self._throttles.get(key, 0) > 0:
                    self._throttles[key] -= 1
                    return True
        return False

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            throttles = [{"service": s, "action": a, "remaining": n} for (s, a), n in self._throttles.items() if n]
            return {"throttle": throttles, "latency": dict(self._latency)}


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[AwsCall] = []

    def append(self, call: AwsCall) -> None:
        with self._lock:
            self._calls.append(call)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    @property
    def calls(self) -> list[AwsCall]:
        with self._lock:
            return list(self._calls)

    @property
    def mutating_calls(self) -> list[AwsCall]:
        return [call for call in self.calls if call.mutating]


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


class AwsEmulator:
    """moto on loopback with IAM enforcement, EKS and NAT gateway latency, faults and a request log.

    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        eks_cluster_delay: float = 0.0,
        eks_nodegroup_delay: float = 0.0,
    ) -> None:
        self.region = region
        self.faults = Faults()
        self.request_log = RequestLog()
        self._host, self._port = host, port
        self._server: Any = None
        self._admin: AdminCredentials | None = None
        self._kept_users = [ADMIN_USER_NAME]
        self._customer_keys: dict[str, AdminCredentials] = {}
        self.set_eks_delays(cluster_seconds=eks_cluster_delay, nodegroup_seconds=eks_nodegroup_delay)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> AwsEmulator:
        apply_moto_patches()
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
        self._server.start()
        # No client knows the port before start() returns, so swapping the WSGI app here is race-free.
        self._server._server.app = self._wrap(self._server._server.app)
        self._admin = self._bootstrap_admin()
        self._set_enforcement(True)
        self.request_log.clear()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> AwsEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Wipe all moto state but keep the admin and customer users (same keys and policies),
        enforcement and the EKS and EC2 delays."""
        from moto.iam.models import iam_backends
        from moto.utilities.utils import get_partition

        partition = get_partition(self.region)
        users = [iam_backends[self.account_id][partition].users[name] for name in self._kept_users]
        self._post("/moto-api/reset", b"")
        # Re-inserting the same user objects keeps their access keys, so Connections built earlier stay valid.
        iam = iam_backends[self.account_id][partition]
        for user in users:
            iam.users[user.name] = user
            for key in user.access_keys:
                iam.access_keys[key.physical_resource_id] = key
        self.faults.clear()
        self.request_log.clear()

    # -- facts -----------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("AwsEmulator is not running; call start() first")
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def account_id(self) -> str:
        from moto.core import DEFAULT_ACCOUNT_ID

        return str(DEFAULT_ACCOUNT_ID)

    @property
    def admin_credentials(self) -> AdminCredentials:
        if self._admin is None:
            raise RuntimeError("AwsEmulator is not running; call start() first")
        return self._admin

    def info(self) -> dict[str, Any]:
        # Local fake credentials: handed out so a sandbox running in another process can be used.
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "account_id": self.account_id,
            "admin_credentials": asdict(self.admin_credentials),
        }

    # -- clients and Airflow connections ---------------------------------------------------

    def admin_client(self, service: str, **kwargs: Any) -> Any:
        creds = self.admin_credentials
        return boto3.client(
            service,
            **{"endpoint_url": self.endpoint_url, "region_name": self.region, **kwargs},
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
        )

    def aws_connection(self) -> dict[str, Any]:
        """Management-side Airflow Connection (admin keys), as a dict for `AIRFLOW_CONN_<ID>`."""
        return self.key_connection(self.admin_credentials)

    def customer_user(self, name: str, policy: dict[str, Any]) -> AdminCredentials:
        """An IAM user the customer brings (on-prem agents' keys) with one inline policy; kept by ``reset()``.

        Created once: later calls return the same keys, with the policy put again.
        """
        iam = self.admin_client("iam")
        if name not in self._kept_users:
            iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="agents", PolicyDocument=json.dumps(policy))
        if name not in self._kept_users:
            key = iam.create_access_key(UserName=name)["AccessKey"]
            self._kept_users.append(name)
            self._customer_keys[name] = AdminCredentials(key["AccessKeyId"], key["SecretAccessKey"])
        return self._customer_keys[name]

    def key_connection(self, credentials: AdminCredentials) -> dict[str, Any]:
        """An Airflow AWS Connection holding a user's keys, for `AIRFLOW_CONN_<ID>`."""
        return {
            "conn_type": "aws",
            "login": credentials.access_key_id,
            "password": credentials.secret_access_key,
            "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    def web_identity_connection(self, role_arn: str, token_file: str) -> dict[str, Any]:
        """Airflow Connection that assumes `role_arn` with the web identity token in `token_file`."""
        return {
            "conn_type": "aws",
            "extra": {
                "role_arn": role_arn,
                "assume_role_method": "assume_role_with_web_identity",
                "assume_role_with_web_identity_federation": "file",
                "assume_role_with_web_identity_token_file": token_file,
                "endpoint_url": self.endpoint_url,
                "region_name": self.region,
                # The amazon provider ignores the global endpoint_url for its assume-role STS client.
                "service_config": {"sts": {"endpoint_url": self.endpoint_url}},
            },
        }

    def irsa_env(self, role_arn: str, token_file: str, session_name: str = "sandbox-agent") -> dict[str, str]:
        """Pod environment of IRSA; the process must not also carry static AWS keys."""
        return {
            "AWS_ROLE_ARN": role_arn,
            "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
            "AWS_ROLE_SESSION_NAME": session_name,
            **self.endpoint_env(self.region),
        }

    def endpoint_env(self, region: str) -> dict[str, str]:
        """Where a process's boto3 reaches this emulator, in ``region``."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": region, "AWS_REGION": region}

    # -- runtime knobs ---------------------------------------------------------------------

    def seed_aws_managed_policies(self, names: Iterable[str]) -> None:
        """Put AWS managed policies into moto as AWS has them. moto loads them only all at once
        (MOTO_IAM_LOAD_MANAGED_POLICIES), which costs seconds on every reset; we need a handful."""
        from moto.iam.aws_managed_policies import aws_managed_policies_data
        from moto.iam.models import AWSManagedPolicy, iam_backends
        from moto.utilities.utils import get_partition

        data = json.loads(aws_managed_policies_data)
        backend = iam_backends[self.account_id][get_partition(self.region)]
        for name in names:
            policy = AWSManagedPolicy.from_data(name, self.account_id, self.region, data[name])
            backend.managed_policies[policy.arn] = policy

    def set_eks_endpoint(self, url: str | None) -> None:
        """Make every EKS cluster's endpoint `url` (the Kubernetes emulator); None restores moto's."""
        if url:
            _eks_endpoint["url"] = url
        else:
            _eks_endpoint.pop("url", None)

    def set_eks_delays(self, cluster_seconds: float | None = None, nodegroup_seconds: float | None = None) -> None:
        if cluster_seconds is not None:
            _eks_delays.cluster_seconds = float(cluster_seconds)
        if nodegroup_seconds is not None:
            _eks_delays.nodegroup_seconds = float(nodegroup_seconds)

    @property
    def eks_delays(self) -> EksDelays:
        return EksDelays(_eks_delays.cluster_seconds, _eks_delays.nodegroup_seconds)

    def set_ec2_delays(self, nat_gateway_deletion_seconds: float | None = None) -> None:
        if nat_gateway_deletion_seconds is not None:
            _ec2_delays.nat_gateway_deletion_seconds = float(nat_gateway_deletion_seconds)

    @property
    def ec2_delays(self) -> Ec2Delays:
        return Ec2Delays(_ec2_delays.nat_gateway_deletion_seconds)

    def throttle(self, service: str, action: str | None = None, count: int = 1) -> None:
        self.faults.throttle(service, action, count)

    def add_latency(self, service: str, seconds: float) -> None:
        self.faults.add_latency(service, seconds)

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- internals -------------------------------------------------------------------------

    def _bootstrap_admin(self) -> AdminCredentials:
        # Enforcement is still off, so any credentials are accepted for these three calls.
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName=ADMIN_USER_NAME)
        # AWS managed policies are not loaded in moto, hence an inline allow-all policy.
        admin_policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName=ADMIN_USER_NAME, PolicyName="admin", PolicyDocument=json.dumps(admin_policy))
        key = iam.create_access_key(UserName=ADMIN_USER_NAME)["AccessKey"]
        return AdminCredentials(key["AccessKeyId"], key["SecretAccessKey"])

    def _set_enforcement(self, enabled: bool) -> None:
        self._post("/moto-api/reset-auth", b"0" if enabled else b"inf")

    def _post(self, path: str, body: bytes) -> None:
        # text/plain: moto reads the raw body, which Flask leaves empty for form-encoded posts.
        request = urllib.request.Request(
            self.endpoint_url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request):
            pass

    def _wrap(self, moto_app: WsgiApp) -> WsgiApp:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path.startswith(ADMIN_PATH_PREFIX):
                return self._admin_app(environ, start_response)
            if path.startswith("/moto-api"):
                return moto_app(environ, start_response)
            call = identify_call(environ)
            self.request_log.append(call)
            time.sleep(self.faults.latency_for(call.service))
            if self.faults.take_throttle(call):
                _drain_body(environ)
                return throttling_response(call.service)(environ, start_response)
            return moto_app(environ, start_response)

        return app

    def _admin_app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            reply = self._admin_reply(request.method, request.path.removeprefix(ADMIN_PATH_PREFIX), request)
            response = Response(json.dumps(reply), content_type="application/json")
        except (KeyError, TypeError, ValueError) as error:
            response = Response(json.dumps({"message": f"bad request: {error}"}), 400, content_type="application/json")
        except HTTPException as error:
            response = Response(json.dumps({"message": error.description}), error.code, content_type="application/json")
        return response(environ, start_response)

    def _admin_reply(self, method: str, route: str, request: Request) -> dict[str, Any]:
        body = request.get_json(silent=True) or {}
        if (method, route) == ("GET", "info"):
            return self.info()
        if (method, route) == ("GET", "requests"):
            return {"calls": [asdict(call) for call in self.request_log.calls]}
        if (method, route) == ("DELETE", "requests"):
            self.request_log.clear()
        elif (method, route) == ("GET", "faults"):
            return self.faults.as_dict()
        elif (method, route) == ("DELETE", "faults"):
            self.clear_faults()
        elif (method, route) == ("POST", "faults/throttle"):
            self.throttle(body["service"], body.get("action"), int(body.get("count", 1)))
        elif (method, route) == ("POST", "faults/latency"):
            self.add_latency(body["service"], float(body["seconds"]))
        elif (method, route) == ("GET", "eks-delays"):
            return asdict(self.eks_delays)
        elif (method, route) == ("PUT", "eks-delays"):
            self.set_eks_delays(body.get("cluster_seconds"), body.get("nodegroup_seconds"))
            return asdict(self.eks_delays)
        elif (method, route) == ("GET", "ec2-delays"):
            return asdict(self.ec2_delays)
        elif (method, route) == ("PUT", "ec2-delays"):
            self.set_ec2_delays(body.get("nat_gateway_deletion_seconds"))
            return asdict(self.ec2_delays)
        elif (method, route) == ("POST", "reset"):
            self.reset()
        else:
            raise NotFound(f"no admin route {method} {ADMIN_PATH_PREFIX}{route}")
        return {"status": "ok"}


def _drain_body(environ: Environ) -> None:
    # An unread request body would be taken for the next request on a kept-alive connection.
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
