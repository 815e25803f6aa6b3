"""The review APIs: create-only resources that answer a question instead of storing an object.

authentication.k8s.io: TokenReview (who does this bearer token name?) and SelfSubjectReview (who am I?,
`kubectl auth whoami`). authorization.k8s.io: SubjectAccessReview, SelfSubjectAccessReview,
LocalSubjectAccessReview (may this user do that?, `kubectl auth can-i`) and SelfSubjectRulesReview
(`kubectl auth can-i --list`).

Until RBAC lands every authenticated user may do anything (upstream's AlwaysAllow authorizer), so access
reviews are allowed and a rules review lists the wildcard rules that authorizer reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pocketkube.api import errors
from pocketkube.api.errors import Cause
from pocketkube.apiserver.authn import Authenticator, UserInfo
from pocketkube.apiserver.registry import now_rfc3339

Obj = dict[str, Any]
AUTHENTICATION = "authentication.k8s.io"
AUTHORIZATION = "authorization.k8s.io"


@dataclass(frozen=True)
class ReviewRequest:
    kind: str
    namespace: str  # the URL's namespace (LocalSubjectAccessReview only)
    user: UserInfo  # who sent the review
    authenticator: Authenticator


def _self_subject_review(obj: Obj, request: ReviewRequest) -> Obj:
    return {**obj, "metadata": {**obj.get("metadata", {}), "creationTimestamp": now_rfc3339()},
            "status": {"userInfo": request.user.as_api()}}


def _token_review(obj: Obj, request: ReviewRequest) -> Obj:
    spec = obj.get("spec") or {}
    token = spec.get("token", "")
    if not token:
        raise errors.bad_request(f"token is required for TokenReview in {AUTHENTICATION}")
    wanted = tuple(spec.get("audiences") or ())
    user, audiences = request.authenticator.authenticate_token(token, wanted)
    status: Obj = {"user": {}}
    if user is None:
        if wanted:
            status["error"] = f"token audiences are invalid for the target audiences {list(wanted)}"
    else:
        status.update(authenticated=True, user=user.as_api(), audiences=list(audiences))
    return {**obj, "status": status}


def _check_empty_metadata(obj: Obj, request: ReviewRequest, allowed: tuple[str, ...] = ()) -> None:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in allowed}
    if meta:
        raise errors.invalid(request.kind, "", AUTHORIZATION,
                             [Cause("metadata", f"Invalid value: {meta}: must be empty")])


def _attribute_causes(spec: Obj) -> list[Cause]:
    """ValidateSubjectAccessReviewSpec's rule: exactly one of resourceAttributes and nonResourceAttributes."""
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if resource is not None and non_resource is not None:
        return [Cause("spec.nonResourceAttributes", f"Invalid value: {non_resource}: cannot be specified in "
                      "combination with resourceAttributes")]
    if resource is None and non_resource is None:
        return [Cause("spec.resourceAttributes", "Invalid value: \"null\": exactly one of nonResourceAttributes "
                      "or resourceAttributes must be specified")]
    return []


def _allowed(obj: Obj, spec: Obj) -> Obj:
    return {**obj, "spec": spec, "status": {"allowed": True}}


def _subject_access_review(obj: Obj, request: ReviewRequest) -> Obj:
    spec = obj.get("spec") or {}
    _check_empty_metadata(obj, request)
    causes = _attribute_causes(spec)
    if not spec.get("user") and not spec.get("groups"):
        causes.append(Cause("spec.user", 'Invalid value: "": at least one of user or group must be specified'))
    if causes:
        raise errors.invalid(request.kind, "", AUTHORIZATION, causes)
    return _allowed(obj, spec)


def _self_subject_access_review(obj: Obj, request: ReviewRequest) -> Obj:
    spec = obj.get("spec") or {}
    _check_empty_metadata(obj, request)
    causes = _attribute_causes(spec)
    if causes:
        raise errors.invalid(request.kind, "", AUTHORIZATION, causes)
    user = request.user
    # The server answers for the caller: the spec names whoever sent it, whatever it said.
    spec = {**spec, "user": user.name, "groups": list(user.groups)}
    if user.uid:
        spec["uid"] = user.uid
    return _allowed(obj, {k: v for k, v in spec.items() if v})


def _local_subject_access_review(obj: Obj, request: ReviewRequest) -> Obj:
    spec = obj.get("spec") or {}
    _check_empty_metadata(obj, request, allowed=("namespace",))
    causes = []
    if spec.get("nonResourceAttributes") is not None:
        causes.append(Cause("spec.nonResourceAttributes", f"Invalid value: {spec['nonResourceAttributes']}: "
                            "disallowed on this kind of request"))
    elif spec.get("resourceAttributes") is None:
        causes.append(Cause("spec.resourceAttributes", 'Invalid value: "null": must be specified'))
    if not spec.get("user") and not spec.get("groups"):
        causes.append(Cause("spec.user", 'Invalid value: "": at least one of user or group must be specified'))
    if causes:
        raise errors.invalid(request.kind, "", AUTHORIZATION, causes)
    attributes = dict(spec["resourceAttributes"])
    if attributes.setdefault("namespace", request.namespace) != request.namespace:
        raise errors.bad_request(f"spec.resourceAttributes.namespace must match namespace: {request.namespace}")
    metadata = {**obj.get("metadata", {}), "namespace": request.namespace}
    return _allowed({**obj, "metadata": metadata}, {**spec, "resourceAttributes": attributes})


def _self_subject_rules_review(obj: Obj, request: ReviewRequest) -> Obj:
    # AlwaysAllow's RulesFor: everything, everywhere.
    return {**obj, "status": {
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "incomplete": False,
    }}


Review = Callable[[Obj, ReviewRequest], Obj]
REVIEWS: dict[tuple[str, str], Review] = {
    (AUTHENTICATION, "SelfSubjectReview"): _self_subject_review,
    (AUTHENTICATION, "TokenReview"): _token_review,
    (AUTHORIZATION, "SubjectAccessReview"): _subject_access_review,
    (AUTHORIZATION, "SelfSubjectAccessReview"): _self_subject_access_review,
    (AUTHORIZATION, "LocalSubjectAccessReview"): _local_subject_access_review,
    (AUTHORIZATION, "SelfSubjectRulesReview"): _self_subject_rules_review,
}
