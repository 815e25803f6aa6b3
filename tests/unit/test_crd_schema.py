"""CRD schemas: structural checks, object validation messages, pruning, defaulting, printer columns."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from pocketkube.api.kinds import CustomResource, ResourceInfo
from pocketkube.apiserver.crd.codec import storage_decoder
from pocketkube.apiserver.crd.columns import evaluate, go_format, printer_for
from pocketkube.apiserver.crd.resources import served_infos, storage_info, version_priority
from pocketkube.apiserver.crd.schema import (
    apply_defaults,
    has_defaults,
    prune,
    pruned,
    validate_crd_schema,
    validate_list_types,
    validate_value,
)
from pocketkube.apiserver.crd.strategy import default_crd, validate_crd
from pocketkube.apiserver.strategies.conversion import from_storage, to_storage

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["cronSpec"],
            "properties": {
                "cronSpec": {"type": "string", "pattern": r"^\d+$", "minLength": 2},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                "ratio": {"type": "number", "exclusiveMaximum": True, "maximum": 1.5, "multipleOf": 0.5},
                "color": {"type": "string", "enum": ["red", "green"]},
                "port": {"x-kubernetes-int-or-string": True},
                "when": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "maxItems": 2, "minItems": 1,
                         "items": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 3}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "nested": {"type": "object", "nullable": True,
                           "properties": {"mode": {"type": "string", "default": "auto"}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
}


def messages(value: object, schema: dict = SCHEMA) -> dict[str, str]:
    return {c.field: c.message for c in validate_value(schema, value)}


def obj(**spec: object) -> dict:
    return {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x"},
            "spec": {"cronSpec": "12", **spec}}


# --- validation of objects ------------------------------------------------------------------------

def test_a_valid_object_has_no_causes() -> None:
    assert validate_value(SCHEMA, obj(replicas=3, ratio=1.0, color="red", port="80%", when="2024-01-02T03:04:05Z",
                                      tags=[{"name": "a"}], labels={"a": "b"}, free={"x": [1, {"y": 2}]},
                                      template={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})) == []


def test_type_errors_read_as_upstream() -> None:
    got = messages(obj(replicas="string"))
    assert got == {"spec.replicas": 'Invalid value: "string": spec.replicas in body must be of type integer: '
                                    '"string"'}
    assert messages(obj(replicas=2.0)) == {}  # an integral number is an integer
    assert messages(obj(replicas=None)) == {
        "spec.replicas": 'Invalid value: "null": spec.replicas in body must be of type integer: "null"'}
    assert messages(obj(port=True)) == {
        "spec.port": 'Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"'}
    assert messages(obj(nested=None)) == {}  # nullable


def test_value_constraints() -> None:
    got = messages(obj(cronSpec="x", replicas=11, ratio=1.5, color="blue", when="yesterday",
                       tags=[{"name": "long"}, {}, {}], labels={"a": 1}))
    assert got["spec.cronSpec"] == 'Invalid value: "x": spec.cronSpec in body should match \'^\\d+$\''
    assert got["spec.replicas"] == "Invalid value: 11: spec.replicas in body should be less than or equal to 10"
    assert got["spec.ratio"] == "Invalid value: 1.5: spec.ratio in body should be less than 1.5"
    assert got["spec.color"] == 'Unsupported value: "blue": supported values: "red", "green"'
    assert got["spec.when"] == ('Invalid value: "yesterday": spec.when in body must be of type date-time: '
                                '"yesterday"')
    assert got["spec.tags"] == "Too many: 3: must have at most 2 items"
    assert got["spec.tags[0].name"] == "Too long: may not be more than 3 bytes"
    assert got["spec.labels.a"] == 'Invalid value: "integer": spec.labels.a in body must be of type string: "integer"'
    short = messages(obj(cronSpec="1", replicas=-1, ratio=0.7, tags=[]))
    assert short["spec.cronSpec"] == 'Invalid value: "1": spec.cronSpec in body should be at least 2 chars long'
    assert short["spec.replicas"] == ("Invalid value: -1: spec.replicas in body should be greater than or equal "
                                      "to 0")
    assert short["spec.ratio"] == "Invalid value: 0.7: spec.ratio in body should be a multiple of 0.5"
    assert short["spec.tags"] == "Invalid value: 0: spec.tags in body should have at least 1 items"


def test_required_and_reasons() -> None:
    causes = validate_value(SCHEMA, {"spec": {}})
    assert [(c.field, c.message, c.reason) for c in causes] == [
        ("spec.cronSpec", "Required value", "FieldValueRequired")]
    enum = validate_value(SCHEMA, obj(color="x"))
    assert enum[0].reason == "FieldValueNotSupported"


def test_embedded_resources_need_type_meta_and_valid_metadata() -> None:
    got = messages(obj(template={"metadata": {"name": "Bad Name", "labels": {"a": "-"}}}))
    assert got["spec.template.apiVersion"] == "Required value: must not be empty"
    assert got["spec.template.kind"] == "Required value: must not be empty"
    assert "spec.template.metadata.labels" in got


def test_junctors() -> None:
    schema = {"type": "object", "properties": {"v": {"type": "string", "anyOf": [{"pattern": "^a"},
                                                                               {"pattern": "^b"}]}}}
    assert messages({"v": "apple"}, schema) == {}
    got = validate_value(schema, {"v": "cherry"})
    assert got[0].message == 'Invalid value: "": v in body must validate at least one schema (anyOf)'
    not_schema = {"type": "object", "properties": {"v": {"type": "integer", "not": {"minimum": 5}}}}
    assert validate_value(not_schema, {"v": 7})[0].message.endswith("must not validate the schema (not)")


def test_sets_and_map_lists_refuse_duplicates() -> None:
    schema = {"type": "object", "properties": {
        "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "map": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}}}}
    causes = validate_list_types(schema, {"set": ["a", "b", "a"], "map": [{"name": "x", "v": 1}, {"name": "x"}]})
    assert [(c.field, c.message, c.reason) for c in causes] == [
        ("set[2]", 'Duplicate value: "a"', "FieldValueDuplicate"),
        ("map[1]", 'Duplicate value: {"name":"x"}', "FieldValueDuplicate")]
    assert validate_list_types(schema, {"set": ["a", "b"], "map": [{"name": "x"}, {"name": "y"}]}) == []


# --- pruning and defaulting ----------------------------------------------------------------------

def test_pruning_drops_unknown_fields_and_reports_their_paths() -> None:
    value = obj(unknown=1, tags=[{"name": "a", "x": 1}], labels={"k": "v"}, free={"any": {"thing": 1}},
                nested={"mode": "m", "junk": True}, template={"apiVersion": "v1", "kind": "Pod", "more": 1})
    value["status"] = {"s": 1}
    value["metadata"]["unknownMeta"] = 1  # metadata is ObjectMeta's business, not the schema's
    pruned = prune(SCHEMA, value)
    assert sorted(pruned) == ["spec.nested.junk", "spec.tags[0].x", "spec.unknown", "status"]
    assert value["spec"]["free"] == {"any": {"thing": 1}} and value["spec"]["labels"] == {"k": "v"}
    assert value["spec"]["template"]["more"] == 1 and value["metadata"]["unknownMeta"] == 1
    assert "status" not in value and value["apiVersion"] == "stable.example.com/v1"


def test_preserve_unknown_fields_still_prunes_inside_specified_properties() -> None:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
              "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    value = {"top": 1, "spec": {"a": "x", "b": 2}}
    assert prune(schema, value) == ["spec.b"] and value == {"top": 1, "spec": {"a": "x"}}


def test_defaults_fill_missing_and_non_nullable_nulls() -> None:
    value = obj(nested={})
    apply_defaults(SCHEMA, value)
    assert value["spec"]["replicas"] == 1 and value["spec"]["nested"] == {"mode": "auto"}
    explicit = obj(replicas=None, color=None)
    apply_defaults(SCHEMA, explicit)
    assert explicit["spec"]["replicas"] == 1 and "color" not in explicit["spec"]  # nulls without default dropped
    kept = obj(replicas=4)
    apply_defaults(SCHEMA, kept)
    assert kept["spec"]["replicas"] == 4
    defaults = {"type": "object", "properties": {"spec": {"type": "object", "default": {},
                                                          "properties": {"a": {"type": "string", "default": "x"}}}}}
    empty: dict = {}
    apply_defaults(defaults, empty)
    assert empty == {"spec": {"a": "x"}}  # defaults apply inside defaulted objects too


def test_pruned_copies_only_what_loses_fields_and_leaves_the_input_alone() -> None:
    value = obj(unknown=1, tags=[{"name": "a", "x": 1}, {"name": "b"}], labels={"k": "v"}, color=None,
                nested=None)
    value["status"] = {"s": 1}
    before = copy.deepcopy(value)
    out = pruned(SCHEMA, value)
    assert value == before  # untouched
    assert out["spec"] == {"cronSpec": "12", "tags": [{"name": "a"}, {"name": "b"}], "labels": {"k": "v"},
                           "nested": None}  # a nullable null stays, a non-nullable one without default goes
    assert "status" not in out and out["metadata"] is value["metadata"]
    assert out["spec"]["tags"][1] is value["spec"]["tags"][1] and out["spec"]["labels"] is value["spec"]["labels"]
    clean = obj(replicas=2, free={"any": 1})
    assert pruned(SCHEMA, clean) is clean  # nothing to drop: the very same object


def test_has_defaults_looks_at_schema_nodes_only() -> None:
    assert has_defaults(SCHEMA)
    assert not has_defaults({"type": "object", "properties": {"default": {"type": "string"}}})
    assert has_defaults({"type": "array", "items": {"type": "object", "properties": {
        "a": {"type": "string", "default": "x"}}}})


def multi_version_crd() -> dict:
    """v1 stores (and defaults spec.shape); v1beta1 is served, declares legacy, not shape's default."""
    def schema(*props: str, **defaults: str) -> dict:
        spec = {p: {"type": "string"} for p in props}
        for name, value in defaults.items():
            spec[name]["default"] = value
        return {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer"}, **spec}}}}}
    crd = crd_object()
    crd["spec"]["versions"] = [
        {"name": "v1", "served": True, "storage": True, "schema": schema("color", "shape", shape="round")},
        {"name": "v1beta1", "served": True, "storage": False, "schema": schema("legacy", "shape")}]
    return crd


def test_conversion_prunes_with_the_target_versions_schema() -> None:
    v1, v1beta1 = served_infos(multi_version_crd())
    assert (v1.version, v1beta1.version) == ("v1", "v1beta1")
    stored = {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x"},
              "spec": {"size": 1, "color": "red", "shape": "square"}}
    served = from_storage(v1beta1, stored)
    assert served["apiVersion"] == "stable.example.com/v1beta1" and served["spec"] == {"size": 1, "shape": "square"}
    assert stored["spec"]["color"] == "red"  # the cached object is never changed
    same = from_storage(v1, stored)
    assert same["spec"] is stored["spec"]  # served as stored: nothing to prune
    request = {"apiVersion": "stable.example.com/v1beta1", "kind": "CronTab", "metadata": {"name": "x"},
               "spec": {"size": 2, "legacy": "l"}}
    assert to_storage(v1beta1, request) == {"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                                            "metadata": {"name": "x"}, "spec": {"size": 2}}
    # identical schemas: the object was coerced with that very schema already, so it is passed through
    crd = multi_version_crd()
    crd["spec"]["versions"][1]["schema"] = copy.deepcopy(crd["spec"]["versions"][0]["schema"])
    beta = served_infos(crd)[1]
    assert from_storage(beta, stored)["spec"] is stored["spec"]


def test_storage_decoding_defaults_with_the_stored_version_and_coerces_metadata() -> None:
    crd = multi_version_crd()
    info = storage_info(crd)
    assert info is not None
    key, decode = storage_decoder(info)
    stored = {"apiVersion": "stable.example.com/v1", "kind": "CronTab",
              "metadata": {"name": "x", "bogus": 1, "labels": "not-a-map", "resourceVersion": "7"},
              "spec": {"size": 1, "junk": True, "color": None}}
    out = decode(stored)
    assert out["spec"] == {"size": 1, "shape": "round"}  # pruned, null dropped, v1's default
    assert out["metadata"] == {"name": "x", "resourceVersion": "7", "generation": 1}
    # an object stored as v1beta1 (an older storage version) is read with v1beta1's schema: no default
    older = decode({"apiVersion": "stable.example.com/v1beta1", "kind": "CronTab", "metadata": {"name": "y",
                    "generation": 3}, "spec": {"legacy": "l", "color": "c"}})
    assert older["spec"] == {"legacy": "l"} and older["metadata"]["generation"] == 3
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z"}, "data": {"a": "b"}}
    assert decode(copy.deepcopy(other)) == other  # not this CRD's kind: untouched
    # the key changes with any version's schema, and only then
    assert storage_decoder(storage_info(multi_version_crd()))[0] == key  # type: ignore[arg-type]
    crd["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["n"] = {
        "type": "integer"}
    assert storage_decoder(storage_info(crd))[0] != key  # type: ignore[arg-type]


# --- checking CRD schemas ---------------------------------------------------------------------------

def crd_causes(schema: dict, status: bool = False) -> dict[str, str]:
    return {c.field: c.message for c in validate_crd_schema(schema, "spec.versions[0].schema", status)}


def test_a_structural_schema_passes() -> None:
    assert crd_causes(SCHEMA, status=True) == {}


def test_structural_violations() -> None:
    p = "spec.versions[0].schema.openAPIV3Schema"
    got = crd_causes({"type": "object", "properties": {"a": {"properties": {"b": {"type": "string"}}},
                                                       "l": {"type": "array"}}})
    assert got == {f"{p}.properties[a].type": "Required value: must not be empty for specified object fields",
                   f"{p}.properties[l].items": "Required value: must be specified"}
    assert crd_causes({"type": "string"}) == {f"{p}.type": 'Invalid value: "string": must be object at the root'}
    got = crd_causes({"type": "object", "properties": {"a": {"type": "array", "items": {}}}})
    assert got == {f"{p}.properties[a].items.type": "Required value: must not be empty for specified array items"}
    got = crd_causes({"type": "object", "properties": {"a": {"type": "string", "anyOf": [{"type": "string"}]}}})
    assert got == {f"{p}.properties[a].anyOf[0].type": "Forbidden: must be empty to be structural"}
    int_or_string = {"type": "object", "properties": {"a": {"x-kubernetes-int-or-string": True,
                                                            "anyOf": [{"type": "integer"}, {"type": "string"}]}}}
    assert crd_causes(int_or_string) == {}
    got = crd_causes({"type": "object", "properties": {"metadata": {"type": "object", "properties": {
        "labels": {"type": "object"}}}}})
    assert got == {f"{p}.properties[metadata]": "Forbidden: must not specify anything other than name and "
                                                "generateName, but metadata is implicitly specified"}


def test_unsupported_keywords() -> None:
    p = "spec.versions[0].schema.openAPIV3Schema"
    got = crd_causes({"type": "object", "properties": {
        "a": {"$ref": "#/definitions/x"}, "b": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
        "c": {"type": "object", "properties": {"d": {"type": "string"}}, "additionalProperties": {"type": "string"}},
        "e": {"type": "null"}, "f": {"type": "bogus"}}})
    assert got[f"{p}.properties[a].$ref"] == "Forbidden: $ref is not supported"
    assert got[f"{p}.properties[b].uniqueItems"] == ("Forbidden: uniqueItems cannot be set to true since the "
                                                     "runtime complexity becomes quadratic")
    assert got[f"{p}.properties[c].additionalProperties"] == ("Forbidden: additionalProperties and properties "
                                                              "are mutual exclusive")
    assert got[f"{p}.properties[e].type"] == "Forbidden: type cannot be set to null, use nullable as an alternative"
    assert got[f"{p}.properties[f].type"] == ('Unsupported value: "bogus": supported values: "array", "boolean", '
                                              '"integer", "number", "object", "string"')
    got = crd_causes({"type": "object", "properties": {"metadata": {"type": "object", "default": {}}}})
    assert got[f"{p}.properties[metadata].default"] == "Forbidden: must not be set in top-level metadata"
    got = crd_causes({"type": "object", "nullable": True})
    assert got[f"{p}.nullable"] == "Forbidden: nullable cannot be true at the root"
    got = crd_causes({"type": "object", "minProperties": 1, "properties": {}}, status=True)
    assert got[p].endswith("fields are allowed at the root of the schema if the status subresource is enabled")


def test_defaults_must_validate_and_be_pruned() -> None:
    p = "spec.versions[0].schema.openAPIV3Schema.properties[a]"
    got = crd_causes({"type": "object", "properties": {"a": {"type": "integer", "default": "x"}}})
    assert got == {f"{p}.default": 'Invalid value: "string": in body must be of type integer: "string"'}
    got = crd_causes({"type": "object", "properties": {"a": {"type": "object", "default": {"b": 1},
                                                             "properties": {"c": {"type": "integer"}}}}})
    assert got == {f"{p}.default": 'Invalid value: {"b":1}: must not have unknown fields'}


def test_validation_rules_are_accepted_but_checked_for_shape() -> None:
    ok = {"type": "object", "x-kubernetes-validations": [{"rule": "self.a > 0", "message": "positive"}],
          "properties": {"a": {"type": "integer"}}}
    assert crd_causes(ok) == {}
    got = crd_causes({"type": "object", "x-kubernetes-validations": [{"rule": " "}]})
    assert got == {"spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule":
                   "Required value: rule is not specified"}


# --- CRD objects ----------------------------------------------------------------------------------------

def crd_object() -> dict:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "crontabs.stable.example.com"},
           "spec": {"group": "stable.example.com", "scope": "Namespaced",
                    "names": {"plural": "crontabs", "kind": "CronTab"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": copy.deepcopy(SCHEMA)}},
                                 {"name": "v2", "storage": False, "schema": {"openAPIV3Schema": {"type": "object"}}}]},
           "status": {"storedVersions": ["v1"]}}
    default_crd(crd)
    return crd


def test_crd_defaults_and_validation() -> None:
    crd = crd_object()
    assert crd["spec"]["names"] == {"plural": "crontabs", "kind": "CronTab", "singular": "crontab",
                                    "listKind": "CronTabList"}
    assert crd["spec"]["conversion"] == {"strategy": "None"} and crd["spec"]["versions"][1]["served"] is False
    assert validate_crd(crd) == []
    crd["spec"]["group"] = "example"
    crd["spec"]["names"]["kind"] = "Cron_Tab"
    crd["spec"]["versions"][1]["storage"] = True
    got = {c.field: c.message for c in validate_crd(crd)}
    assert got["metadata.name"] == 'Invalid value: "crontabs.stable.example.com": must be spec.names.plural+"."+' \
                                   'spec.group'
    assert got["spec.group"] == 'Invalid value: "example": should be a domain with at least one dot'
    assert got["spec.names.kind"].startswith('Invalid value: "Cron_Tab": may have mixed case, but should otherwise '
                                             'match: a DNS-1035 label must consist of lower case')
    assert got["spec.versions"].endswith(": must have exactly one version marked as storage version")
    assert got["status.storedVersions"] == ('Invalid value: {"name":"v2","storage":true,"schema":{"openAPIV3Schema":'
                                            '{"type":"object"}},"served":false}: must have the storage version v2')


def test_protected_groups_need_approval() -> None:
    crd = crd_object()
    crd["spec"]["group"] = "things.k8s.io"
    crd["metadata"]["name"] = "crontabs.things.k8s.io"
    got = {c.field: c.message for c in validate_crd(crd)}
    assert got["metadata.annotations[api-approved.kubernetes.io]"].startswith(
        'Required value: protected groups must have approval annotation "api-approved.kubernetes.io"')


def test_served_infos_follow_version_priority_and_scale_paths() -> None:
    crd = crd_object()
    crd["spec"]["versions"][1]["served"] = True
    crd["spec"]["versions"][0]["subresources"] = {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                                         "statusReplicasPath": ".status.replicas"}}
    v1, v2 = served_infos(crd)[1], served_infos(crd)[0]
    assert (v2.version, v1.version) == ("v2", "v1")
    assert v1.subresources == ("status", "scale") and v1.custom is not None
    assert v1.custom.spec_replicas_path == ".spec.replicas" and v1.stored_version == "stable.example.com/v1"
    assert v2.stored_version == "stable.example.com/v1" and v1.storage_prefix == "/registry/stable.example.com/crontabs/"
    assert v1.definition == "com.example.stable.v1.CronTab" and v1.list_kind == "CronTabList"
    assert sorted(["v1alpha1", "v2", "v1", "v1beta2", "v1beta1", "foo"], key=version_priority) == [
        "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]


# --- printer columns ------------------------------------------------------------------------------------

def test_jsonpath_and_go_formatting() -> None:
    value = {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]},
             "spec": {"list": [1, 2], "map": {"b": 1, "a": "x"}, "f": 2.5}}
    assert evaluate('.status.conditions[?(@.type=="Synced")].status', value) == ["False"]
    assert evaluate(".spec.list[1]", value) == [2] and evaluate(".spec.missing", value) == []
    assert evaluate("{.spec.list[*]}", value) == [1, 2]
    assert go_format(value["spec"]["map"]) == "map[a:x b:1]" and go_format([1, "a"]) == "[1 a]"
    assert go_format(2.5) == "2.5" and go_format(3.0) == "3" and go_format(True) == "true"


def test_printer_columns() -> None:
    columns = ('[{"name":"Spec","type":"string","jsonPath":".spec.cronSpec"},'
               '{"name":"Replicas","type":"integer","jsonPath":".spec.replicas","priority":1},'
               '{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\\"Ready\\")].status"},'
               '{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}]')
    info = ResourceInfo("stable.example.com", "v1", "CronTab", "crontabs", True,
                        custom=CustomResource("crontabs.stable.example.com", "CronTabList", columns_json=columns))
    printer = printer_for(info)
    assert [c["name"] for c in printer.columns] == ["Name", "Spec", "Replicas", "Ready", "Age"]
    assert printer.columns[1]["description"] == "Custom resource definition column (in JSONPath format): " \
                                                ".spec.cronSpec"
    assert printer.columns[2]["priority"] == 1
    now = datetime(2024, 1, 1, 1, 0, 0, tzinfo=UTC)
    value = {"metadata": {"name": "a", "creationTimestamp": "2024-01-01T00:00:00Z"},
             "spec": {"cronSpec": "* *", "replicas": 2.0},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert printer.cells(value, now) == ["a", "* *", 2, "True", "60m"]
    assert printer.cells({"metadata": {"name": "b"}}, now) == ["b", None, None, None, None]


@pytest.mark.parametrize(("value", "problem"), [
    ("2024-13-01T00:00:00Z", True), ("2024-01-01T00:00:00.5+02:00", False), ("2024-01-01", True)])
def test_date_time_format(value: str, problem: bool) -> None:
    schema = {"type": "object", "properties": {"t": {"type": "string", "format": "date-time"}}}
    assert bool(validate_value(schema, {"t": value})) is problem
