"""The /openapi/v2 and /openapi/v3 documents: structure, ref closure, and what kubectl looks for."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from pocketkube.api.kinds import BUILTIN_RESOURCES, ResourceCatalog
from pocketkube.apiserver import openapi, schemas

CATALOG = ResourceCatalog()


@pytest.fixture(scope="module")
def v2() -> dict[str, Any]:
    return orjson.loads(openapi.openapi_v2(CATALOG))


@pytest.fixture(scope="module")
def v3_docs() -> dict[str, dict[str, Any]]:
    index = openapi.openapi_v3_index(CATALOG)
    return {key: orjson.loads(openapi.openapi_v3_document(CATALOG, key)) for key in index["paths"]}


def _walk(node: Any):
    """Every schema node; a `properties` map is walked through its values only, since its keys are field
    names (JSONSchemaProps has fields literally called `$ref` and `oneOf`)."""
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for prop in value.values():
                    yield from _walk(prop)
            else:
                yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _refs(node: Any) -> set[str]:
    return {d["$ref"] for d in _walk(node) if isinstance(d.get("$ref"), str)}


def _gvk(info) -> dict[str, str]:
    return {"group": info.group, "version": info.version, "kind": info.kind}


# --- shared schema conversion ---------------------------------------------------------------------------


def test_definitions_load_and_closure() -> None:
    closure = schemas.ref_closure(["io.k8s.api.apps.v1.Deployment"])
    assert "io.k8s.api.core.v1.PodSpec" in closure
    assert "io.k8s.apimachinery.pkg.util.intstr.IntOrString" in closure
    assert "io.k8s.api.batch.v1.Job" not in closure
    for name in closure:
        assert schemas.direct_refs(name) <= set(closure)


def test_special_types_in_both_dialects() -> None:
    ios = schemas.INT_OR_STRING
    assert schemas.v2_definition(ios)["type"] == "string"
    assert schemas.v2_definition(ios)["format"] == "int-or-string"
    assert schemas.v3_schema(ios)["oneOf"] == [{"type": "integer"}, {"type": "string"}]
    assert schemas.v2_definition(schemas.QUANTITY)["type"] == "string"
    assert schemas.v3_schema(schemas.QUANTITY)["oneOf"] == [{"type": "string"}, {"type": "number"}]
    time_schema = schemas.v3_schema(schemas.TIME)
    assert (time_schema["type"], time_schema["format"]) == ("string", "date-time")


def test_kubernetes_validate_additions_are_removed() -> None:
    deployment = schemas.v3_schema("io.k8s.api.apps.v1.Deployment")
    assert deployment["type"] == "object"
    assert "enum" not in deployment["properties"]["apiVersion"]
    assert deployment["properties"]["apiVersion"]["type"] == "string"
    # a $ref with a sibling description is wrapped in allOf (3.0 ignores $ref siblings), v2 keeps it flat
    assert deployment["properties"]["spec"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}]
    v2_spec = schemas.v2_definition("io.k8s.api.apps.v1.Deployment")["properties"]["spec"]
    assert v2_spec["$ref"] == "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    assert v2_spec["description"]


# --- v2 -------------------------------------------------------------------------------------------------


def test_v2_every_ref_resolves(v2: dict[str, Any]) -> None:
    assert v2["swagger"] == "2.0"
    for ref in _refs(v2):
        if ref.startswith("#/definitions/"):
            assert ref.removeprefix("#/definitions/") in v2["definitions"], ref
        else:
            assert ref.removeprefix("#/parameters/") in v2["parameters"], ref


def test_v2_is_plain_swagger(v2: dict[str, Any]) -> None:
    for node in _walk(v2["definitions"]):
        assert not isinstance(node.get("type"), list)
        assert "oneOf" not in node and "$defs" not in node
    for ref in _refs(v2):
        assert not ref.startswith("#/$defs/")


def test_v2_definitions_carry_gvks(v2: dict[str, Any]) -> None:
    defs = v2["definitions"]
    for info in BUILTIN_RESOURCES:
        assert _gvk(info) in defs[info.definition]["x-kubernetes-group-version-kind"]
        if "list" not in info.verbs:  # the reviews: create-only, no list type
            assert info.definition + "List" not in defs
            continue
        list_gvk = {**_gvk(info), "kind": info.list_kind}
        assert list_gvk in defs[info.definition + "List"]["x-kubernetes-group-version-kind"]
    meta = "io.k8s.apimachinery.pkg.apis.meta.v1."
    for name in ("Status", "DeleteOptions", "WatchEvent"):
        assert defs[meta + name]["x-kubernetes-group-version-kind"]
    assert defs["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"] == [
        {"group": "autoscaling", "kind": "Scale", "version": "v1"}]


def _v2_params(doc: dict[str, Any], op: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in op.get("parameters", []):
        if "$ref" in p:
            p = doc["parameters"][p["$ref"].removeprefix("#/parameters/")]
        out.append(p)
    return out


def test_v2_patch_ops_accept_field_validation(v2: dict[str, Any]) -> None:
    # kubectl's QueryParamVerifier: the PATCH operation with the kind's GVK must take fieldValidation.
    patched = set()
    for item in v2["paths"].values():
        op = item.get("patch")
        if op is None:
            continue
        names = {p["name"] for p in _v2_params(v2, op) if p["in"] == "query"}
        assert {"fieldValidation", "fieldManager", "dryRun", "force"} <= names
        assert "application/strategic-merge-patch+json" in op["consumes"]
        gvk = op["x-kubernetes-group-version-kind"]
        patched.add((gvk["group"], gvk["version"], gvk["kind"]))
    for info in BUILTIN_RESOURCES:
        assert ((info.group, info.version, info.kind) in patched) == ("patch" in info.verbs), info.kind


def test_v2_operations(v2: dict[str, Any]) -> None:
    paths = v2["paths"]
    coll = paths["/apis/apps/v1/namespaces/{namespace}/deployments"]
    assert coll["get"]["operationId"] == "listAppsV1NamespacedDeployment"
    assert coll["get"]["x-kubernetes-action"] == "list"
    assert coll["post"]["x-kubernetes-action"] == "post"
    assert coll["delete"]["x-kubernetes-action"] == "deletecollection"
    list_params = {p["name"] for p in _v2_params(v2, coll["get"])}
    assert {"labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "resourceVersionMatch",
            "watch", "allowWatchBookmarks", "sendInitialEvents", "timeoutSeconds"} <= list_params
    assert "application/json;stream=watch" in coll["get"]["produces"]
    body = [p for p in _v2_params(v2, coll["post"]) if p["in"] == "body"]
    assert body == [{"name": "body", "in": "body", "required": True,
                     "schema": {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}}]
    item = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert {"get", "put", "patch", "delete", "parameters"} <= set(item)
    delete_params = {p["name"] for p in _v2_params(v2, item["delete"])}
    assert {"propagationPolicy", "gracePeriodSeconds", "dryRun"} <= delete_params
    path_params = {p["name"] for p in _v2_params(v2, item)}
    assert path_params == {"name", "namespace", "pretty"}
    # cluster-scoped and the deprecated watch paths
    assert paths["/api/v1/nodes/{name}"]["get"]["operationId"] == "readCoreV1Node"
    assert paths["/api/v1/watch/nodes/{name}"]["get"]["x-kubernetes-action"] == "watch"
    assert paths["/api/v1/watch/namespaces/{namespace}/pods"]["get"]["x-kubernetes-action"] == "watchlist"
    assert paths["/api/v1/pods"]["get"]["operationId"] == "listCoreV1PodForAllNamespaces"
    # namespaces have no deletecollection verb
    assert "delete" not in paths["/api/v1/namespaces"]
    assert paths["/api/v1/namespaces/{name}/finalize"]["put"]["operationId"] == "replaceCoreV1NamespaceFinalize"


def test_v2_subresources(v2: dict[str, Any]) -> None:
    paths = v2["paths"]
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert set(scale) >= {"get", "put", "patch"}
    assert scale["get"]["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "kind": "Scale",
                                                                "version": "v1"}
    status = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]
    assert status["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert status["get"]["operationId"] == "readAppsV1NamespacedDeploymentStatus"
    binding = paths["/api/v1/namespaces/{namespace}/pods/{name}/binding"]
    assert set(binding) == {"post", "parameters"}
    assert binding["post"]["x-kubernetes-group-version-kind"]["kind"] == "Binding"
    eviction = paths["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]
    assert eviction["post"]["x-kubernetes-group-version-kind"] == {"group": "policy", "kind": "Eviction",
                                                                    "version": "v1"}
    # pods return the deleted object, deployments a Status
    pod_delete = paths["/api/v1/namespaces/{namespace}/pods/{name}"]["delete"]["responses"]["200"]
    assert pod_delete["schema"]["$ref"] == "#/definitions/io.k8s.api.core.v1.Pod"
    deploy_delete = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["delete"]
    assert deploy_delete["responses"]["200"]["schema"]["$ref"].endswith("meta.v1.Status")


# --- v3 -------------------------------------------------------------------------------------------------


def test_v3_index_round_trip() -> None:
    index = openapi.openapi_v3_index(CATALOG)
    paths = index["paths"]
    gvs = {openapi.group_version_path(i.group, i.version) for i in BUILTIN_RESOURCES}
    assert gvs <= set(paths)
    assert {"api", "apis", "apis/apps"} <= set(paths)
    for key, entry in paths.items():
        url = entry["serverRelativeURL"]
        prefix = f"/openapi/v3/{key}?hash="
        assert url.startswith(prefix)
        doc = openapi.openapi_v3_document(CATALOG, "/" + key)
        assert doc is not None
        assert url.removeprefix(prefix) == hashlib.sha512(doc).hexdigest().upper()
    assert openapi.openapi_v3_document(CATALOG, "apis/nope/v1") is None


def test_v3_documents_are_closed_and_valid(v3_docs: dict[str, dict[str, Any]]) -> None:
    for key, doc in v3_docs.items():
        assert doc["openapi"] == "3.0.0"
        components = doc["components"]["schemas"]
        for ref in _refs(doc):
            assert ref.startswith("#/components/schemas/"), (key, ref)
            assert ref.removeprefix("#/components/schemas/") in components, (key, ref)
        for node in _walk(components):
            assert not isinstance(node.get("type"), list)
            if "$ref" in node:
                assert len(node) == 1, node  # siblings of $ref are wrapped in allOf
        for path in doc["paths"]:
            assert path.startswith("/" + key.split("?")[0])


def test_v3_documents_hold_only_what_they_need(v3_docs: dict[str, dict[str, Any]]) -> None:
    lease_doc = v3_docs["apis/coordination.k8s.io/v1"]["components"]["schemas"]
    assert "io.k8s.api.coordination.v1.Lease" in lease_doc
    assert "io.k8s.api.core.v1.PodSpec" not in lease_doc
    apps = v3_docs["apis/apps/v1"]
    assert all(p.startswith("/apis/apps/v1/") for p in apps["paths"])
    assert "io.k8s.api.autoscaling.v1.Scale" in apps["components"]["schemas"]


def _supports_query_param_v3(doc: dict[str, Any], gvk: dict[str, str], param: str) -> bool:
    """kubectl's supportsQueryParamV3 (cli-runtime query_param_verifier_v3.go)."""
    for item in doc["paths"].values():
        op = item.get("patch")
        if op is None or op.get("x-kubernetes-group-version-kind") != gvk:
            continue
        return any(p["name"] == param and p["in"] == "query" for p in op.get("parameters", []))
    raise LookupError(f"Path not found for GVK ({gvk}) in OpenAPI V3 doc")


def test_v3_field_validation_detection(v3_docs: dict[str, dict[str, Any]]) -> None:
    for info in BUILTIN_RESOURCES:
        if "patch" not in info.verbs:  # the create-only reviews: kubectl finds no PATCH, as upstream
            continue
        doc = v3_docs[openapi.group_version_path(info.group, info.version)]
        gvk = {"group": info.group, "kind": info.kind, "version": info.version}
        assert _supports_query_param_v3(doc, gvk, "fieldValidation")


def test_v3_patch_op_supports_strategic_merge(v3_docs: dict[str, dict[str, Any]]) -> None:
    # kubectl apply's gvkSupportsPatchOpenAPIV3: the requestBody must list strategic-merge-patch+json.
    op = v3_docs["apis/apps/v1"]["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    content = op["requestBody"]["content"]
    assert "application/strategic-merge-patch+json" in content
    assert "application/apply-patch+yaml" in content
    assert op["x-kubernetes-action"] == "patch"
    assert op["operationId"] == "patchAppsV1NamespacedDeployment"
    item = v3_docs["apis/apps/v1"]["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert [p["name"] for p in item["parameters"]] == ["name", "namespace", "pretty"]
    assert item["parameters"][0]["required"] is True


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    components = doc["components"]["schemas"]
    while True:
        if "$ref" in schema:
            schema = components[schema["$ref"].removeprefix("#/components/schemas/")]
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def test_v3_explain_walk(v3_docs: dict[str, dict[str, Any]]) -> None:
    # kubectl explain deployment.spec.strategy: find the schema by GVK, then follow the field path.
    doc = v3_docs["apis/apps/v1"]
    gvk = {"group": "apps", "kind": "Deployment", "version": "v1"}
    [root] = [s for s in doc["components"]["schemas"].values()
              if gvk in s.get("x-kubernetes-group-version-kind", [])]
    node = root
    for name in ("spec", "strategy"):
        node = _resolve(doc, node["properties"][name])
    assert set(node["properties"]) == {"rollingUpdate", "type"}
    containers = _resolve(doc, _resolve(doc, _resolve(doc, root["properties"]["spec"])["properties"]["template"])
                          ["properties"]["spec"])["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-type"] == "map"


def test_documents_are_cached_and_follow_the_catalogue() -> None:
    assert openapi.openapi_v2(CATALOG) is openapi.openapi_v2(CATALOG)
    small = ResourceCatalog(tuple(i for i in BUILTIN_RESOURCES if i.group == "apps"))
    assert set(openapi.openapi_v3_index(small)["paths"]) == {"apis", "apis/apps", "apis/apps/v1"}
    assert openapi.openapi_v3_document(small, "api/v1") is None
    assert openapi.openapi_v3_document(CATALOG, "api/v1") is not None
