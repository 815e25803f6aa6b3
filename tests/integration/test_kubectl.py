"""The real kubectl 1.37 against a real pocketkube server, on both storage backends."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import yaml
from cluster import Cluster, configmap_yaml

from pocketkube.cli.kubectl import find_kubectl

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
  labels: {{app: web, tier: config}}
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: {ns}
stringData:
  password: s3cret
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web, tier: frontend}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web, tier: frontend}}
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 80
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      containers: [{{name: busybox, image: "busybox:1.36"}}]
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ns(cluster: Cluster) -> str:
    name = unique("t")
    cluster.create(f"{{apiVersion: v1, kind: Namespace, metadata: {{name: {name}}}}}")
    return name


def test_cluster_info_version_and_api_resources(cluster: Cluster) -> None:
    info = cluster.kubectl("cluster-info").stdout
    assert "Kubernetes control plane is running at https://127.0.0.1:" in info
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.37.")
    resources = cluster.kubectl("api-resources").stdout
    for line in ("deployments  ", "deploy", "apps/v1", "horizontalpodautoscalers", "hpa"):
        assert line in resources
    assert any(row.split()[:2] == ["pods", "po"] for row in resources.splitlines())
    namespaced = cluster.kubectl("api-resources", "--namespaced=false", "-o", "name").stdout.split()
    assert "nodes" in namespaced and "pods" not in namespaced


def test_system_namespaces_and_kubernetes_service(cluster: Cluster) -> None:
    names = cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert f"namespace/{ns}" in names
    svc = json.loads(cluster.kubectl("get", "service", "kubernetes", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    assert svc["spec"]["ports"][0]["port"] == 443
    endpoints = json.loads(cluster.kubectl("get", "endpoints", "kubernetes", "-o", "json").stdout)
    assert endpoints["subsets"][0]["ports"][0]["port"] == cluster.port
    # upstream's reconciler keeps an EndpointSlice of the same name beside it
    endpoint_slice = json.loads(cluster.kubectl("get", "endpointslice", "kubernetes", "-o", "json").stdout)
    assert endpoint_slice["addressType"] == "IPv4"
    assert endpoint_slice["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    assert endpoint_slice["endpoints"][0]["addresses"] == endpoints["subsets"][0]["addresses"][0]["ip"].split()
    assert endpoint_slice["ports"] == [{"name": "https", "port": cluster.port, "protocol": "TCP"}]


def test_create_get_describe_delete_multi_document_file(cluster: Cluster, tmp_path) -> None:
    ns = unique("m")
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST.format(ns=ns))
    out = cluster.kubectl("create", "-f", str(manifest)).stdout
    for line in (f"namespace/{ns} created", "configmap/settings created", "secret/creds created",
                 "deployment.apps/web created", "service/web created"):
        assert line in out

    table = cluster.kubectl("get", "deployments", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:2] == ["web", "0/2"]
    wide = cluster.kubectl("get", "deployment", "web", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert "nginx:1.27" in wide[1] and "app=web" in wide[1]

    svc = cluster.kubectl("get", "svc", "web", "-n", ns).stdout.splitlines()
    assert svc[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    cells = svc[1].split()
    assert cells[1] == "ClusterIP" and cells[2].startswith("10.43.") and cells[4] == "80/TCP"

    secret = json.loads(cluster.kubectl("get", "secret", "creds", "-n", ns, "-o", "json").stdout)
    assert secret["data"]["password"] == "czNjcmV0" and "stringData" not in secret
    assert secret["type"] == "Opaque"
    as_yaml = yaml.safe_load(cluster.kubectl("get", "configmap", "settings", "-n", ns, "-o", "yaml").stdout)
    assert as_yaml["data"] == {"greeting": "hello"}
    jsonpath = cluster.kubectl("get", "deploy", "web", "-n", ns, "-o",
                               "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert jsonpath == "nginx:1.27"
    names = cluster.kubectl("get", "cm,secret,deploy,svc", "-n", ns, "-o", "name").stdout.split()
    assert {"configmap/settings", "secret/creds", "deployment.apps/web", "service/web"} <= set(names)

    described = cluster.kubectl("describe", "deployment", "web", "-n", ns).stdout
    assert "Name:" in described and "web" in described and "RollingUpdate" in described
    assert "25% max unavailable, 25% max surge" in described
    described_svc = cluster.kubectl("describe", "service", "web", "-n", ns).stdout
    assert "Selector:" in described_svc and "app=web" in described_svc

    out = cluster.kubectl("delete", "-f", str(manifest), "--wait=false", "--ignore-not-found").stdout
    assert "deployment.apps \"web\" deleted" in out and f"namespace \"{ns}\" deleted" in out


def test_label_selectors_show_labels_and_all_namespaces(cluster: Cluster, ns: str) -> None:
    for name, labels in (("a", "env=prod,tier=web"), ("b", "env=dev,tier=web"), ("c", "env=test")):
        cluster.create(configmap_yaml(name, ns, {"k": "v"}))
        cluster.kubectl("label", "configmap", name, "-n", ns, *labels.split(","))

    def names(*selector: str) -> set[str]:
        out = cluster.kubectl("get", "cm", "-n", ns, "-o", "name", *selector).stdout.split()
        return {n.split("/")[1] for n in out} - {"kube-root-ca.crt"}  # published in every namespace

    assert names("-l", "env in (prod,dev)") == {"a", "b"}
    assert names("-l", "env notin (prod)") == {"b", "c"}
    assert names("-l", "tier") == {"a", "b"}
    assert names("-l", "!tier,env") == {"c"}
    assert names("-l", "env!=prod,tier=web") == {"b"}
    shown = cluster.kubectl("get", "cm", "a", "-n", ns, "--show-labels").stdout.splitlines()
    assert shown[0].split()[-1] == "LABELS" and "env=prod,tier=web" in shown[1]
    everywhere = cluster.kubectl("get", "cm", "-A", "-l", "env=prod").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(row.split()[:2] == [ns, "a"] for row in everywhere[1:])
    bad = cluster.kubectl("get", "cm", "-n", ns, "-l", "env in (prod", check=False)
    assert bad.returncode != 0 and "unable to parse requirement" in bad.stderr


def test_label_and_annotate(cluster: Cluster, ns: str) -> None:
    cluster.create(configmap_yaml("cfg", ns, {"a": "1"}))
    cluster.kubectl("label", "cm", "cfg", "-n", ns, "color=blue")
    refused = cluster.kubectl("label", "cm", "cfg", "-n", ns, "color=red", check=False)
    assert refused.returncode != 0 and "already has a value (blue)" in refused.stderr
    cluster.kubectl("label", "cm", "cfg", "-n", ns, "color=red", "--overwrite")
    cluster.kubectl("annotate", "cm", "cfg", "-n", ns, "note=first")
    refused = cluster.kubectl("annotate", "cm", "cfg", "-n", ns, "note=second", check=False)
    assert refused.returncode != 0 and "already has a value (first)" in refused.stderr
    cluster.kubectl("annotate", "cm", "cfg", "-n", ns, "note=second", "--overwrite")
    meta = json.loads(cluster.kubectl("get", "cm", "cfg", "-n", ns, "-o", "json").stdout)["metadata"]
    assert meta["labels"]["color"] == "red" and meta["annotations"]["note"] == "second"
    cluster.kubectl("label", "cm", "cfg", "-n", ns, "color-")
    cluster.kubectl("annotate", "cm", "cfg", "-n", ns, "note-")
    meta = json.loads(cluster.kubectl("get", "cm", "cfg", "-n", ns, "-o", "json").stdout)["metadata"]
    assert "color" not in (meta.get("labels") or {}) and "note" not in (meta.get("annotations") or {})
    invalid = cluster.kubectl("label", "cm", "cfg", "-n", ns, "bad key=x", check=False)
    assert invalid.returncode != 0


def test_patch_json_and_merge(cluster: Cluster, ns: str) -> None:
    cluster.create(configmap_yaml("cfg", ns, {"a": "1"}))
    cluster.kubectl("patch", "cm", "cfg", "-n", ns, "--type=merge", "-p", '{"data":{"b":"2","a":null}}')
    cluster.kubectl("patch", "cm", "cfg", "-n", ns, "--type=json",
                    "-p", '[{"op":"add","path":"/data/c","value":"3"},{"op":"replace","path":"/data/b","value":"4"}]')
    data = json.loads(cluster.kubectl("get", "cm", "cfg", "-n", ns, "-o", "json").stdout)["data"]
    assert data == {"b": "4", "c": "3"}
    failed = cluster.kubectl("patch", "cm", "cfg", "-n", ns, "--type=json",
                             "-p", '[{"op":"test","path":"/data/b","value":"nope"}]', check=False)
    assert failed.returncode != 0
    unchanged = json.loads(cluster.kubectl("get", "cm", "cfg", "-n", ns, "-o", "json").stdout)["data"]
    assert unchanged == data


def test_scale_and_replace(cluster: Cluster, ns: str, tmp_path) -> None:
    cluster.create(DEPLOYMENT.format(ns=ns))
    assert "scaled" in cluster.kubectl("scale", "deployment", "app", "-n", ns, "--replicas=3").stdout
    path = tmp_path / "deploy.json"
    for _ in range(10):  # the deployment controller writes status too: replace what we just read
        deploy = json.loads(cluster.kubectl("get", "deploy", "app", "-n", ns, "-o", "json").stdout)
        assert deploy["spec"]["replicas"] == 3
        assert deploy["metadata"]["generation"] == 2
        deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.37"
        path.write_text(json.dumps(deploy))
        replaced = cluster.kubectl("replace", "-f", str(path), check=False)
        if replaced.returncode == 0:
            break
        assert "the object has been modified" in replaced.stderr
    assert "replaced" in replaced.stdout
    again = cluster.kubectl("replace", "-f", str(path), check=False)  # stale resourceVersion
    assert again.returncode != 0 and "the object has been modified" in again.stderr
    image = cluster.kubectl("get", "deploy", "app", "-n", ns, "-o",
                            "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "busybox:1.37"
    bad = cluster.kubectl("scale", "deployment", "app", "-n", ns, "--replicas=-1", check=False)
    assert bad.returncode != 0


def test_get_watch_sees_a_change(cluster: Cluster, ns: str) -> None:
    cluster.create(configmap_yaml("watched", ns, {"a": "1"}))
    proc = subprocess.Popen([str(find_kubectl()), "get", "cm", "-n", ns, "-w", "--output-watch-events"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    try:
        time.sleep(1.5)
        cluster.kubectl("label", "cm", "watched", "-n", ns, "seen=yes")
        cluster.kubectl("delete", "cm", "watched", "-n", ns)
        deadline = time.monotonic() + 15
        lines: list[str] = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.split()[:1] == ["DELETED"]:
                break
        events = [line.split()[0] for line in lines if line.strip()]
        assert events[0] == "EVENT" and "ADDED" in events and "MODIFIED" in events and "DELETED" in events
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_delete_propagation_policies_are_recorded(cluster: Cluster, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for name in ("keep", "fg"):
        cluster.request("POST", base, {"metadata": {"name": name, "finalizers": ["example.com/hold"]}})
    # The DELETE answer shows the policy recorded as a finalizer on the object that must wait.
    orphaned = cluster.request("DELETE", base + "/keep", {"propagationPolicy": "Orphan"}).json()
    assert orphaned["metadata"]["deletionTimestamp"] and "orphan" in orphaned["metadata"]["finalizers"]
    foreground = cluster.request("DELETE", base + "/fg", {"propagationPolicy": "Foreground"}).json()
    assert "foregroundDeletion" in foreground["metadata"]["finalizers"]
    # The garbage collector finishes its part (no dependents here); the foreign finalizer still holds.
    for name in ("keep", "fg"):
        wait_until(lambda n=name: cluster.request("GET", f"{base}/{n}").json()["metadata"]["finalizers"]
                   == ["example.com/hold"])
    # Removing the last finalizer lets the object go.
    cluster.kubectl("patch", "cm", "fg", "-n", ns, "--type=json",
                    "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    gone = cluster.kubectl("get", "cm", "fg", "-n", ns, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    # A plain background delete of an object without finalizers is immediate.
    cluster.create(configmap_yaml("plain", ns, {"a": "1"}))
    assert 'configmap "plain" deleted' in cluster.kubectl("delete", "cm", "plain", "-n", ns,
                                                          "--cascade=background").stdout


def wait_until(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_kubectl_create_generators_send_protobuf(cluster: Cluster) -> None:
    ns = unique("gen")
    assert f"namespace/{ns} created" in cluster.kubectl("create", "namespace", ns).stdout
    cluster.kubectl("create", "configmap", "cm", "-n", ns, "--from-literal=a=1", "--from-literal=b=2")
    cluster.kubectl("create", "secret", "generic", "sec", "-n", ns, "--from-literal=password=hunter2")
    cluster.kubectl("create", "deployment", "web", "-n", ns, "--image=nginx:1.27", "--replicas=2", "--port=80")
    cluster.kubectl("create", "service", "clusterip", "web", "-n", ns, "--tcp=80:8080")
    cluster.kubectl("create", "job", "once", "-n", ns, "--image=busybox:1.36", "--", "true")
    cluster.kubectl("create", "cronjob", "tick", "-n", ns, "--image=busybox:1.36", "--schedule=*/5 * * * *")
    cluster.kubectl("create", "serviceaccount", "robot", "-n", ns)
    cluster.kubectl("create", "role", "reader", "-n", ns, "--verb=get,list", "--resource=pods")
    cluster.kubectl("create", "rolebinding", "reader", "-n", ns, "--role=reader", "--user=alice")
    cluster.kubectl("create", "quota", "q", "-n", ns, "--hard=pods=10")
    cluster.kubectl("create", "poddisruptionbudget", "pdb", "-n", ns, "--selector=app=web", "--min-available=1")
    cm = json.loads(cluster.kubectl("get", "cm", "cm", "-n", ns, "-o", "json").stdout)
    assert cm["data"] == {"a": "1", "b": "2"}
    secret = json.loads(cluster.kubectl("get", "secret", "sec", "-n", ns, "-o", "json").stdout)
    assert secret["data"] == {"password": "aHVudGVyMg=="}
    deploy = json.loads(cluster.kubectl("get", "deploy", "web", "-n", ns, "-o", "json").stdout)
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 80
    svc = json.loads(cluster.kubectl("get", "svc", "web", "-n", ns, "-o", "json").stdout)
    assert svc["spec"]["ports"][0]["targetPort"] == 8080
    names = cluster.kubectl("get", "job,cronjob,sa,role,rolebinding,quota,pdb", "-n", ns, "-o", "name").stdout
    for expected in ("job.batch/once", "cronjob.batch/tick", "serviceaccount/robot",
                     "role.rbac.authorization.k8s.io/reader", "rolebinding.rbac.authorization.k8s.io/reader",
                     "resourcequota/q", "poddisruptionbudget.policy/pdb"):
        assert expected in names


APPLY_V1 = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: app
        image: nginx:1.26
        env: [{{name: A, value: "1"}}, {{name: B, value: "2"}}]
        ports: [{{containerPort: 80}}]
"""

APPLY_V2 = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: Recreate}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: app
        image: nginx:1.27
        env: [{{name: A, value: "1"}}, {{name: C, value: "3"}}]
        ports: [{{containerPort: 80}}, {{containerPort: 443}}]
"""


def test_client_side_apply_and_strategic_patch(cluster: Cluster, ns: str, tmp_path) -> None:
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(APPLY_V1.format(ns=ns))
    assert "created" in cluster.kubectl("apply", "-f", str(manifest)).stdout
    assert "unchanged" in cluster.kubectl("apply", "-f", str(manifest)).stdout
    # Someone else scales it: a field the file does not own.
    cluster.kubectl("scale", "deploy", "web", "-n", ns, "--replicas=2")
    manifest.write_text(APPLY_V2.format(ns=ns))
    assert "configured" in cluster.kubectl("apply", "-f", str(manifest)).stdout
    deploy = json.loads(cluster.kubectl("get", "deploy", "web", "-n", ns, "-o", "json").stdout)
    spec = deploy["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["strategy"] == {"type": "Recreate"}  # rollingUpdate removed with the strategy change
    assert container["image"] == "nginx:1.27"
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert [p["containerPort"] for p in container["ports"]] == [80, 443]
    assert container["imagePullPolicy"] == "IfNotPresent"  # defaults survive the three-way merge
    # kubectl patch's default type is strategic: containers merge by name.
    cluster.kubectl("patch", "deploy", "web", "-n", ns, "-p",
                    '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.28"}]}}}}')
    container = json.loads(cluster.kubectl("get", "deploy", "web", "-n", ns, "-o", "json").stdout)[
        "spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.28" and container["env"][0]["name"] == "A"
    bad = cluster.kubectl("patch", "deploy", "web", "-n", ns, "-p",
                          '{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}', check=False)
    assert bad.returncode != 0 and "does not contain declared merge key: name" in bad.stderr
    restarted = cluster.kubectl("rollout", "restart", "deploy/web", "-n", ns)
    assert "restarted" in restarted.stdout
    annotations = json.loads(cluster.kubectl("get", "deploy", "web", "-n", ns, "-o", "json").stdout)[
        "spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations


SSA_DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ssa, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: ssa}}}}
  template:
    metadata: {{labels: {{app: ssa}}}}
    spec:
      containers: [{{name: app, image: "{image}"}}]
"""


def test_server_side_apply_ownership_and_conflicts(cluster: Cluster, ns: str) -> None:
    first = SSA_DEPLOY.format(ns=ns, replicas=2, image="nginx:1.26")
    assert "serverside-applied" in cluster.kubectl("apply", "--server-side", "-f", "-", input=first).stdout
    deploy = json.loads(cluster.kubectl("get", "deploy", "ssa", "-n", ns, "-o", "json",
                                        "--show-managed-fields").stdout)
    managers = {(m["manager"], m["operation"]) for m in deploy["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers
    owned = next(m for m in deploy["metadata"]["managedFields"] if m["operation"] == "Apply")["fieldsV1"]
    assert "f:replicas" in owned["f:spec"]
    # Another manager changes replicas: a later apply of a different value conflicts.
    cluster.kubectl("scale", "deploy", "ssa", "-n", ns, "--replicas=5")
    conflicting = SSA_DEPLOY.format(ns=ns, replicas=3, image="nginx:1.26")
    refused = cluster.kubectl("apply", "--server-side", "-f", "-", input=conflicting, check=False)
    assert refused.returncode != 0
    assert "Apply failed with 1 conflict: conflict with" in refused.stderr and ".spec.replicas" in refused.stderr
    forced = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=conflicting)
    assert "serverside-applied" in forced.stdout
    assert json.loads(cluster.kubectl("get", "deploy", "ssa", "-n", ns, "-o", "json").stdout)[
        "spec"]["replicas"] == 3
    # Create-if-absent through the raw API, and fieldManager is required for apply.
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied}\ndata: {a: '1'}\n"
    path = f"/api/v1/namespaces/{ns}/configmaps/applied"
    missing_manager = cluster.request("PATCH", path, body, content_type="application/apply-patch+yaml")
    assert missing_manager.status == 422
    created = cluster.request("PATCH", path + "?fieldManager=tester", body,
                              content_type="application/apply-patch+yaml")
    assert created.status == 201 and created.json()["data"] == {"a": "1"}
    assert created.json()["metadata"]["managedFields"][0]["manager"] == "tester"


def _entries(obj: dict) -> dict[tuple[str, str, str], dict]:
    return {(m["manager"], m["operation"], m.get("subresource", "")): m["fieldsV1"]
            for m in obj["metadata"].get("managedFields") or []}


def test_server_side_apply_to_a_services_status(cluster: Cluster, ns: str) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": ns},
               "spec": {"type": "LoadBalancer", "selector": {"app": "lb"}, "ports": [{"port": 80}]}}
    cluster.kubectl("apply", "--server-side", "--field-manager=owner", "-f", "-", input=json.dumps(service))
    status = {**service, "spec": {**service["spec"], "selector": {"app": "changed"}},
              "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}
    out = cluster.kubectl("apply", "--server-side", "--subresource=status", "--field-manager=lb-controller",
                          "-f", "-", input=json.dumps(status))
    assert "service/lb serverside-applied" in out.stdout
    got = json.loads(cluster.kubectl("get", "svc", "lb", "-n", ns, "-o", "json", "--show-managed-fields").stdout)
    assert got["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.10", "ipMode": "VIP"}]
    assert got["spec"]["selector"] == {"app": "lb"}  # the spec of a status apply is ignored
    entries = _entries(got)
    assert entries[("lb-controller", "Apply", "status")] == {
        "f:status": {"f:loadBalancer": {"f:ingress": {}}}}
    assert "f:status" not in entries[("owner", "Apply", "")]
    rival = {**status, "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.20"}]}}}
    clash = cluster.kubectl("apply", "--server-side", "--subresource=status", "--field-manager=rival", "-f", "-",
                            input=json.dumps(rival), check=False)
    assert clash.returncode != 0
    assert ('Apply failed with 1 conflict: conflict with "lb-controller" with subresource "status": '
            '.status.loadBalancer.ingress') in clash.stderr
    body = json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
                       "status": rival["status"]}).encode()
    raw = cluster.request("PATCH", f"/api/v1/namespaces/{ns}/services/lb/status?fieldManager=rival", body,
                          content_type="application/apply-patch+yaml")
    assert raw.status == 409 and raw.json()["details"]["causes"][0]["field"] == ".status.loadBalancer.ingress"
    forced = cluster.request("PATCH", f"/api/v1/namespaces/{ns}/services/lb/status?fieldManager=rival&force=1",
                             body, content_type="application/apply-patch+yaml")
    assert forced.status == 200 and forced.json()["status"]["loadBalancer"]["ingress"][0]["ip"] == "203.0.113.20"
    entries = _entries(forced.json())
    assert ("lb-controller", "Apply", "status") not in entries and ("rival", "Apply", "status") in entries
    # an ordinary status write is defaulted too, as every body upstream decodes
    cluster.kubectl("patch", "svc", "lb", "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.30"}]}}}))
    got = json.loads(cluster.kubectl("get", "svc", "lb", "-n", ns, "-o", "json").stdout)
    assert got["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.30", "ipMode": "VIP"}]


def test_scale_writes_record_the_scale_subresource(cluster: Cluster, ns: str) -> None:
    first = SSA_DEPLOY.format(ns=ns, replicas=2, image="nginx:1.26")
    cluster.kubectl("apply", "--server-side", "--field-manager=deployer", "-f", "-", input=first)
    cluster.kubectl("scale", "deploy", "ssa", "-n", ns, "--replicas=3")
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/ssa"
    entries = _entries(cluster.request("GET", path).json())
    assert entries[("kubectl", "Update", "scale")] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in entries[("deployer", "Apply", "")]["f:spec"]
    applied = b"apiVersion: autoscaling/v1\nkind: Scale\nmetadata: {name: ssa}\nspec: {replicas: 4}\n"
    refused = cluster.request("PATCH", path + "/scale?fieldManager=hpa", applied,
                              content_type="application/apply-patch+yaml")
    assert refused.status == 409 and refused.json()["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using autoscaling/v1: '
        '.spec.replicas')
    forced = cluster.request("PATCH", path + "/scale?fieldManager=hpa&force=true", applied,
                             content_type="application/apply-patch+yaml")
    assert forced.status == 200 and forced.json()["spec"]["replicas"] == 4
    entries = _entries(cluster.request("GET", path).json())
    assert entries[("hpa", "Apply", "scale")] == {"f:spec": {"f:replicas": {}}}
    assert ("kubectl", "Update", "scale") not in entries
    bad = cluster.request("PATCH", path + "/scale", [{"op": "replace", "path": "/spec/nothing/x", "value": 1}],
                          content_type="application/json-patch+json")
    assert (bad.status, bad.json()["message"]) == (422, "the server rejected our request due to an error in our "
                                                         "request")
    smp = cluster.request("PATCH", path + "/scale?fieldManager=smp", {"spec": {"replicas": 5}},
                          content_type="application/strategic-merge-patch+json")
    assert smp.status == 200 and _entries(cluster.request("GET", path).json())[("smp", "Update", "scale")] == {
        "f:spec": {"f:replicas": {}}}


def test_empty_omitempty_fields_are_dropped_as_go_reencodes_them(cluster: Cluster, ns: str, tmp_path) -> None:
    # Go decodes `annotations: {}` into an empty map and re-encodes it without the omitempty field.
    created = json.loads(cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "data": {},
        "metadata": {"name": "empty", "namespace": ns, "annotations": {}, "labels": {}, "finalizers": []}})).stdout)
    assert "data" not in created
    assert not {"annotations", "labels", "finalizers"} & created["metadata"].keys()
    # kubectl diff (client-side) of a server-side-applied object sends {"metadata":{"annotations":{}}} as a
    # dry-run patch: it must change nothing (no `annotations: {}`, no managedFields entry for it).
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(configmap_yaml("ssa", ns))
    cluster.kubectl("apply", "--server-side", "-f", str(manifest))
    diff = cluster.kubectl("diff", "-f", str(manifest), check=False)
    assert (diff.returncode, diff.stdout) == (0, "")
    patched = cluster.request("PATCH", f"/api/v1/namespaces/{ns}/configmaps/ssa?dryRun=All&fieldManager=x",
                              {"metadata": {"annotations": {}}},
                              content_type="application/strategic-merge-patch+json").json()
    assert "annotations" not in patched["metadata"]
    assert [m["manager"] for m in patched["metadata"]["managedFields"]] == ["kubectl"]


def test_set_subject_service_account_has_no_api_group(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "rolebinding", "rb", "-n", ns, "--clusterrole=view", "--user=u1")
    cluster.kubectl("set", "subject", "rolebinding", "rb", "-n", ns, "--serviceaccount", f"{ns}:bot")
    subjects = json.loads(cluster.kubectl("get", "rolebinding", "rb", "-n", ns, "-o", "json").stdout)["subjects"]
    # SetDefaults_Subject leaves a ServiceAccount's apiGroup "", which Go's omitempty does not print.
    assert subjects == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "u1"},
                        {"kind": "ServiceAccount", "name": "bot", "namespace": ns}]


def test_new_objects_get_the_zero_status_go_prints(cluster: Cluster, ns: str) -> None:
    def status(*args: str, input: str | None = None) -> dict:
        return json.loads(cluster.kubectl(*args, "-o", "json", input=input).stdout)["status"]

    # Non-pointer structs are never omitted, fields without omitempty print their zero value.
    assert status("create", "service", "clusterip", "s", "-n", ns, "--tcp=80:80") == {"loadBalancer": {}}
    assert status("create", "ingress", "i", "-n", ns, "--rule=a.example/=s:80") == {"loadBalancer": {}}
    cluster.kubectl("create", "deployment", "d", "-n", ns, "--image=busybox")
    assert status("autoscale", "deployment", "d", "-n", ns, "--max=3") == {
        "currentMetrics": None, "desiredReplicas": 0}
    assert status("create", "poddisruptionbudget", "p", "-n", ns, "--selector=a=b", "--min-available=1") == {
        "currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0}
    node = status("create", "-f", "-", input="{apiVersion: v1, kind: Node, metadata: {name: zero-" + ns + "}}")
    cluster.kubectl("delete", "node", "zero-" + ns)
    assert node["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 0}}
    assert node["nodeInfo"]["kubeletVersion"] == "" and node["nodeInfo"]["machineID"] == ""


def test_server_side_apply_of_an_empty_configuration_releases_every_field(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=configmap_yaml("release", ns, {"x": "1"}))
    empty = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "release", "namespace": ns}})
    assert "serverside-applied" in cluster.kubectl("apply", "--server-side", "-f", "-", input=empty).stdout
    cm = json.loads(cluster.kubectl("get", "cm", "release", "-n", ns, "-o", "json", "--show-managed-fields").stdout)
    assert "data" not in cm and "managedFields" not in cm["metadata"]


def test_deprecated_endpoints_api_warns_on_every_answer(cluster: Cluster) -> None:
    warning = "Warning: v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"
    assert warning in cluster.kubectl("get", "endpoints", "kubernetes").stderr
    missing = cluster.kubectl("get", "endpoints", "nosuch", check=False)
    assert missing.returncode != 0 and warning in missing.stderr
    assert "Warning" not in cluster.kubectl("get", "endpointslices").stderr
