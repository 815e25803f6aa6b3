"""Field validation messages and ObjectMeta rules, compared with upstream's text."""

from __future__ import annotations

import pytest

from pocketkube.api.errors import Cause, invalid
from pocketkube.api.validation import (
    duplicate,
    forbidden,
    go_quote,
    invalid_value,
    is_c_identifier,
    is_config_map_key,
    is_decimal_integer,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_env_var_name,
    is_label_value,
    is_path_segment_name,
    is_qualified_name,
    is_valid_cidr,
    is_valid_ip,
    is_valid_percent,
    is_valid_port_name,
    is_valid_port_num,
    is_wildcard_dns1123_subdomain,
    not_supported,
    required,
    too_long,
    validate_object_meta,
    validate_object_meta_update,
)

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


# ---- Cause constructors render like field.Error.ErrorBody() ----

def test_cause_constructors() -> None:
    assert required("metadata.name", "name or generateName is required") == Cause(
        "metadata.name", "Required value: name or generateName is required", "FieldValueRequired")
    assert required("metadata.namespace") == Cause("metadata.namespace", "Required value", "FieldValueRequired")
    assert invalid_value("spec.replicas", -1, "must be greater than or equal to 0").message == \
        "Invalid value: -1: must be greater than or equal to 0"
    assert invalid_value("a", True, "x").message == "Invalid value: true: x"
    assert invalid_value("a", None, "x").message == "Invalid value: null: x"
    assert invalid_value("a", ["x", "y"], "d").message == 'Invalid value: ["x","y"]: d'
    assert invalid_value("a", {"k": "<v>"}, "d").message == 'Invalid value: {"k":"\\u003cv\\u003e"}: d'
    assert invalid_value("a", 'say "hi"\n\x07', "d").message == r'Invalid value: "say \"hi\"\n\a": d'
    assert not_supported("spec.restartPolicy", "Sometimes", ["Always", "OnFailure", "Never"]) == Cause(
        "spec.restartPolicy", 'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"',
        "FieldValueNotSupported")
    assert too_long("metadata.annotations", 262144) == Cause(
        "metadata.annotations", "Too long: may not be more than 262144 bytes", "FieldValueTooLong")
    assert too_long("x", 1).message == "Too long: may not be more than 1 byte"
    assert forbidden("metadata.namespace", "not allowed on this type") == Cause(
        "metadata.namespace", "Forbidden: not allowed on this type", "FieldValueForbidden")
    assert duplicate("spec.ports[1].name", "http") == Cause(
        "spec.ports[1].name", 'Duplicate value: "http"', "FieldValueDuplicate")


def test_go_quote() -> None:
    assert go_quote("plain") == '"plain"'
    assert go_quote("tab\there") == r'"tab\there"'
    assert go_quote("\x00\x1f") == r'"\x00\x1f"'
    assert go_quote("é\u200b") == '"é\\u200b"'


def test_422_message_through_errors_invalid() -> None:
    err = invalid("ConfigMap", "Foo_", "", validate_object_meta({"name": "Foo_", "namespace": "default"}, True))
    assert err.code == 422
    assert err.message == f'ConfigMap "Foo_" is invalid: metadata.name: Invalid value: "Foo_": {SUBDOMAIN_MSG}'


# ---- string checks ----

@pytest.mark.parametrize("value", ["a", "ab", "a-b", "0", "a.b", "a--b.c-d", "1.2.3", "a" * 253,
                                   ".".join(["a" * 63] * 3) + "." + "a" * 61])
def test_dns1123_subdomain_good(value: str) -> None:
    assert is_dns1123_subdomain(value) == []


@pytest.mark.parametrize("value", ["", "A", "-a", "a-", "a..b", ".a", "a_b", "a b", "a\n", "é"])
def test_dns1123_subdomain_bad(value: str) -> None:
    assert is_dns1123_subdomain(value) == [SUBDOMAIN_MSG]


def test_dns1123_subdomain_too_long() -> None:
    assert is_dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]


def test_dns1123_label() -> None:
    assert is_dns1123_label("my-name") == []
    assert is_dns1123_label("a.b") == ["must not contain dots"]
    assert is_dns1123_label("My") == [LABEL_MSG]
    assert is_dns1123_label("a" * 64) == ["must be no more than 63 characters"]
    assert is_dns1123_label("-" * 64) == ["must be no more than 63 characters", LABEL_MSG]


def test_dns1035_label() -> None:
    assert is_dns1035_label("my-svc") == []
    assert is_dns1035_label("1abc") == [DNS1035_MSG]
    assert is_dns1035_label("a" * 64) == ["must be no more than 63 characters"]


def test_wildcard_subdomain() -> None:
    assert is_wildcard_dns1123_subdomain("*.example.com") == []
    assert len(is_wildcard_dns1123_subdomain("example.com")) == 1


@pytest.mark.parametrize("value", ["simple", "now-with-dashes", "1-starts-with-num", "1234", "simple/simple",
                                   "now-with-dashes/simple", "1-num.2-num/3-num", "UPPERCASE", "a.b_c-d",
                                   "example.com/" + "a" * 63, "a" * 253 + "/b"])
def test_qualified_name_good(value: str) -> None:
    assert is_qualified_name(value) == []


def test_qualified_name_bad() -> None:
    assert is_qualified_name("-a") == [NAME_PART_MSG]
    assert is_qualified_name("") == ["name part must be non-empty", NAME_PART_MSG]
    assert is_qualified_name("/a") == ["prefix part must be non-empty"]
    assert is_qualified_name("a/") == ["name part must be non-empty", NAME_PART_MSG]
    assert is_qualified_name("a" * 64) == ["name part must be no more than 63 bytes"]
    assert is_qualified_name("Example.com/a") == ["prefix part " + SUBDOMAIN_MSG]
    assert is_qualified_name("a" * 254 + "/b") == ["prefix part must be no more than 253 bytes"]
    assert is_qualified_name("a/b/c")[0].startswith("a valid label key must consist of")


def test_label_value() -> None:
    assert is_label_value("") == []
    assert is_label_value("Some_Value.1") == []
    assert is_label_value("-x") == [LABEL_VALUE_MSG]
    assert is_label_value("a" * 64) == ["must be no more than 63 bytes"]


def test_misc_string_checks() -> None:
    assert is_c_identifier("_ok1") == []
    assert is_c_identifier("1bad") == [
        "a valid C identifier must start with alphabetic character or '_', followed by a string of alphanumeric "
        "characters or '_' (e.g. 'my_name',  or 'MY_NAME',  or 'MyName', regex used for validation is "
        "'[A-Za-z_][A-Za-z0-9_]*')"]
    assert is_env_var_name("my.env-name") == []
    assert is_env_var_name("..x") == ["must not start with '..'"]
    assert len(is_env_var_name("1x")) == 1
    assert is_config_map_key("key.name") == []
    assert is_config_map_key("..") == ["must not be '..'"]
    assert is_valid_percent("93%") == [] and len(is_valid_percent("93")) == 1
    assert is_valid_port_num(80) == [] and is_valid_port_num(0) == ["must be between 1 and 65535, inclusive"]
    assert is_path_segment_name("..") == ["may not be '..'"]
    assert is_path_segment_name("a/b%") == ["may not contain '/'", "may not contain '%'"]
    assert is_path_segment_name("system:admin") == []
    assert is_decimal_integer("0") == [] and is_decimal_integer("-12") == []
    assert is_decimal_integer("012") == ["must be a valid decimal integer in canonical form"]
    assert is_decimal_integer("") == ["must be non-empty"]


def test_port_name() -> None:
    assert is_valid_port_name("http") == []
    assert is_valid_port_name("a" * 16) == ["must be no more than 15 characters"]
    assert is_valid_port_name("HTTP") == [
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        "must contain at least one letter (a-z)"]
    assert is_valid_port_name("-a--b") == ["must not contain consecutive hyphens", "must not begin or end with a hyphen"]
    assert is_valid_port_name("123") == ["must contain at least one letter (a-z)"]


def test_ip_and_cidr() -> None:
    assert is_valid_ip("spec.ip", "10.9.8.7") == []
    assert is_valid_ip("spec.ip", "2001:db8::ffff") == []
    assert is_valid_ip("spec.ip", "nope") == [invalid_value(
        "spec.ip", "nope", "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    assert is_valid_ip("spec.ip", "010.1.1.1") == [invalid_value("spec.ip", "010.1.1.1", "must not have leading 0s")]
    assert is_valid_ip("spec.ip", "::ffff:1.2.3.4") == [
        invalid_value("spec.ip", "::ffff:1.2.3.4", "must not be an IPv4-mapped IPv6 address")]
    assert is_valid_ip("spec.ip", "2001:DB8::1") == [
        invalid_value("spec.ip", "2001:DB8::1", 'must be in canonical form ("2001:db8::1")')]
    assert len(is_valid_ip("spec.ip", "fe80::1%eth0")) == 1
    assert is_valid_cidr("c", "10.0.0.0/8") == []
    assert is_valid_cidr("c", "10.0.0.1/8") == [
        invalid_value("c", "10.0.0.1/8", "must not have bits set beyond the prefix length")]
    assert is_valid_cidr("c", "10.0.0.0/08") == [
        invalid_value("c", "10.0.0.0/08", "must not have leading 0s in IP or prefix length")]
    assert is_valid_cidr("c", "2001:DB8::/64") == [
        invalid_value("c", "2001:DB8::/64", 'must be in canonical form ("2001:db8::/64")')]
    assert len(is_valid_cidr("c", "10.0.0.0")) == 1 and len(is_valid_cidr("c", "10.0.0.0/33")) == 1


# ---- ObjectMeta on create ----

def _fields(causes: list[Cause]) -> list[tuple[str, str, str]]:
    return [(c.field, c.reason, c.message) for c in causes]


def test_valid_meta() -> None:
    meta = {
        "name": "web", "namespace": "default", "labels": {"app": "web", "example.com/tier": ""},
        "annotations": {"Example.COM/Note": "x"}, "finalizers": ["kubernetes", "example.com/cleanup"],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1",
                             "controller": True}],
        "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1"}],
    }
    assert validate_object_meta(meta, True) == []


def test_name_required_and_invalid() -> None:
    assert _fields(validate_object_meta({"namespace": "ns"}, True)) == [
        ("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")]
    assert _fields(validate_object_meta({"name": "Foo_", "namespace": "ns"}, True)) == [
        ("metadata.name", "FieldValueInvalid", f'Invalid value: "Foo_": {SUBDOMAIN_MSG}')]


def test_generate_name_gets_prefix_treatment() -> None:
    assert validate_object_meta({"generateName": "web-", "name": "web-x7k2p", "namespace": "ns"}, True) == []
    causes = validate_object_meta({"generateName": "Web-", "name": "web-abcde", "namespace": "ns"}, True)
    assert _fields(causes) == [("metadata.generateName", "FieldValueInvalid", f'Invalid value: "Web-": {SUBDOMAIN_MSG}')]


@pytest.mark.parametrize(("validator", "name", "message"), [
    ("dns1123label", "a.b", 'Invalid value: "a.b": must not contain dots'),
    ("dns1035label", "1svc", f'Invalid value: "1svc": {DNS1035_MSG}'),
    ("path segment", "..", 'Invalid value: "..": may not be \'..\''),
    ("path segment", "a/b", 'Invalid value: "a/b": may not contain \'/\''),
])
def test_name_validators(validator: str, name: str, message: str) -> None:
    causes = validate_object_meta({"name": name}, False, validator)
    assert [(c.field, c.message) for c in causes] == [("metadata.name", message)]


def test_name_validator_accepts_uppercase_path_segments_and_callables() -> None:
    assert validate_object_meta({"name": "system:Admin"}, False, "path segment") == []
    assert validate_object_meta({"name": "ANY thing"}, False, lambda n, p: []) == []
    with pytest.raises(ValueError):
        validate_object_meta({"name": "x"}, False, "bogus")


def test_namespace_rules() -> None:
    assert _fields(validate_object_meta({"name": "x"}, True)) == [
        ("metadata.namespace", "FieldValueRequired", "Required value")]
    assert _fields(validate_object_meta({"name": "x", "namespace": "kube.system"}, True)) == [
        ("metadata.namespace", "FieldValueInvalid", 'Invalid value: "kube.system": must not contain dots')]
    assert _fields(validate_object_meta({"name": "x", "namespace": "default"}, False)) == [
        ("metadata.namespace", "FieldValueForbidden", "Forbidden: not allowed on this type")]


def test_labels_are_reported_on_the_map() -> None:
    causes = validate_object_meta({"name": "x", "labels": {"-bad": "ok", "good": "not ok"}}, False)
    assert _fields(causes) == [
        ("metadata.labels", "FieldValueInvalid", f'Invalid value: "-bad": {NAME_PART_MSG}'),
        ("metadata.labels", "FieldValueInvalid", f'Invalid value: "not ok": {LABEL_VALUE_MSG}'),
    ]
    long_value = validate_object_meta({"name": "x", "labels": {"k": "v" * 64}}, False)
    assert long_value[0].message == f'Invalid value: "{"v" * 64}": must be no more than 63 bytes'


def test_annotations() -> None:
    causes = validate_object_meta({"name": "x", "annotations": {"a b": "v"}}, False)
    assert _fields(causes) == [("metadata.annotations", "FieldValueInvalid", f'Invalid value: "a b": {NAME_PART_MSG}')]
    at_limit = {"k": "v" * (262144 - 1)}
    assert validate_object_meta({"name": "x", "annotations": at_limit}, False) == []
    over = {"k": "v" * 262144}
    assert _fields(validate_object_meta({"name": "x", "annotations": over}, False)) == [
        ("metadata.annotations", "FieldValueTooLong", "Too long: may not be more than 262144 bytes")]


def test_finalizers() -> None:
    meta = {"name": "x", "finalizers": ["foregroundDeletion", "orphan", "custom", "bad name/x"]}
    assert _fields(validate_object_meta(meta, False)) == [
        ("metadata.finalizers", "FieldValueInvalid", 'Invalid value: "bad name/x": prefix part ' + SUBDOMAIN_MSG),
        ("metadata.finalizers", "FieldValueInvalid",
         'Invalid value: ["foregroundDeletion","orphan","custom","bad name/x"]: '
         "finalizer orphan and foregroundDeletion cannot be both set"),
        ("metadata.finalizers[2]", "FieldValueInvalid",
         'Invalid value: "custom": name is neither a standard finalizer name nor is it fully qualified'),
    ]
    # Custom resources skip core's standard-name rule.
    assert validate_object_meta({"name": "x", "finalizers": ["custom"]}, False, kube_finalizers=False) == []


def test_owner_references() -> None:
    refs = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": True},
        {"apiVersion": "a/b/c", "kind": "", "name": "", "uid": ""},
        {"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "2"},
        {"kind": "Deployment", "name": "b", "uid": "3", "controller": True},
    ]
    causes = validate_object_meta({"name": "x", "ownerReferences": refs}, False)
    assert _fields(causes) == [
        ("metadata.ownerReferences[1].apiVersion", "FieldValueInvalid",
         'Invalid value: "a/b/c": must be <group>/<version> or <version>'),
        ("metadata.ownerReferences[1].kind", "FieldValueRequired", "Required value: must not be empty"),
        ("metadata.ownerReferences[1].name", "FieldValueRequired", "Required value: must not be empty"),
        ("metadata.ownerReferences[1].uid", "FieldValueRequired", "Required value: must not be empty"),
        ("metadata.ownerReferences[2]", "FieldValueInvalid",
         'Invalid value: {"apiVersion":"v1","kind":"Event","name":"e","uid":"2"}: '
         "/v1, Kind=Event is disallowed from being an owner"),
        ("metadata.ownerReferences[3].apiVersion", "FieldValueRequired", "Required value: must not be empty"),
        ("metadata.ownerReferences", "FieldValueInvalid",
         'Invalid value: [{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"a","uid":"1","controller":true},'
         '{"apiVersion":"a/b/c","kind":"","name":"","uid":""},'
         '{"apiVersion":"v1","kind":"Event","name":"e","uid":"2"},'
         '{"apiVersion":"","kind":"Deployment","name":"b","uid":"3","controller":true}]: '
         'Only one reference can have Controller set to true. Found "true" in references for ReplicaSet/a and '
         "Deployment/b"),
    ]


def test_generation_and_managed_fields() -> None:
    meta = {"name": "x", "generation": -1,
            "managedFields": [{"manager": "m", "operation": "Patch", "fieldsType": "FieldsV2"},
                              {"manager": "a\x07", "operation": ""}]}
    assert _fields(validate_object_meta(meta, False)) == [
        ("metadata.generation", "FieldValueInvalid", "Invalid value: -1: must be greater than or equal to 0"),
        ("metadata.managedFields[0].operation", "FieldValueNotSupported",
         'Unsupported value: "Patch": supported values: "Apply", "Update"'),
        ("metadata.managedFields[0].fieldsType", "FieldValueInvalid", 'Invalid value: "FieldsV2": must be `FieldsV1`'),
        ("metadata.managedFields[1].operation", "FieldValueRequired", "Required value: must not be empty"),
        ("metadata.managedFields[1].manager", "FieldValueInvalid",
         'Invalid value: "a\\a": invalid character U+0007 (at position 1)'),
    ]


# ---- ObjectMeta on update ----

OLD = {"name": "x", "namespace": "ns", "uid": "u1", "resourceVersion": "5", "generation": 2,
       "creationTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["example.com/a"]}


def test_update_ok() -> None:
    new = dict(OLD, labels={"a": "b"}, generation=3, creationTimestamp="2024-01-01T00:00:00+00:00")
    assert validate_object_meta_update(new, OLD) == []


def test_update_immutable_fields() -> None:
    new = dict(OLD, name="y", namespace="other", uid="u2", creationTimestamp="2025-01-01T00:00:00Z",
               deletionGracePeriodSeconds=30)
    assert _fields(validate_object_meta_update(new, OLD)) == [
        ("metadata.name", "FieldValueInvalid", 'Invalid value: "y": field is immutable'),
        ("metadata.namespace", "FieldValueInvalid", 'Invalid value: "other": field is immutable'),
        ("metadata.uid", "FieldValueInvalid", 'Invalid value: "u2": field is immutable'),
        ("metadata.creationTimestamp", "FieldValueInvalid",
         'Invalid value: "2025-01-01T00:00:00Z": field is immutable'),
        ("metadata.deletionGracePeriodSeconds", "FieldValueInvalid", "Invalid value: 30: field is immutable"),
    ]


def test_update_resource_version_generation_and_labels() -> None:
    new = {k: v for k, v in OLD.items() if k != "resourceVersion"} | {"generation": 1, "labels": {"a": "-"}}
    assert _fields(validate_object_meta_update(new, OLD)) == [
        ("metadata.resourceVersion", "FieldValueInvalid", 'Invalid value: "": must be specified for an update'),
        ("metadata.generation", "FieldValueInvalid", "Invalid value: 1: must not be decremented"),
        ("metadata.labels", "FieldValueInvalid", f'Invalid value: "-": {LABEL_VALUE_MSG}'),
    ]


def test_update_no_new_finalizers_while_deleting() -> None:
    old = dict(OLD, deletionTimestamp="2024-02-01T00:00:00Z")
    new = dict(old, finalizers=["example.com/a", "example.com/c", "example.com/b"])
    assert _fields(validate_object_meta_update(new, old)) == [
        ("metadata.finalizers", "FieldValueForbidden",
         "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers "
         '[]string{"example.com/b", "example.com/c"}'),
    ]
    # Removing finalizers is always allowed; setting deletionTimestamp via update is not.
    assert validate_object_meta_update(dict(old, finalizers=[]), old) == []
    assert _fields(validate_object_meta_update(old, OLD)) == [
        ("metadata.deletionTimestamp", "FieldValueInvalid",
         'Invalid value: "2024-02-01T00:00:00Z": field is immutable')]


def test_update_checks_standard_finalizer_names() -> None:
    new = dict(OLD, finalizers=["nonstandard"])
    assert _fields(validate_object_meta_update(new, OLD)) == [
        ("metadata.finalizers[0]", "FieldValueInvalid",
         'Invalid value: "nonstandard": name is neither a standard finalizer name nor is it fully qualified')]
    assert validate_object_meta_update(new, OLD, kube_finalizers=False) == []
