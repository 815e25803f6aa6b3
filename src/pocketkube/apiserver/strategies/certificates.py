"""certificates.k8s.io/v1 CertificateSigningRequest, with its status and approval subresources.

The requesting user is recorded from the authenticated identity on create; the spec never changes after;
Approved/Denied conditions change only through /approval and the certificate only through /status.
The controller manager's csrsigning controller signs approved requests of the built-in signers
(controllers/csrsigning.py); other signers' certificates are written by their own clients.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import FieldGetter, Obj, Strategy

from ._access import as_dict, as_list, as_str, spec_of

APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
LEGACY_UNKNOWN_SIGNER = "kubernetes.io/legacy-unknown"
MIN_EXPIRATION_SECONDS = 600
KEY_USAGES = sorted([
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth",
    "client auth", "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel",
    "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
])
_DNS1123_SUBDOMAIN_MAX, _DNS1123_LABEL_MAX = 253, 63
_MAX_SIGNER_NAME = _DNS1123_SUBDOMAIN_MAX + (_DNS1123_SUBDOMAIN_MAX + _DNS1123_LABEL_MAX + 1) + 1
_PEM_BLOCK = re.compile(rb"-----BEGIN ([^-\r\n]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


# --- the request and the certificate ----------------------------------------------------------------

def _pem_blocks(data: bytes) -> list[tuple[str, bytes, bool]]:
    """(type, DER bytes, has headers) of each PEM block, as encoding/pem.Decode reads them in turn."""
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        # Headers ("Proc-Type: ...") come first and end at a blank line.
        head, blank, rest = match.group(2).partition(b"\n\n")
        has_headers = bool(blank) and b":" in head
        payload = rest if has_headers else match.group(2)
        try:
            der = base64.b64decode(b"".join(payload.split()), validate=True)
        except (binascii.Error, ValueError):
            break
        blocks.append((match.group(1).decode("latin-1"), der, has_headers))
    return blocks


def _bytes_field(value: Any) -> bytes:
    """A []byte field as sent in JSON (base64; the decoder has already checked the encoding)."""
    try:
        return base64.b64decode(as_str(value))
    except (binascii.Error, ValueError):
        return b""


def request_error(request: Any) -> str:
    """Why spec.request is not a signed PKCS#10 request in PEM form (certificates.ParseCSR), or ""."""
    blocks = _pem_blocks(_bytes_field(request))
    if not blocks or blocks[0][0] != "CERTIFICATE REQUEST":
        return "PEM block type must be CERTIFICATE REQUEST"
    try:
        csr = x509.load_der_x509_csr(blocks[0][1])
    except ValueError:
        return "x509: malformed certificate request"
    try:
        valid = csr.is_signature_valid
    except UnsupportedAlgorithm:
        return "x509: cannot verify signature: algorithm unimplemented"
    return "" if valid else "x509: signature verification failure"


def certificate_error(certificate: Any) -> str:
    """Why status.certificate is not one or more PEM certificates (validateCertificate), or ""."""
    data = _bytes_field(certificate)
    if not data:
        return ""
    blocks = _pem_blocks(data)
    for block_type, der, has_headers in blocks:
        if block_type != "CERTIFICATE":
            return f"only CERTIFICATE PEM blocks are allowed, found {v.go_quote(block_type)}"
        if has_headers:
            return "no PEM block headers are permitted"
        try:
            x509.load_der_x509_certificate(der)
        except ValueError:
            return "x509: malformed certificate"
    return "" if blocks else "must contain at least one CERTIFICATE PEM block"


def validate_signer_name(signer: str, path: str) -> list[Cause]:
    """ValidateSignerName: `<domain with a dot>/<path>`, each part made of DNS labels."""
    if not signer:
        return [v.required(path)]
    segments = signer.split("/")
    if len(segments) != 2:
        return [v.invalid_value(path, signer, "must be a fully qualified domain and path of the form "
                                              "'example.com/signer-name'")]
    domain, name_path = segments
    errs: list[Cause] = []
    if len(domain) > _DNS1123_SUBDOMAIN_MAX:
        errs.append(v.too_long(path, _DNS1123_SUBDOMAIN_MAX))
    labels = domain.split(".")
    for label in labels:
        problems = v.is_dns1123_label(label)
        if problems:
            errs.extend(v.invalid_value(path, domain, f"validating label {v.go_quote(label)}: {p}") for p in problems)
            break
    if len(labels) < 2:
        errs.append(v.invalid_value(path, domain, "should be a domain with at least two segments separated by dots"))
    for label in name_path.split("."):
        problems = v.is_dns1123_subdomain(label)
        if problems:
            errs.extend(v.invalid_value(path, name_path, f"validating label {v.go_quote(label)}: {p}")
                        for p in problems)
            break
    if len(signer) > _MAX_SIGNER_NAME:
        errs.append(v.too_long(path, _MAX_SIGNER_NAME))
    return errs


# --- validation ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Allowed:
    """What an update path may do (upstream's certificateValidationOptions): the subresource decides the
    first two; the rest tolerate problems an older object already had."""

    approval_conditions: bool = False
    set_certificate: bool = False
    legacy_signer: bool = False
    both_approved_and_denied: bool = False
    duplicate_condition_types: bool = False
    empty_condition_type: bool = False
    arbitrary_certificate: bool = False
    unknown_usages: bool = False
    duplicate_usages: bool = False


def _conditions(obj: Obj) -> list[Obj]:
    return [as_dict(c) for c in as_list(as_dict(obj.get("status")).get("conditions"))]


def _of_type(obj: Obj, condition_type: str) -> list[Obj]:
    return [c for c in _conditions(obj) if c.get("type") == condition_type]


def _allowed(new: Obj, old: Obj, **by_subresource: bool) -> _Allowed:
    """getValidationOptions: tolerate in an update what the stored object already got away with."""
    types = [as_str(c.get("type")) for c in _conditions(old)]
    usages = [as_str(u) for u in as_list(spec_of(old).get("usages"))]
    old_certificate = as_dict(old.get("status")).get("certificate")
    return _Allowed(
        legacy_signer=as_str(spec_of(old).get("signerName")) == LEGACY_UNKNOWN_SIGNER,
        both_approved_and_denied=APPROVED in types and DENIED in types,
        duplicate_condition_types=len(set(types)) != len(types),
        empty_condition_type="" in types,
        arbitrary_certificate=(as_dict(new.get("status")).get("certificate") == old_certificate
                               or bool(certificate_error(old_certificate))),
        unknown_usages=any(u not in KEY_USAGES for u in usages),
        duplicate_usages=len(set(usages)) != len(usages),
        **by_subresource)


def _validate_usages(usages: list[Any], allowed: _Allowed) -> list[Cause]:
    errs = [] if usages else [v.required("spec.usages")]
    seen: set[str] = set()
    for i, usage in enumerate(usages):
        if not allowed.unknown_usages and usage not in KEY_USAGES:
            errs.append(v.not_supported(f"spec.usages[{i}]", usage, KEY_USAGES))
        if not allowed.duplicate_usages and usage in seen:
            errs.append(v.duplicate(f"spec.usages[{i}]", usage))
        seen.add(usage)
    return errs


def _validate_conditions(obj: Obj, allowed: _Allowed) -> list[Cause]:
    path = "status.conditions"
    errs: list[Cause] = []
    seen: set[str] = set()
    for i, condition in enumerate(_conditions(obj)):
        condition_type, status = as_str(condition.get("type")), as_str(condition.get("status"))
        if not allowed.empty_condition_type and not condition_type:
            errs.append(v.required(f"{path}[{i}].type"))
        statuses = ["True"] if condition_type in (APPROVED, DENIED, FAILED) else ["False", "True", "Unknown"]
        if not status:
            errs.append(v.required(f"{path}[{i}].status"))
        elif status not in statuses:
            errs.append(v.not_supported(f"{path}[{i}].status", status, statuses))
        other = {APPROVED: DENIED, DENIED: APPROVED}.get(condition_type)
        if not allowed.both_approved_and_denied and other in seen:
            errs.append(v.invalid_value(path, condition_type, "Approved and Denied conditions are mutually "
                                                              "exclusive"))
        if not allowed.duplicate_condition_types and condition_type in seen:
            errs.append(v.duplicate(f"{path}[{i}].type", condition_type))
        seen.add(condition_type)
    return errs


def _validate_csr(obj: Obj, allowed: _Allowed) -> list[Cause]:
    """validateCertificateSigningRequest."""
    spec = spec_of(obj)
    errs: list[Cause] = []
    problem = request_error(spec.get("request"))
    if problem:
        errs.append(v.invalid_value("spec.request", as_str(spec.get("request")), problem))
    errs += _validate_usages(as_list(spec.get("usages")), allowed)
    signer = as_str(spec.get("signerName"))
    if signer == LEGACY_UNKNOWN_SIGNER and not allowed.legacy_signer:
        errs.append(v.invalid_value("spec.signerName", signer, "the legacy signerName is not allowed via this API "
                                                               "version"))
    elif signer != LEGACY_UNKNOWN_SIGNER:
        errs += validate_signer_name(signer, "spec.signerName")
    expiration = spec.get("expirationSeconds")
    if isinstance(expiration, int) and expiration < MIN_EXPIRATION_SECONDS:
        errs.append(v.invalid_value("spec.expirationSeconds", expiration,
                                    "may not specify a duration less than 600 seconds (10 minutes)"))
    errs += _validate_conditions(obj, allowed)
    if not allowed.arbitrary_certificate:
        problem = certificate_error(as_dict(obj.get("status")).get("certificate"))
        if problem:
            errs.append(v.invalid_value("status.certificate", "<certificate data>", problem))
    return errs


def _validate_csr_update(new: Obj, old: Obj, allowed: _Allowed) -> list[Cause]:
    """validateCertificateSigningRequestUpdate: conditions are never removed, approval ones change only
    through /approval, and the certificate is set once, through /status."""
    errs = _validate_csr(new, allowed)
    for condition_type in (APPROVED, DENIED, FAILED):
        if len(_of_type(new, condition_type)) < len(_of_type(old, condition_type)):
            errs.append(v.forbidden("status.conditions", f'updates may not remove a condition of type '
                                                         f'"{condition_type}"'))
    if not allowed.approval_conditions:
        for condition_type in (APPROVED, DENIED):
            before, after = _of_type(old, condition_type), _of_type(new, condition_type)
            if len(after) > len(before):
                errs.append(v.forbidden("status.conditions", f'updates may not add a condition of type '
                                                             f'"{condition_type}"'))
            elif len(after) == len(before) and after != before:
                errs.append(v.forbidden("status.conditions", f'updates may not modify a condition of type '
                                                             f'"{condition_type}"'))
    new_certificate = as_dict(new.get("status")).get("certificate") or ""
    old_certificate = as_dict(old.get("status")).get("certificate") or ""
    if new_certificate != old_certificate:
        if not allowed.set_certificate:
            errs.append(v.forbidden("status.certificate", "updates may not set certificate content"))
        elif old_certificate:
            errs.append(v.forbidden("status.certificate", "updates may not modify existing certificate content"))
    return errs


# --- the strategy -------------------------------------------------------------------------------------

def _populate_condition_timestamps(new: Obj, old: Obj) -> None:
    """A condition without timestamps gets now, or the transition time of the same type and status before."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for condition in _conditions(new):
        if not condition.get("lastUpdateTime"):
            condition["lastUpdateTime"] = now
        if not condition.get("lastTransitionTime"):
            earlier = [c.get("lastTransitionTime") for c in _conditions(old) if c.get("lastTransitionTime")
                       and (c.get("type"), c.get("status")) == (condition.get("type"), condition.get("status"))]
            condition["lastTransitionTime"] = earlier[0] if earlier else now


def _preserve_conditions(new: Obj, old: Obj, condition_type: str) -> None:
    """Put back the stored instances of a condition type, unless the update added or removed some (which
    validation then refuses)."""
    old_indices = [i for i, c in enumerate(_conditions(old)) if c.get("type") == condition_type]
    new_indices = [i for i, c in enumerate(_conditions(new)) if c.get("type") == condition_type]
    if len(old_indices) != len(new_indices):
        return
    conditions = new["status"]["conditions"]
    for old_index, new_index in zip(old_indices, new_indices, strict=True):
        conditions[new_index] = old["status"]["conditions"][old_index]


def _signer_name(obj: Obj) -> str:
    return as_str(spec_of(obj).get("signerName"))


class CertificateSigningRequestStrategy(Strategy):
    name_validator = "any"  # upstream does not care what requests are called
    own_subresources = frozenset({"approval"})

    def field_getters(self) -> dict[str, FieldGetter]:
        return {**super().field_getters(), "spec.signerName": _signer_name}

    def record_requester(self, obj: Obj, user: Any) -> None:
        spec = obj.setdefault("spec", {})
        for key in ("username", "uid", "groups", "extra"):
            spec.pop(key, None)
        if user is None:
            return
        if user.name:
            spec["username"] = user.name
        if user.uid:
            spec["uid"] = user.uid
        if user.groups:
            spec["groups"] = list(user.groups)

    def validate(self, obj: Obj) -> list[Cause]:
        return _validate_csr(obj, _Allowed())

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        """Requests are immutable after creation except through their subresources."""
        super().prepare_for_update(new, old)
        _keep_spec(new, old)

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return _validate_csr_update(new, old, _allowed(new, old))

    def prepare_for_status_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_status_update(new, old)
        if _conditions(new):
            _preserve_conditions(new, old, APPROVED)
            _preserve_conditions(new, old, DENIED)
            _populate_condition_timestamps(new, old)

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        return _validate_csr_update(new, old, _allowed(new, old, set_certificate=True))

    def prepare_for_subresource_update(self, subresource: str, new: Obj, old: Obj) -> None:
        """/approval changes the conditions only (metadata aside, as upstream)."""
        _populate_condition_timestamps(new, old)
        conditions = _conditions(new)
        _keep_spec(new, old)
        status = dict(as_dict(old.get("status")))
        if conditions:
            status["conditions"] = conditions
        else:
            status.pop("conditions", None)
        new["status"] = status

    def validate_subresource_update(self, subresource: str, new: Obj, old: Obj) -> list[Cause]:
        return _validate_csr_update(new, old, _allowed(new, old, approval_conditions=True))


def _keep_spec(new: Obj, old: Obj) -> None:
    if "spec" in old:
        new["spec"] = old["spec"]
    else:
        new.pop("spec", None)
