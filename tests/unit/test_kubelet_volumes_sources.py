"""Volume sources on their own, against upstream's rules and messages: configMap/secret payloads, the
downward API's formats and resource arithmetic, hostPath type checks, fsGroup ownership, memory-backed
volume sizes and $(VAR) expansion for subPathExpr."""

from __future__ import annotations

import base64
import os
import socket
import stat
from pathlib import Path

import pytest

from pocketkube.kubelet.volumes import downward, hostpath
from pocketkube.kubelet.volumes.atomic_writer import FileProjection
from pocketkube.kubelet.volumes.configmap_secret import configmap_payload, secret_payload
from pocketkube.kubelet.volumes.emptydir import memory_volume_size, pod_memory_limit
from pocketkube.kubelet.volumes.model import SourceError
from pocketkube.kubelet.volumes.ownership import fs_user_from, set_volume_ownership
from pocketkube.kubelet.volumes.subpath import container_env, expand, expand_subpath_expr

MiB = 1024 * 1024
ALLOCATABLE = {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- configMap and secret -------------------------------------------------------------------------
def test_configmap_all_keys_with_binary_data() -> None:
    cm = {"data": {"a": "x", "b.conf": "é"}, "binaryData": {"bin": _b64("\x00\x01")}}
    assert configmap_payload(cm, None, None, False) == {
        "a": FileProjection(b"x", 0o644), "b.conf": FileProjection("é".encode(), 0o644),
        "bin": FileProjection(b"\x00\x01", 0o644)}
    assert configmap_payload(cm, [], 0o400, False)["a"].mode == 0o400


def test_configmap_items_paths_and_modes() -> None:
    cm = {"data": {"a": "x", "b": "y"}, "binaryData": {"c": _b64("z")}}
    items = [{"key": "a", "path": "dir/a.txt", "mode": 0o600}, {"key": "c", "path": "c"}]
    assert configmap_payload(cm, items, 0o440, False) == {"dir/a.txt": FileProjection(b"x", 0o600),
                                                          "c": FileProjection(b"z", 0o440)}


def test_configmap_missing_key() -> None:
    items = [{"key": "nope", "path": "n"}, {"key": "a", "path": "a"}]
    with pytest.raises(SourceError, match="^configmap references non-existent config key: nope$"):
        configmap_payload({"data": {"a": "1"}}, items, None, False)
    assert configmap_payload({"data": {"a": "1"}}, items, None, True) == {"a": FileProjection(b"1", 0o644)}


def test_secret_data_is_decoded() -> None:
    secret = {"data": {"user": _b64("admin"), "key": _b64("\xff")}}
    assert secret_payload(secret, None, 0o400, False) == {"user": FileProjection(b"admin", 0o400),
                                                          "key": FileProjection("\xff".encode(), 0o400)}
    with pytest.raises(SourceError, match="^references non-existent secret key: pw$"):
        secret_payload(secret, [{"key": "pw", "path": "pw"}], None, False)
    assert secret_payload({}, None, None, True) == {}


# --- downward API ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "quoted"), [
    ("plain", '"plain"'),
    ('say "hi" \\o/', '"say \\"hi\\" \\\\o/"'),
    ("tab\tnl\ncr\rbell\a", '"tab\\tnl\\ncr\\rbell\\a"'),
    ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
    ("héllo ☃ 日本", '"héllo ☃ 日本"'),
    ("\u200b\u00a0", '"\\u200b\\u00a0"'),   # format and non-ASCII space characters are escaped
    ("\U000e0001", '"\\U000e0001"'),
])
def test_go_quote(text: str, quoted: str) -> None:
    assert downward.go_quote(text) == quoted


POD = {
    "metadata": {"name": "web-0", "namespace": "shop", "uid": "1234-abcd",
                 "labels": {"tier": "front", "app": "web"},
                 "annotations": {"note": 'multi\nline "quoted"', "example.com/owner": "team"}},
    "spec": {"nodeName": "node-1", "serviceAccountName": "builder",
             "containers": [{"name": "app", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"},
                                                          "requests": {"cpu": "250m", "memory": "32Mi"}}},
                            {"name": "bare"}],
             "initContainers": [{"name": "init", "resources": {"limits": {"memory": "1Gi"}}}]},
    "status": {"podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}, {"ip": "fd00::7"}], "hostIP": "192.0.2.1"},
}


def test_labels_and_annotations_files() -> None:
    assert downward.extract_field_path(POD, "metadata.labels") == 'app="web"\ntier="front"'
    assert downward.extract_field_path(POD, "metadata.annotations") == \
        'example.com/owner="team"\nnote="multi\\nline \\"quoted\\""'
    assert downward.extract_field_path({"metadata": {}}, "metadata.labels") == ""


def test_simple_and_subscripted_fields() -> None:
    values = {path: downward.extract_field_path(POD, path) for path in (
        "metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels['app']",
        "metadata.annotations['example.com/owner']", "metadata.labels['missing']")}
    assert values == {"metadata.name": "web-0", "metadata.namespace": "shop", "metadata.uid": "1234-abcd",
                      "metadata.labels['app']": "web", "metadata.annotations['example.com/owner']": "team",
                      "metadata.labels['missing']": ""}


@pytest.mark.parametrize(("path", "message"), [
    ("spec.nodeName", "unsupported fieldPath: spec.nodeName"),
    ("metadata.name['x']", 'fieldPath "metadata.name[\'x\']" does not support subscript'),
    ("metadata.labels['-bad']", "invalid key subscript in metadata.labels['-bad']: name part must"),
    ("metadata.annotations['UPPER.example.com/x']", None),  # annotation keys are checked lowercased
])
def test_field_path_errors(path: str, message: str | None) -> None:
    if message is None:
        assert downward.extract_field_path(POD, path) == ""
        return
    with pytest.raises(SourceError) as err:
        downward.extract_field_path(POD, path)
    assert str(err.value).startswith(message)


def test_env_only_fields() -> None:
    assert [downward.pod_field_value(POD, p) for p in (
        "spec.nodeName", "spec.serviceAccountName", "status.podIP", "status.podIPs", "status.hostIP")] == \
        ["node-1", "builder", "10.42.0.7", "10.42.0.7,fd00::7", "192.0.2.1"]


@pytest.mark.parametrize(("container", "resource", "divisor", "value"), [
    ("app", "limits.cpu", None, "1"),            # 0.5 cores rounded up
    ("app", "limits.cpu", "1m", "500"),
    ("app", "requests.cpu", "1m", "250"),
    ("app", "limits.memory", None, str(64 * MiB)),
    ("app", "limits.memory", "1Mi", "64"),
    ("app", "requests.memory", "1M", "34"),      # 33554432 / 10^6 rounded up
    ("app", "limits.memory", "0", str(64 * MiB)),  # a zero divisor means 1
    ("bare", "limits.cpu", "1m", "4000"),         # no limit: the node's allocatable
    ("bare", "limits.memory", "1Gi", "8"),
    ("bare", "limits.ephemeral-storage", "1Gi", "100"),
    ("bare", "requests.memory", None, "0"),       # requests are never defaulted here
    ("init", "limits.memory", "1Mi", "1024"),     # init containers are found too
    ("app", "limits.hugepages-2Mi", None, "0"),
])
def test_resource_field_values(container: str, resource: str, divisor: str | None, value: str) -> None:
    ref = {"containerName": container, "resource": resource}
    if divisor is not None:
        ref["divisor"] = divisor
    assert downward.container_resource_value(ref, downward.find_container(POD, container), ALLOCATABLE) == value


def test_collect_data_modes_and_errors() -> None:
    items = [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
             {"path": "dir/labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o600},
             {"path": "./mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory",
                                                     "divisor": "1Mi"}}]
    assert downward.collect_data(items, POD, ALLOCATABLE, 0o444) == {
        "name": FileProjection(b"web-0", 0o444), "dir/labels": FileProjection(b'app="web"\ntier="front"', 0o600),
        "mem": FileProjection(b"64", 0o444)}
    bad = [{"path": "a", "resourceFieldRef": {"containerName": "ghost", "resource": "limits.cpu"}},
           {"path": "b", "fieldRef": {"fieldPath": "status.podIP"}},
           {"path": "c", "resourceFieldRef": {"containerName": "app", "resource": "limits.gpu"}}]
    with pytest.raises(SourceError) as err:
        downward.collect_data(bad, POD, ALLOCATABLE, None)
    assert str(err.value) == ("[container ghost not found, unsupported fieldPath: status.podIP, "
                              "unsupported container resource : limits.gpu]")


# --- hostPath ---------------------------------------------------------------------------------------
@pytest.fixture
def host_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "link-to-dir").symlink_to(tmp_path / "dir")
    os.mknod(tmp_path / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(tmp_path / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    sock.close()
    return {name: str(tmp_path / name) for name in ("dir", "file", "link-to-dir", "chr", "blk", "sock")}


@pytest.mark.parametrize(("kind", "accepts", "what"), [
    ("Directory", {"dir", "link-to-dir"}, "a directory"),
    ("DirectoryOrCreate", {"dir", "link-to-dir"}, "a directory"),
    ("File", {"file"}, "a file"),
    ("FileOrCreate", {"file"}, "a file"),
    ("Socket", {"sock"}, "a socket file"),
    ("CharDevice", {"chr"}, "a character device"),
    ("BlockDevice", {"blk"}, "a block device"),
])
def test_host_path_types(host_files: dict[str, str], kind: str, accepts: set[str], what: str) -> None:
    for name, path in host_files.items():
        if name in accepts:
            hostpath.check_type(path, kind)
        else:
            with pytest.raises(SourceError) as err:
                hostpath.check_type(path, kind)
            assert str(err.value) == f"hostPath type check failed: {path} is not {what}"


def test_host_path_unset_and_invalid_types(tmp_path: Path) -> None:
    hostpath.check_type(str(tmp_path / "missing"), "")
    hostpath.check_type(str(tmp_path / "missing"), None)
    with pytest.raises(SourceError, match="^Fifo is an invalid volume type$"):
        hostpath.check_type(str(tmp_path), "Fifo")
    with pytest.raises(SourceError, match="^hostPath type check failed: .* is not a directory$"):
        hostpath.check_type(str(tmp_path / "missing"), "Directory")
    with pytest.raises(SourceError, match="^invalid HostPath `/a/../b`: must not contain '..'$"):
        hostpath.validate_no_backsteps("/a/../b")


def test_host_path_or_create(tmp_path: Path) -> None:
    new_dir, new_file = tmp_path / "a" / "b", tmp_path / "f"
    hostpath.check_type(str(new_dir), "DirectoryOrCreate")
    hostpath.check_type(str(new_file), "FileOrCreate")
    assert stat.S_IMODE(new_dir.stat().st_mode) == 0o755 and new_dir.is_dir()
    assert stat.S_IMODE(new_file.stat().st_mode) == 0o644 and new_file.read_bytes() == b""
    with pytest.raises(SourceError, match="^open .*/nodir/f: no such file or directory$"):
        hostpath.check_type(str(tmp_path / "nodir" / "f"), "FileOrCreate")  # parents are not made


# --- fsGroup ------------------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode) | (path.lstat().st_mode & stat.S_ISGID)


def test_fs_group_ownership(tmp_path: Path) -> None:
    volume = tmp_path / "v"
    (volume / "sub").mkdir(parents=True, mode=0o700)
    volume.chmod(0o755)
    (volume / "sub").chmod(0o700)
    (volume / "f").write_text("x")
    (volume / "f").chmod(0o600)
    (tmp_path / "outside").write_text("o")
    (tmp_path / "outside").chmod(0o600)
    (volume / "link").symlink_to(tmp_path / "outside")
    set_volume_ownership(volume, 2000, read_only=False)
    assert {p.name: (p.lstat().st_gid, _mode(p)) for p in (volume, volume / "sub", volume / "f")} == {
        "v": (2000, 0o2775), "sub": (2000, 0o2770), "f": (2000, 0o660)}
    assert (volume / "link").lstat().st_gid == 2000
    # a symlink's target keeps its mode and group: chmod would have passed through the link
    assert ((tmp_path / "outside").stat().st_gid, _mode(tmp_path / "outside")) == (0, 0o600)


def test_fs_group_read_only_and_on_root_mismatch(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "f").chmod(0o600)
    set_volume_ownership(tmp_path, 3000, read_only=True)
    assert _mode(tmp_path / "f") == 0o640
    (tmp_path / "g").write_text("y")
    os.chown(tmp_path / "g", 0, 0)
    (tmp_path / "g").chmod(0o600)
    # the root is already right: OnRootMismatch leaves the rest alone
    set_volume_ownership(tmp_path, 3000, read_only=True, change_policy="OnRootMismatch")
    assert ((tmp_path / "g").stat().st_gid, _mode(tmp_path / "g")) == (0, 0o600)
    set_volume_ownership(tmp_path, 3000, read_only=True, change_policy="Always")
    assert ((tmp_path / "g").stat().st_gid, _mode(tmp_path / "g")) == (3000, 0o640)
    set_volume_ownership(tmp_path, None, read_only=True)


def test_fs_user_from() -> None:
    def pod(pod_user: int | None, *users: int | None) -> dict:
        spec: dict = {"securityContext": {} if pod_user is None else {"runAsUser": pod_user},
                      "containers": [{"name": f"c{i}", "securityContext": {} if u is None else {"runAsUser": u}}
                                     for i, u in enumerate(users)]}
        return {"spec": spec}
    assert fs_user_from(pod(1000, None, None)) == 1000
    assert fs_user_from(pod(None, 7, 7)) == 7
    assert fs_user_from(pod(1000, 7, None)) is None
    assert fs_user_from(pod(None, 7, None)) is None


# --- memory-backed volumes ---------------------------------------------------------------------------
def _limits(memory: str | None) -> dict:
    return {"resources": {"limits": {"memory": memory}}} if memory else {}


def test_pod_memory_limit() -> None:
    spec = {"containers": [{"name": "a", **_limits("100Mi")}, {"name": "b", **_limits("50Mi")}],
            "initContainers": [{"name": "i", **_limits("200Mi")},
                               {"name": "s", "restartPolicy": "Always", **_limits("10Mi")}]}
    assert pod_memory_limit({"spec": spec}) == 200 * MiB  # the init container alone needs more
    spec["initContainers"][0] = {"name": "i", **_limits("20Mi")}
    assert pod_memory_limit({"spec": spec}) == 160 * MiB  # containers plus the sidecar
    spec["overhead"] = {"memory": "1Mi"}
    assert pod_memory_limit({"spec": spec}) == 161 * MiB
    spec["containers"].append({"name": "c"})
    assert pod_memory_limit({"spec": spec}) is None


def test_memory_volume_size() -> None:
    limited = {"spec": {"containers": [{"name": "a", **_limits("64Mi")}]}}
    node = 1024 * MiB
    assert memory_volume_size({"spec": {"containers": [{"name": "a"}]}}, None, node) == node
    assert memory_volume_size(limited, None, node) == 64 * MiB
    assert memory_volume_size(limited, "16Mi", node) == 16 * MiB
    assert memory_volume_size(limited, "1Gi", node) == 64 * MiB  # a sizeLimit above the pod's limit is moot


# --- $(VAR) expansion ------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expanded"), [
    ("$(A)/x", "1/x"),
    ("$(A)$(B)", "12"),
    ("$$(A)", "$(A)"),
    ("$(MISSING)", "<MISSING>"),
    ("$(A", "$(A"),
    ("a$b", "a$b"),
    ("end$", "end$"),
    ("$()", "<>"),
])
def test_expand(text: str, expanded: str) -> None:
    values = {"A": "1", "B": "2"}
    assert expand(text, lambda key: values.get(key, f"<{key}>")) == expanded


def test_subpath_expr_and_container_env() -> None:
    container = {"name": "app", "env": [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "DIR", "value": "logs/$(POD)/$(LATER)"},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "EMPTY", "value": ""},
        {"name": "LATER", "value": "x"},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}
    container.update(POD["spec"]["containers"][0])
    env = container_env(POD, {**container, "name": "app"}, ALLOCATABLE)
    assert env == {"POD": "web-0", "DIR": "logs/web-0/$(LATER)", "MEM": "64", "EMPTY": "", "LATER": "x"}
    assert expand_subpath_expr("$(DIR)/$(MEM)", env) == "logs/web-0/$(LATER)/64"
    with pytest.raises(SourceError, match="^missing value for EMPTY, FROM_CM$"):
        expand_subpath_expr("$(FROM_CM)/$(EMPTY)", env)
