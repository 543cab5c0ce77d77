"""moto's IAM checks, decided by ``sandbox.iam_policy`` with the request context AWS would build.

moto 5.2 evaluates only ``StringEquals``, treats a context key missing from the request as a match,
never checks a web identity token against the role's trust policy, and checks EKS and EC2 calls
(and IAM calls on roles that do not exist yet) against resource ``"*"``. ``apply()`` replaces
that with AWS's evaluation (``iam_policy.evaluate``) of:

- identity policies (inline and attached, the user's groups' too) for every signed call, on the
  call's resource ARN, with the context keys of the request: ``s3:prefix``, ``s3:delimiter`` and
  ``s3:max-keys`` on ListObjects(V2), none on HeadBucket; ``aws:RequestTag/*`` and ``aws:TagKeys``
  on IAM, EKS, EC2 and Secrets Manager creates and tag calls; ``ec2:ResourceTag/*`` and
  ``aws:ResourceTag/*`` on EC2 resources and IAM roles that exist; ``iam:PolicyARN`` and
  ``iam:AWSServiceName`` where IAM defines them;
- the authorizations AWS makes as part of another call (``authorizations``):
  ``iam:PassRole`` with ``iam:PassedToService`` for the roles EKS is handed, and the tag-on-create
  permissions (``ec2:CreateTags`` with ``ec2:CreateAction``, ``eks:TagResource``, ``iam:TagRole``,
  ``iam:TagOpenIDConnectProvider``, ``secretsmanager:TagResource``);
- trust policies: ``sts:AssumeRole`` with the caller as ``AWS`` principal, and
  ``sts:AssumeRoleWithWebIdentity`` with the token's OIDC provider as ``Federated`` principal and
  ``<issuer>:sub`` / ``<issuer>:aud`` from its claims. The token must come from an OIDC provider the
  account registered, with an audience in its client id list, as AWS requires.

Where this is still more lenient than AWS, and why:
- a call is authorized on one resource; AWS also authorizes some creates on the resources they go
  into (CreateSubnet on the VPC). None of our policies grants a create on one and not the other.
- resource-based policies (bucket, key and secret policies) are not evaluated: this project
  renders none, and moto keeps them only as documents.
- SCPs, RCPs, session policies and permission boundaries are not modelled (``iam_policy``).
- a web identity token's signature is checked against the sandbox's own issuer key
  (``service_account_token``), not against a JWKS fetched from the issuer URL, which does not exist.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from moto.core.exceptions import AccessDeniedError, JsonRESTError, _RESTError

from sandbox.iam_policy import ContextValue, Decision, Request, evaluate

# moto's state is per process, and so is the key the sandbox's clusters sign ServiceAccount tokens with.
_ISSUER_KEY = secrets.token_hex(32)
_ISSUER_ALGORITHM = "HS256"
STS_AUDIENCE = "sts.amazonaws.com"
S3_LIST_KEYS = {"prefix": "s3:prefix", "delimiter": "s3:delimiter", "max-keys": "s3:max-keys"}
JSON_SERVICES = frozenset({"eks", "secretsmanager"})
EKS_PASSED_ROLES = {"CreateCluster": "roleArn", "CreateNodegroup": "nodeRole"}
# Tag-on-create: the action AWS also authorizes when a create carries tags.
TAG_ON_CREATE = {"ec2": "ec2:CreateTags", "eks": "eks:TagResource", "secretsmanager": "secretsmanager:TagResource"}
IAM_TAG_ON_CREATE = {"CreateRole": "iam:TagRole", "CreateOpenIDConnectProvider": "iam:TagOpenIDConnectProvider"}
EC2_RESOURCES = {
    "CreateVpc": ("vpc", None), "CreateSubnet": ("subnet", None), "CreateInternetGateway": ("internet-gateway", None),
    "AllocateAddress": ("elastic-ip", None), "CreateNatGateway": ("natgateway", None),
    "CreateRouteTable": ("route-table", None),
    "DescribeVpcAttribute": ("vpc", "VpcId"), "ModifyVpcAttribute": ("vpc", "VpcId"), "DeleteVpc": ("vpc", "VpcId"),
    "ModifySubnetAttribute": ("subnet", "SubnetId"), "DeleteSubnet": ("subnet", "SubnetId"),
    "AttachInternetGateway": ("internet-gateway", "InternetGatewayId"),
    "DetachInternetGateway": ("internet-gateway", "InternetGatewayId"),
    "DeleteInternetGateway": ("internet-gateway", "InternetGatewayId"),
    "CreateRoute": ("route-table", "RouteTableId"), "ReplaceRoute": ("route-table", "RouteTableId"),
    "AssociateRouteTable": ("route-table", "RouteTableId"), "DisassociateRouteTable": ("route-table", None),
    "DeleteRouteTable": ("route-table", "RouteTableId"),
    "DeleteNatGateway": ("natgateway", "NatGatewayId"), "ReleaseAddress": ("elastic-ip", "AllocationId"),
}


@dataclass(frozen=True)
class Authorization:
    """One (action, resource, context) that must be allowed for a call to go through."""

    action: str
    resource: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)


def service_account_token(issuer: str, namespace: str, service_account: str, lifetime: float = 86400.0) -> str:
    """A projected ServiceAccount token as an EKS cluster with that OIDC issuer signs it for IRSA."""
    now = int(time.time())
    claims = {
        "iss": issuer, "sub": f"system:serviceaccount:{namespace}:{service_account}", "aud": [STS_AUDIENCE],
        "iat": now, "nbf": now, "exp": now + int(lifetime),
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
    }
    return jwt.encode(claims, _ISSUER_KEY, algorithm=_ISSUER_ALGORITHM)


def apply() -> None:
    """Install the evaluation; called once per process by ``sandbox.aws.apply_moto_patches``."""
    _evaluate_signed_calls()
    _evaluate_web_identity_trust()
    _give_calls_their_resource_arns()


# -- signed calls ---------------------------------------------------------------------------------


def _evaluate_signed_calls() -> None:
    from moto.iam.access_control import IAMRequestBase, S3IAMRequest
    from moto.s3.exceptions import S3AccessDeniedError

    def check_action_permitted(self: Any, resource: str) -> None:
        if self._action == "sts:GetCallerIdentity":  # AWS answers it even under an explicit Deny
            return
        caller = self._access_key.arn
        policies = [_document(policy) for policy in self._access_key.collect_policies()]
        for needed in authorizations(self, resource):
            request = Request(needed.action, needed.resource, {"AWS": caller},
                              {**_global_context(caller), **needed.context})
            if evaluate(policies, request) is not Decision.ALLOW:
                if isinstance(self, S3IAMRequest):
                    raise S3AccessDeniedError()
                raise denial(self._service, caller, needed.action)
        if self._action == "sts:AssumeRole" and not _trusts(self.backend, resource, {"AWS": caller}, {}):
            raise AccessDeniedError(user_arn=caller, action=self._action)

    IAMRequestBase.check_action_permitted = check_action_permitted


def denial(service: str, caller: str, action: str) -> Exception:
    """The error each service answers a denied call with (HTTP 403), in its own protocol."""
    message = f"User: {caller} is not authorized to perform: {action}"
    if service in JSON_SERVICES:
        error: _RESTError = JsonRESTError("AccessDeniedException", message)
    elif service == "ec2":
        error = _RESTError("UnauthorizedOperation", f"You are not authorized to perform this operation. {message}")
    else:
        return AccessDeniedError(user_arn=caller, action=action)
    error.code = 403
    return error


def authorizations(call: Any, resource: str) -> Iterator[Authorization]:
    """What AWS authorizes for one moto request: the call's own action, then what it implies."""
    service, _, name = call._action.partition(":")
    params = _params(call)
    tags = _request_tags(service, name, params)
    context: dict[str, ContextValue] = {**_tag_context(tags), **_service_context(service, name, params, call, resource)}
    yield Authorization(call._action, resource, context)
    if tags and service in TAG_ON_CREATE and name.startswith("Create") and name != "CreateTags":
        extra = {"ec2:CreateAction": name} if service == "ec2" else {}
        yield Authorization(TAG_ON_CREATE[service], _created_resource(call, name, params, resource),
                            {**_tag_context(tags), **extra})
    if tags and service == "iam" and name in IAM_TAG_ON_CREATE:
        yield Authorization(IAM_TAG_ON_CREATE[name], resource, _tag_context(tags))
    if service == "eks" and name in EKS_PASSED_ROLES and params.get(EKS_PASSED_ROLES[name]):
        yield Authorization("iam:PassRole", str(params[EKS_PASSED_ROLES[name]]), {"iam:PassedToService": "eks.amazonaws.com"})


def _created_resource(call: Any, name: str, params: Mapping[str, Any], resource: str) -> str:
    """The ARN a create will have, which tag-on-create is authorized on (an EKS cluster's is known by name)."""
    if call._service == "eks" and name == "CreateCluster" and params.get("name"):
        return f"arn:{_partition(call._region)}:eks:{call._region}:{call.account_id}:cluster/{params['name']}"
    return resource


def _params(call: Any) -> dict[str, Any]:
    """The request's parameters: query string, form fields or JSON body, one value per name."""
    params: dict[str, Any] = {name: values[0] for name, values in parse_qs(urlsplit(call._path).query).items()}
    data = call._data
    if isinstance(data, Mapping):
        params.update({name: value[0] if isinstance(value, list) and len(value) == 1 else value
                       for name, value in data.items()})
    if call._body and (call._headers.get("Content-Type") or "").startswith(("application/json", "application/x-amz-json")):
        try:
            body = json.loads(call._body)
        except ValueError:
            body = None
        if isinstance(body, Mapping):
            params.update(body)
    return params


def _request_tags(service: str, name: str, params: Mapping[str, Any]) -> dict[str, str]:
    if service in ("iam", "ec2"):
        # IAM: Tags.member.N.Key; EC2: TagSpecification.N.Tag.M.Key (creates) and Tag.N.Key (CreateTags).
        keys = {k: v for k, v in params.items() if k.endswith(".Key") and k.startswith(("Tags.member.", "TagSpecification.", "Tag."))}
        return {str(value): str(params.get(f"{key[:-4]}.Value", "")) for key, value in keys.items()}
    if service == "eks" and isinstance(params.get("tags"), Mapping):
        return {str(k): str(v) for k, v in params["tags"].items()}
    if service == "secretsmanager" and isinstance(params.get("Tags"), list):
        return {str(tag["Key"]): str(tag.get("Value", "")) for tag in params["Tags"]}
    return {}


def _tag_context(tags: Mapping[str, str]) -> dict[str, ContextValue]:
    if not tags:
        return {}
    return {**{f"aws:RequestTag/{key}": value for key, value in tags.items()}, "aws:TagKeys": sorted(tags)}


def _service_context(service: str, name: str, params: Mapping[str, Any], call: Any, resource: str) -> dict[str, ContextValue]:
    if service == "s3" and name == "ListBucket":
        return {key: str(params[param]) for param, key in S3_LIST_KEYS.items() if param in params}
    if service == "iam":
        context: dict[str, ContextValue] = {}
        if params.get("PolicyArn"):
            context["iam:PolicyARN"] = str(params["PolicyArn"])
        if params.get("AWSServiceName"):
            context["iam:AWSServiceName"] = str(params["AWSServiceName"])
        return {**context, **_resource_tags(_role_tags(call.backend, resource))}
    if service == "ec2":
        tags = _ec2_tags(call.account_id, call._region, resource)
        return {**_resource_tags(tags), **{f"ec2:ResourceTag/{key}": value for key, value in tags.items()}}
    return {}


def _resource_tags(tags: Mapping[str, str]) -> dict[str, ContextValue]:
    return {f"aws:ResourceTag/{key}": value for key, value in tags.items()}


def _role_tags(backend: Any, resource: str) -> dict[str, str]:
    if ":role/" not in resource:
        return {}
    try:
        role = backend.get_role_by_arn(resource)
    except Exception:  # moto raises its own NotFound types; a role that does not exist has no tags
        return {}
    return {str(tag["Key"]): str(tag["Value"]) for tag in role.tags.values()} if isinstance(role.tags, dict) else {}


def _ec2_tags(account_id: str, region: str, resource: str) -> dict[str, str]:
    from moto.ec2.models import ec2_backends

    resource_id = resource.rsplit("/", 1)[-1]
    if resource_id in ("", "*"):
        return {}
    return dict(ec2_backends[account_id][region].tags.get(resource_id) or {})


def _global_context(caller: str) -> dict[str, ContextValue]:
    now = time.time()
    return {
        "aws:PrincipalArn": caller,
        "aws:PrincipalAccount": caller.split(":")[4],
        "aws:CurrentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "aws:EpochTime": str(int(now)),
    }


def _document(policy: Any) -> dict[str, Any]:
    from moto.iam.access_control import IAMPolicy

    return dict(IAMPolicy(policy)._policy_json)


def _trusts(backend: Any, role_arn: str, principal: Mapping[str, str], context: Mapping[str, ContextValue],
            action: str = "sts:AssumeRole") -> bool:
    try:
        role = backend.get_role_by_arn(role_arn)
    except Exception:  # moto's NotFound: AWS answers AccessDenied for a role that does not exist
        return False
    trust = json.loads(role.assume_role_policy_document)
    return evaluate([trust], Request(action, role_arn, principal, context)) is Decision.ALLOW


# -- web identity ---------------------------------------------------------------------------------



class WebIdentityDenied(AccessDeniedError):
    """AWS's answer (HTTP 403) to a token that the role's trust policy does not allow."""

    def __init__(self) -> None:
        _RESTError.__init__(self, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")



def _evaluate_web_identity_trust() -> None:
    from moto.iam.models import iam_backends
    from moto.sts.exceptions import STSClientError
    from moto.sts.responses import TokenResponse
    from moto.utilities.utils import get_partition

    original = TokenResponse.assume_role_with_web_identity

    def assume_role_with_web_identity(self: Any) -> Any:
        iam = iam_backends[self.current_account][get_partition(self.region)]
        claims = _claims(self._get_param("WebIdentityToken") or "", STSClientError)
        issuer = str(claims.get("iss", "")).removeprefix("https://")
        provider = next((p for p in iam.open_id_providers.values() if p.url == issuer), None)
        if provider is None:
            raise STSClientError("InvalidIdentityToken", f"No OpenIDConnect provider found in your account for {claims.get('iss')}")
        audiences = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
        if not set(map(str, audiences)) & set(provider.client_id_list):
            raise STSClientError("InvalidIdentityToken", "Incorrect token audience")
        context = {f"{issuer}:sub": str(claims.get("sub", "")), f"{issuer}:aud": [str(a) for a in audiences],
                   "aws:FederatedProvider": provider.arn}
        if not _trusts(iam, self._get_param("RoleArn") or "", {"Federated": provider.arn}, context,
                       "sts:AssumeRoleWithWebIdentity"):
            raise WebIdentityDenied()
        return original(self)

    TokenResponse.assume_role_with_web_identity = assume_role_with_web_identity


def _claims(token: str, error: Callable[..., Exception]) -> dict[str, Any]:
    try:
        return dict(jwt.decode(token, _ISSUER_KEY, algorithms=[_ISSUER_ALGORITHM], options={"verify_aud": False}))
    except jwt.ExpiredSignatureError as expired:
        raise error("ExpiredTokenException", "Token expired") from expired
    except jwt.InvalidTokenError as invalid:
        raise error("InvalidIdentityToken", f"The web identity token is not valid: {invalid}") from invalid


# -- resources ------------------------------------------------------------------------------------


def _give_calls_their_resource_arns() -> None:
    from moto.ec2.responses import EC2Response
    from moto.eks.responses import EKSResponse
    from moto.iam.responses import IamResponse

    EKSResponse._determine_resource = _eks_resource
    EC2Response._determine_resource = _ec2_resource
    IamResponse._determine_resource = _iam_resource


def _eks_resource(self: Any) -> str:
    # /clusters/<name>[/node-groups[/<group>]]; creating or listing clusters has no resource.
    parts = [part for part in self.path.split("/") if part]
    arn = f"arn:{_partition(self.region)}:eks:{self.region}:{self.current_account}:"
    if len(parts) >= 4 and parts[2] == "node-groups":
        return f"{arn}nodegroup/{parts[1]}/{parts[3]}/{_nodegroup_id(self, parts[1], parts[3])}"
    return f"{arn}cluster/{parts[1]}" if len(parts) >= 2 else "*"


def _nodegroup_id(self: Any, cluster: str, nodegroup: str) -> str:
    # A node group's ARN ends in an id EKS generates; moto keeps it in the ARN it made.
    found = getattr(self.eks_backend, "clusters", {}).get(cluster)
    group = (found.nodegroups if found else {}).get(nodegroup)
    return str(group.arn).rsplit("/", 1)[-1] if group is not None else "new"


def _ec2_resource(self: Any) -> str:
    kind, param = EC2_RESOURCES.get(self._get_action(), (None, None))
    if kind is None:
        return "*"  # Describe*: EC2 has no resource-level permissions for them
    resource_id = (self._get_param(param) if param else _route_table_of(self)) or "*"
    return f"arn:{_partition(self.region)}:ec2:{self.region}:{self.current_account}:{kind}/{resource_id}"


def _route_table_of(self: Any) -> str | None:
    # DisassociateRouteTable names an association; IAM authorizes it on the route table that holds it.
    association = self._get_param("AssociationId")
    tables = self.ec2_backend.route_tables.values() if association else []
    return next((table.id for table in tables if association in table._associations), None)


def _iam_resource(self: Any) -> str:
    account = f"arn:{_partition(self.region)}:iam::{self.current_account}:"
    # Instance-profile calls name a role too, but IAM authorizes them on the profile.
    if profile := self._get_param("InstanceProfileName"):
        return f"{account}instance-profile/{profile}"
    if role := self._get_param("RoleName"):
        return f"{account}role/{role}"
    if provider := self._get_param("OpenIDConnectProviderArn"):
        return str(provider)
    if url := self._get_param("Url"):
        return f"{account}oidc-provider/{url.removeprefix('https://')}"
    return "*"


def _partition(region: str) -> str:
    from moto.utilities.utils import get_partition

    return str(get_partition(region))
