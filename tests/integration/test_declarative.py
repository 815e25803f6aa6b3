"""Declarative configuration with real clients: kubectl apply/diff/edit/create/rollout/cordon, server-side
apply between managers, custom resources, a kopf operator and the official Python client's patches.

kubectl 1.37 runs everything; the gcloud SDK's kubectl (a 1.32 dispatcher that works offline against a
1.37 server with its own built-in version) also runs the apply/diff/edit round trip when it is installed.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster import Cluster
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from pocketkube.cli.kubectl import find_kubectl

GCLOUD_KUBECTL = Path("/usr/bin/kubectl")
KUBECTLS = [str(find_kubectl())] + ([str(GCLOUD_KUBECTL)] if GCLOUD_KUBECTL.exists() else [])


def kubectl(cluster: Cluster, *args: str, binary: str | None = None, input: str | None = None,
            check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([binary or str(find_kubectl()), *args], input=input, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def get(cluster: Cluster, *args: str) -> dict:
    return json.loads(kubectl(cluster, "get", *args, "-o", "json").stdout)


@pytest.fixture
def ns(cluster: Cluster) -> str:
    name = f"decl-{uuid.uuid4().hex[:8]}"
    assert cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    return name


def manifests(ns: str, *, image: str, sidecar: dict | None, history: int | None, data: dict) -> dict[str, dict]:
    containers = [{"name": "web", "image": image}] + ([sidecar] if sidecar else [])
    spec: dict = {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}
    if history is not None:
        spec["revisionHistoryLimit"] = history
    return {
        "cm.yaml": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": ns},
                    "data": data},
        "deploy.yaml": {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}}, "spec": spec},
        "svc.yaml": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    }


def write_dir(path: Path, docs: dict[str, dict]) -> Path:
    path.mkdir(exist_ok=True)
    for name, doc in docs.items():
        (path / name).write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("binary", KUBECTLS)
def test_apply_directory_unchanged_edit_diff_and_removed_fields(cluster: Cluster, ns: str, tmp_path: Path,
                                                                binary: str) -> None:
    sidecar = {"name": "side", "image": "busybox:1.36", "command": ["sleep", "3600"]}
    folder = write_dir(tmp_path / "app", manifests(ns, image="nginx:1.27", sidecar=sidecar, history=5,
                                                   data={"a": "1", "b": "2"}))
    out = kubectl(cluster, "apply", "-f", str(folder), binary=binary).stdout
    for line in ("configmap/cfg created", "deployment.apps/web created", "service/web created"):
        assert line in out
    cm_rv = get(cluster, "cm", "cfg", "-n", ns)["metadata"]["resourceVersion"]
    svc_rv = get(cluster, "svc", "web", "-n", ns)["metadata"]["resourceVersion"]
    last_applied = json.loads(get(cluster, "cm", "cfg", "-n", ns)["metadata"]["annotations"][
        "kubectl.kubernetes.io/last-applied-configuration"])
    assert last_applied["data"] == {"a": "1", "b": "2"}

    # Applying the same files again writes nothing.
    out = kubectl(cluster, "apply", "-f", str(folder), binary=binary).stdout
    for line in ("configmap/cfg unchanged", "deployment.apps/web unchanged", "service/web unchanged"):
        assert line in out
    assert get(cluster, "cm", "cfg", "-n", ns)["metadata"]["resourceVersion"] == cm_rv
    assert get(cluster, "svc", "web", "-n", ns)["metadata"]["resourceVersion"] == svc_rv
    assert get(cluster, "deploy", "web", "-n", ns)["metadata"]["generation"] == 1
    same = kubectl(cluster, "diff", "-f", str(folder), binary=binary, check=False)
    assert (same.returncode, same.stdout) == (0, ""), same.stderr

    # A new container list (sidecar swapped, image bumped), a field and a key dropped from the files.
    write_dir(folder, manifests(ns, image="nginx:1.28", sidecar={"name": "log", "image": "fluent:1"},
                                history=None, data={"a": "1"}))
    diff = kubectl(cluster, "diff", "-f", str(folder), binary=binary, check=False)
    assert diff.returncode == 1, diff.stderr
    for line in ("-  revisionHistoryLimit: 5", "+  revisionHistoryLimit: 10", "-      - image: nginx:1.27",
                 "+      - image: nginx:1.28", "-  b: \"2\"", "+        name: log"):
        assert line in diff.stdout, diff.stdout
    assert get(cluster, "cm", "cfg", "-n", ns)["metadata"]["resourceVersion"] == cm_rv  # diff is a dry run
    out = kubectl(cluster, "apply", "-f", str(folder), binary=binary).stdout
    assert "configmap/cfg configured" in out and "deployment.apps/web configured" in out
    assert "service/web unchanged" in out
    deploy = get(cluster, "deploy", "web", "-n", ns)
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "nginx:1.28"), ("log", "fluent:1")]
    assert "command" not in containers[1]
    assert deploy["spec"]["revisionHistoryLimit"] == 10  # the removed field falls back to its default
    assert deploy["metadata"]["generation"] == 2
    assert get(cluster, "cm", "cfg", "-n", ns)["data"] == {"a": "1"}
    assert kubectl(cluster, "diff", "-f", str(folder), binary=binary, check=False).returncode == 0

    # kubectl edit through an editor script: a change, a no-op, and a change the server refuses (TMPDIR: where
    # kubectl keeps its copies of the edited objects).
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i -e \"$EDIT\" \"$1\"\n")
    editor.chmod(0o755)
    edited = kubectl(cluster, "edit", "deploy/web", "-n", ns, binary=binary,
                     env={"EDITOR": str(editor), "TMPDIR": str(tmp_path), "EDIT": "s/nginx:1.28/nginx:1.29/"})
    assert "deployment.apps/web edited" in edited.stdout
    deploy = get(cluster, "deploy", "web", "-n", ns, "--show-managed-fields")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.29"
    assert ("kubectl-edit", "Update") in {(m["manager"], m["operation"]) for m in deploy["metadata"]["managedFields"]}
    rv = get(cluster, "svc", "web", "-n", ns)["metadata"]["resourceVersion"]
    cancelled = kubectl(cluster, "edit", "svc/web", "-n", ns, binary=binary,
                        env={"EDITOR": str(editor), "TMPDIR": str(tmp_path), "EDIT": "s/no-such-text//"})
    assert "Edit cancelled, no changes made." in cancelled.stdout + cancelled.stderr
    refused = kubectl(cluster, "edit", "svc/web", "-n", ns, binary=binary, check=False,
                      env={"EDITOR": str(editor), "TMPDIR": str(tmp_path), "EDIT": "s/- port: 80/- port: 99999/"})
    assert refused.returncode != 0 and 'error: services "web" is invalid' in refused.stderr
    kept = refused.stderr.split('A copy of your changes has been stored to "')[1].split('"')[0]
    assert "spec.ports[0].port: Invalid value: 99999: must be between 1 and 65535, inclusive" in Path(kept).read_text()
    Path(kept).unlink()
    assert get(cluster, "svc", "web", "-n", ns)["metadata"]["resourceVersion"] == rv


def test_server_side_apply_between_managers(cluster: Cluster, ns: str) -> None:
    def cm(manager: str, data: dict, *flags: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "namespace": ns},
               "data": data}
        return kubectl(cluster, "apply", "--server-side", f"--field-manager={manager}", *flags, "-f", "-",
                       input=json.dumps(doc), check=check)

    assert "configmap/shared serverside-applied" in cm("alice", {"a": "1", "b": "1"}).stdout
    refused = cm("bob", {"b": "2", "c": "2"}, check=False)
    assert refused.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "alice": .data.b' in refused.stderr
    assert get(cluster, "cm", "shared", "-n", ns)["data"] == {"a": "1", "b": "1"}  # nothing partial
    # A dry run of the forced apply shows the result and writes nothing.
    dry = json.loads(cm("bob", {"b": "2", "c": "2"}, "--force-conflicts", "--dry-run=server", "-o", "json").stdout)
    assert dry["data"] == {"a": "1", "b": "2", "c": "2"}
    assert get(cluster, "cm", "shared", "-n", ns)["data"] == {"a": "1", "b": "1"}
    cm("bob", {"b": "2", "c": "2"}, "--force-conflicts")
    obj = get(cluster, "cm", "shared", "-n", ns, "--show-managed-fields")
    assert obj["data"] == {"a": "1", "b": "2", "c": "2"}
    owned = {m["manager"]: set(m["fieldsV1"]["f:data"]) for m in obj["metadata"]["managedFields"]}
    assert owned == {"alice": {"f:a"}, "bob": {"f:b", "f:c"}}  # the forced apply took "b" over
    # alice stops applying "a": it goes, as nobody else owns it; "b" stays, bob owns it now.
    cm("alice", {})
    assert get(cluster, "cm", "shared", "-n", ns)["data"] == {"b": "2", "c": "2"}
    # kubectl diff --server-side is a dry-run apply.
    doc = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "namespace": ns},
                      "data": {"b": "2", "c": "3"}})
    diff = kubectl(cluster, "diff", "--server-side", "--field-manager=bob", "-f", "-", input=doc, check=False)
    assert diff.returncode == 1 and '-  c: "2"' in diff.stdout and '+  c: "3"' in diff.stdout
    assert get(cluster, "cm", "shared", "-n", ns)["data"]["c"] == "2"


def test_apply_dry_run_server_shows_the_defaulted_object(cluster: Cluster, ns: str) -> None:
    doc = json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dry", "namespace": ns},
                      "spec": {"selector": {"matchLabels": {"app": "dry"}}, "template": {
                          "metadata": {"labels": {"app": "dry"}}, "spec": {"containers": [
                              {"name": "c", "image": "nginx"}]}}}})
    for flags in ([], ["--server-side"]):
        out = kubectl(cluster, "apply", *flags, "--dry-run=server", "-f", "-", "-o", "json", input=doc).stdout
        shown = json.loads(out)
        assert shown["metadata"]["uid"] and shown["metadata"]["generation"] == 1
        spec = shown["spec"]
        assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
        assert spec["strategy"] == {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        container = spec["template"]["spec"]["containers"][0]
        assert container["imagePullPolicy"] == "Always"  # an untagged image is :latest
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert kubectl(cluster, "get", "deploy", "dry", "-n", ns, check=False).returncode != 0
    # A new object: diff shows it whole, exit 1, and still nothing is written.
    diff = kubectl(cluster, "diff", "-f", "-", input=doc, check=False)
    assert diff.returncode == 1 and "+kind: Deployment" in diff.stdout and "+  name: dry" in diff.stdout
    assert cluster.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/dry").status == 404


def test_apply_a_list(cluster: Cluster, ns: str) -> None:
    """A List (what `kubectl get -o yaml` of several objects prints) is in no OpenAPI v3 document: kubectl
    validates it with the protobuf /openapi/v2, item by item."""
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"listed-{i}", "namespace": ns},
              "data": {"i": str(i)}} for i in range(2)]
    doc = {"apiVersion": "v1", "kind": "List", "items": items}
    out = kubectl(cluster, "apply", "-f", "-", input=json.dumps(doc)).stdout
    assert "configmap/listed-0 created" in out and "configmap/listed-1 created" in out
    items[1]["data"] = {"i": "changed"}
    assert "configmap/listed-1 configured" in kubectl(cluster, "apply", "-f", "-", input=json.dumps(doc)).stdout
    items[0]["bogus"] = True
    refused = kubectl(cluster, "apply", "--validate=strict", "-f", "-", input=json.dumps(doc), check=False)
    assert refused.returncode != 0 and 'unknown field "bogus"' in refused.stderr


def self_signed_pair(common_name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_create_generators(cluster: Cluster, tmp_path: Path) -> None:
    ns = f"gen-{uuid.uuid4().hex[:8]}"
    assert kubectl(cluster, "create", "namespace", ns).stdout.strip() == f"namespace/{ns} created"
    assert get(cluster, "namespace", ns)["status"]["phase"] == "Active"

    out = kubectl(cluster, "create", "deployment", "web", "--image=nginx", "--replicas=3", "-n", ns).stdout
    assert out.strip() == "deployment.apps/web created"
    deploy = get(cluster, "deploy", "web", "-n", ns)
    assert deploy["spec"]["replicas"] == 3 and deploy["metadata"]["labels"] == {"app": "web"}
    assert deploy["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert [(c["name"], c["image"]) for c in deploy["spec"]["template"]["spec"]["containers"]] == [("nginx", "nginx")]

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.properties").write_text("mode=prod\n")
    (tmp_path / "conf" / "log.level").write_text("debug")
    (tmp_path / "motd.txt").write_text("hello\n")
    kubectl(cluster, "create", "configmap", "files", "-n", ns, f"--from-file={tmp_path / 'conf'}",
            f"--from-file=greeting={tmp_path / 'motd.txt'}", "--from-literal=plain=yes")
    assert get(cluster, "cm", "files", "-n", ns)["data"] == {
        "app.properties": "mode=prod\n", "log.level": "debug", "greeting": "hello\n", "plain": "yes"}

    cert, key = self_signed_pair("web.example.com")
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    kubectl(cluster, "create", "secret", "tls", "web-tls", "-n", ns, f"--cert={tmp_path / 'tls.crt'}",
            f"--key={tmp_path / 'tls.key'}")
    tls = get(cluster, "secret", "web-tls", "-n", ns)
    assert tls["type"] == "kubernetes.io/tls"
    assert x509.load_pem_x509_certificate(base64.b64decode(tls["data"]["tls.crt"])).subject == \
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web.example.com")])
    kubectl(cluster, "create", "secret", "docker-registry", "pull", "-n", ns, "--docker-server=registry.example.com",
            "--docker-username=robot", "--docker-password=s3cret", "--docker-email=robot@example.com")
    pull = get(cluster, "secret", "pull", "-n", ns)
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(pull["data"][".dockerconfigjson"]))["auths"]
    assert auths["registry.example.com"]["username"] == "robot"
    assert auths["registry.example.com"]["auth"] == "cm9ib3Q6czNjcmV0"  # base64("robot:s3cret")
    kubectl(cluster, "create", "secret", "generic", "typed", "-n", ns, "--type=example.com/token",
            f"--from-file=token={tmp_path / 'motd.txt'}")
    assert get(cluster, "secret", "typed", "-n", ns)["type"] == "example.com/token"
    bad_tls = kubectl(cluster, "create", "secret", "generic", "half", "-n", ns, "--type=kubernetes.io/tls",
                      "--from-literal=tls.crt=x", check=False)
    assert bad_tls.returncode != 0 and "data[tls.key]: Required value" in bad_tls.stderr

    kubectl(cluster, "create", "cronjob", "tick", "-n", ns, "--image=busybox:1.36", "--schedule=*/5 * * * *",
            "--", "echo", "tick")
    cron = get(cluster, "cronjob", "tick", "-n", ns)
    assert cron["spec"]["schedule"] == "*/5 * * * *" and cron["spec"]["concurrencyPolicy"] == "Allow"
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    kubectl(cluster, "create", "job", "once", "-n", ns, "--image=busybox:1.36", "--", "date")
    job = get(cluster, "job", "once", "-n", ns)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["date"]
    assert job["spec"]["backoffLimit"] == 6 and job["spec"]["completions"] == 1
    kubectl(cluster, "create", "job", "manual", "--from=cronjob/tick", "-n", ns)
    manual = get(cluster, "job", "manual", "-n", ns)
    assert manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    owner = manual["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("CronJob", "tick", cron["metadata"]["uid"])
    missing = kubectl(cluster, "create", "job", "x", "--from=cronjob/nope", "-n", ns, check=False)
    assert missing.returncode != 0 and 'cronjobs.batch "nope" not found' in missing.stderr

    kubectl(cluster, "create", "service", "clusterip", "api", "-n", ns, "--tcp=5678:8080")
    svc = get(cluster, "svc", "api", "-n", ns)
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["clusterIP"].startswith("10.43.")
    assert svc["spec"]["ports"] == [{"name": "5678-8080", "port": 5678, "protocol": "TCP", "targetPort": 8080}]
    assert svc["spec"]["selector"] == {"app": "api"}
    kubectl(cluster, "create", "service", "clusterip", "headless", "-n", ns, "--clusterip=None", "--tcp=80")
    assert get(cluster, "svc", "headless", "-n", ns)["spec"]["clusterIP"] == "None"
    exists = kubectl(cluster, "create", "deployment", "web", "--image=nginx", "-n", ns, check=False)
    assert exists.returncode != 0 and 'deployments.apps "web" already exists' in exists.stderr


def test_rollout_patches_and_cordon(cluster: Cluster, ns: str) -> None:
    kubectl(cluster, "create", "deployment", "web", "--image=nginx:1.27", "-n", ns)
    assert "deployment.apps/web paused" in kubectl(cluster, "rollout", "pause", "deploy/web", "-n", ns).stdout
    assert get(cluster, "deploy", "web", "-n", ns)["spec"]["paused"] is True
    again = kubectl(cluster, "rollout", "pause", "deploy/web", "-n", ns, check=False)
    assert again.returncode != 0 and 'deployments.apps "web" is already paused' in again.stderr
    assert "deployment.apps/web resumed" in kubectl(cluster, "rollout", "resume", "deploy/web", "-n", ns).stdout
    assert not get(cluster, "deploy", "web", "-n", ns)["spec"].get("paused")
    again = kubectl(cluster, "rollout", "resume", "deploy/web", "-n", ns, check=False)
    assert again.returncode != 0 and 'deployments.apps "web" is not paused' in again.stderr
    generation = get(cluster, "deploy", "web", "-n", ns)["metadata"]["generation"]
    assert "deployment.apps/web restarted" in kubectl(cluster, "rollout", "restart", "deploy/web", "-n", ns).stdout
    deploy = get(cluster, "deploy", "web", "-n", ns)
    assert "kubectl.kubernetes.io/restartedAt" in deploy["spec"]["template"]["metadata"]["annotations"]
    assert deploy["metadata"]["generation"] == generation + 1

    node = f"{ns}-node"
    assert cluster.request("POST", "/api/v1/nodes", {"metadata": {"name": node}}).status == 201
    try:
        assert f"node/{node} cordoned" in kubectl(cluster, "cordon", node).stdout
        assert get(cluster, "node", node)["spec"]["unschedulable"] is True
        assert "SchedulingDisabled" in kubectl(cluster, "get", "node", node).stdout
        assert f"node/{node} already cordoned" in kubectl(cluster, "cordon", node).stdout
        assert f"node/{node} uncordoned" in kubectl(cluster, "uncordon", node).stdout
        assert "unschedulable" not in get(cluster, "node", node)["spec"]
        assert "SchedulingDisabled" not in kubectl(cluster, "get", "node", node).stdout
    finally:
        kubectl(cluster, "delete", "node", node, "--wait=false")


GROUP = "kopf.example.com"
GREETING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"greetings.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"plural": "greetings", "singular": "greeting", "kind": "Greeting", "shortNames": ["gr"]},
             "versions": [{
                 "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                 "additionalPrinterColumns": [{"name": "Message", "type": "string", "jsonPath": ".spec.message"},
                                              {"name": "Reply", "type": "string", "jsonPath": ".status.reply"}],
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "description": "What to greet.", "properties": {
                         "message": {"type": "string", "description": "Who is greeted."},
                         "loud": {"type": "boolean", "default": False}}},
                     "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}

OPERATOR = '''
import kopf


@kopf.on.create("kopf.example.com", "v1", "greetings")
def greet(spec, patch, **_):
    patch.status["reply"] = "hello " + spec.get("message", "")


@kopf.on.delete("kopf.example.com", "v1", "greetings")
def farewell(name, logger, **_):
    logger.info("farewell %s", name)
'''


@pytest.fixture(scope="module")
def greetings(cluster: Cluster) -> Iterator[Cluster]:
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(GREETING_CRD))
    kubectl(cluster, "wait", "--for=condition=Established", f"crd/greetings.{GROUP}", "--timeout=10s")
    yield cluster
    kubectl(cluster, "delete", "crd", f"greetings.{GROUP}", "--ignore-not-found", "--timeout=30s")


def greeting(name: str, ns: str, message: str) -> str:
    return json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Greeting", "metadata": {"name": name, "namespace": ns},
                       "spec": {"message": message}})


def test_custom_resource_with_kubectl(greetings: Cluster, ns: str, tmp_path: Path) -> None:
    cluster = greetings
    watcher = subprocess.Popen([str(find_kubectl()), "get", "greetings", "-n", ns, "-w", "--output-watch-events"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    try:
        time.sleep(1.5)  # the watch is established before the changes
        assert "greeting.kopf.example.com/hi created" in kubectl(cluster, "apply", "-f", "-",
                                                                 input=greeting("hi", ns, "world")).stdout
        assert "unchanged" in kubectl(cluster, "apply", "-f", "-", input=greeting("hi", ns, "world")).stdout
        diff = kubectl(cluster, "diff", "-f", "-", input=greeting("hi", ns, "moon"), check=False)
        assert diff.returncode == 1 and "-  message: world" in diff.stdout and "+  message: moon" in diff.stdout
        kubectl(cluster, "apply", "-f", "-", input=greeting("hi", ns, "moon"))  # a merge patch for a CR
        ssa = kubectl(cluster, "apply", "--server-side", "--field-manager=ops", "-f", "-",
                      input=greeting("ssa", ns, "applied"))
        assert "greeting.kopf.example.com/ssa serverside-applied" in ssa.stdout
        managed = get(cluster, "greeting", "ssa", "-n", ns, "--show-managed-fields")["metadata"]["managedFields"]
        assert [(m["manager"], m["operation"], m["fieldsV1"]["f:spec"]) for m in managed] == [
            ("ops", "Apply", {"f:message": {}})]
        clash = kubectl(cluster, "apply", "--server-side", "--field-manager=other", "-f", "-",
                        input=greeting("ssa", ns, "changed"), check=False)
        assert clash.returncode != 0 and 'conflict with "ops": .spec.message' in clash.stderr
        kubectl(cluster, "patch", "greeting", "hi", "-n", ns, "--subresource=status", "--type=merge",
                "-p", '{"status":{"reply":"hey"}}')
        table = kubectl(cluster, "get", "gr", "-n", ns).stdout.splitlines()
        assert table[0].split() == ["NAME", "MESSAGE", "REPLY"]
        assert table[1].split() == ["hi", "moon", "hey"] and table[2].split() == ["ssa", "applied"]
        editor = tmp_path / "editor.sh"
        editor.write_text("#!/bin/sh\nsed -i -e 's/message: moon/message: sun/' \"$1\"\n")
        editor.chmod(0o755)
        kubectl(cluster, "edit", "greeting/hi", "-n", ns, env={"EDITOR": str(editor), "TMPDIR": str(tmp_path)})
        obj = get(cluster, "greeting", "hi", "-n", ns)
        assert obj["spec"] == {"message": "sun", "loud": False}  # the schema default is applied
        explained = kubectl(cluster, "explain", "greetings.spec").stdout
        assert "KIND:       Greeting" in explained and "Who is greeted." in explained
        assert "loud\t<boolean>" in explained
        assert 'greeting.kopf.example.com "hi" deleted' in kubectl(cluster, "delete", "gr", "hi", "-n", ns).stdout
        deadline = time.monotonic() + 15
        events: list[list[str]] = []
        assert watcher.stdout is not None
        while time.monotonic() < deadline and not any(e[:2] == ["DELETED", "hi"] for e in events):
            line = watcher.stdout.readline()
            if not line:
                break
            events.append(line.split())
        assert events[0][:3] == ["EVENT", "NAME", "MESSAGE"]
        seen = [(e[0], e[1]) for e in events[1:]]
        assert seen[0] == ("ADDED", "hi") and ("MODIFIED", "hi") in seen and ("ADDED", "ssa") in seen
        assert seen[-1] == ("DELETED", "hi")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


def test_server_side_apply_refuses_undeclared_fields(greetings: Cluster, ns: str) -> None:
    """Upstream's typed conversion of the configuration fails before any fieldValidation applies, for built-in
    kinds and custom resources alike (upstream: a reason-less 500; here a 400 with the same message); preserved
    unknown fields stay allowed."""
    cluster = greetings
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typo", "namespace": ns},
                 "data": {"a": "1"}, "dta": {"b": "2"}}
    custom = json.loads(greeting("typo", ns, "hi"))
    custom["spec"]["volume"] = 11
    for doc, gvk in ((configmap, "/v1, Kind=ConfigMap"), (custom, f"{GROUP}/v1, Kind=Greeting")):
        for validate in ("--validate=false", "--validate=strict"):
            refused = kubectl(cluster, "apply", "--server-side", validate, "-f", "-", input=json.dumps(doc),
                              check=False)
            assert refused.returncode != 0 and refused.stderr.startswith("Error from server (BadRequest): ")
            path = ".dta" if doc is configmap else ".spec.volume"
            assert (f"failed to create typed patch object ({ns}/typo; {gvk}): {path}: field not declared in schema"
                    in refused.stderr)
    assert "typo" not in kubectl(cluster, "get", "cm,greetings", "-n", ns, "-o", "name").stdout  # nothing written
    custom["spec"].pop("volume")
    custom["status"] = {"anything": {"goes": True}}  # status preserves unknown fields
    kubectl(cluster, "apply", "--server-side", "-f", "-", input=json.dumps(custom))


def test_kopf_operator_reacts_and_releases_its_finalizer(greetings: Cluster, ns: str, tmp_path: Path) -> None:
    cluster = greetings
    operator = tmp_path / "greeter.py"  # not operator.py: that name shadows the standard library
    operator.write_text(OPERATOR)
    log_path = tmp_path / "kopf.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-n", ns, "--verbose",
                                 str(operator)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    try:
        wait_for(lambda: "Starting the watch-stream for greetings.v1.kopf.example.com" in log_path.read_text(),
                 log_path)
        kubectl(cluster, "apply", "-f", "-", input=greeting("g1", ns, "world"))
        wait_for(lambda: (get(cluster, "greeting", "g1", "-n", ns).get("status") or {}).get("reply")
                 == "hello world", log_path)
        obj = get(cluster, "greeting", "g1", "-n", ns)
        assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]
        # Deleting waits on kopf's finalizer: kopf runs the handler, removes the finalizer, the object goes.
        deleted = kubectl(cluster, "delete", "greeting", "g1", "-n", ns, "--timeout=30s")
        assert 'greeting.kopf.example.com "g1" deleted' in deleted.stdout
        assert cluster.request("GET", f"/apis/{GROUP}/v1/namespaces/{ns}/greetings/g1").status == 404
        wait_for(lambda: "farewell g1" in log_path.read_text(), log_path)
        text = log_path.read_text()
        assert "Handler 'greet' succeeded" in text and "Handler 'farewell' succeeded" in text
        assert "APIError" not in text and "Traceback" not in text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(check, log_path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"condition not met in time; kopf log:\n{log_path.read_text()}")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api_client:
        yield api_client


def test_python_client_patches_and_server_side_apply(api: client.ApiClient, ns: str, tmp_path: Path) -> None:
    apps = client.AppsV1Api(api)
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "py", "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "py"}}, "template": {
                "metadata": {"labels": {"app": "py"}}, "spec": {"containers": [
                    {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}}
    created = apps.patch_namespaced_deployment("py", ns, body, field_manager="py-apply",
                                               _content_type="application/apply-patch+yaml")
    assert created.spec.replicas == 1
    assert [(m.manager, m.operation) for m in created.metadata.managed_fields] == [("py-apply", "Apply")]
    # The client's default for a dict is a strategic merge patch: containers merge by name.
    patched = apps.patch_namespaced_deployment("py", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "b", "image": "b:2"}]}}}})
    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [("a", "a:1"), ("b", "b:2")]
    merged = apps.patch_namespaced_deployment("py", ns, {"metadata": {"labels": {"tier": "x"}}},
                                              _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"tier": "x"}
    replaced = apps.patch_namespaced_deployment("py", ns, [{"op": "replace", "path": "/spec/replicas", "value": 4}])
    assert replaced.spec.replicas == 4
    with pytest.raises(ApiException) as refused:
        apps.patch_namespaced_deployment("py", ns, [{"op": "test", "path": "/spec/replicas", "value": 1}])
    assert refused.value.status == 422
    # The patches made the client's own manager (its User-Agent) own replicas and b's image: applying
    # other values conflicts with it.
    body["spec"]["replicas"] = 2
    with pytest.raises(ApiException) as conflict:
        apps.patch_namespaced_deployment("py", ns, body, field_manager="py-apply",
                                         _content_type="application/apply-patch+yaml")
    status = json.loads(conflict.value.body)
    assert conflict.value.status == 409 and status["reason"] == "Conflict"
    assert status["message"] == ('Apply failed with 2 conflicts: conflicts with "OpenAPI-Generator" using apps/v1:\n'
                                 '- .spec.replicas\n- .spec.template.spec.containers[name="b"].image')
    forced = apps.patch_namespaced_deployment("py", ns, body, field_manager="py-apply", force=True,
                                              _content_type="application/apply-patch+yaml")
    assert forced.spec.replicas == 2

    # the discovery cache goes with the test, not to /tmp
    resources = dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json")).resources.get(api_version="v1", kind="ConfigMap")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dyn", "namespace": ns}, "data": {"k": "v"}}
    applied = resources.server_side_apply(body=cm, namespace=ns, field_manager="dyn")
    assert applied.to_dict()["data"] == {"k": "v"} and applied.metadata.managedFields[0].manager == "dyn"
    patched_cm = resources.patch(body={"data": {"k2": "v2"}}, name="dyn", namespace=ns,
                                 content_type="application/merge-patch+json")
    assert patched_cm.to_dict()["data"] == {"k": "v", "k2": "v2"}
    with pytest.raises(ApiException) as no_manager:
        resources.server_side_apply(body=cm, namespace=ns)
    assert no_manager.value.status == 422
