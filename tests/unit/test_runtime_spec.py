"""The OCI config.json builder, Docker's capability / command / environment rules and user lookup inside an
image's rootfs. Pure functions: no container runs here (tests/engine/test_cgroups_namespaces.py runs them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pocketkube.engine.runtime import cgroups
from pocketkube.engine.runtime.spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    MASKED_PATHS,
    READONLY_PATHS,
    ContainerSpec,
    Mount,
    Process,
    Resources,
    build_spec,
    effective_capabilities,
    merge_env,
    process_spec,
    resolve_command,
)
from pocketkube.engine.runtime.users import GroupNotFound, UserNotFound, resolve_user

MiB = 1024 * 1024


def _spec(**kw) -> ContainerSpec:
    process = kw.pop("process", None) or Process(args=["sh"], env=["PATH=/bin"])
    return ContainerSpec(process=process, rootfs="/containers/x/rootfs", **kw)


def _mount(document: dict, destination: str) -> dict:
    return next(m for m in document["mounts"] if m["destination"] == destination)


# --- build_spec ----------------------------------------------------------------------------------------


def test_default_container_document_has_dockers_shape():
    document = build_spec(_spec(hostname="web", cgroups_path="/pocketkube/abc"))
    assert document["ociVersion"] == "1.0.2"
    assert document["root"] == {"path": "/containers/x/rootfs", "readonly": False}
    assert document["hostname"] == "web"
    linux = document["linux"]
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "mount", "ipc", "uts", "network"]
    assert all("path" not in n for n in linux["namespaces"])
    assert linux["cgroupsPath"] == "/pocketkube/abc"
    assert linux["maskedPaths"] == MASKED_PATHS and "/proc/kcore" in MASKED_PATHS
    assert linux["readonlyPaths"] == READONLY_PATHS
    assert "devices" not in linux and "sysctl" not in linux and "annotations" not in document

    assert [m["destination"] for m in document["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert _mount(document, "/dev")["options"] == ["nosuid", "strictatime", "mode=755", "size=65536k"]
    assert _mount(document, "/dev/pts")["options"] == [
        "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    assert f"size={64 * MiB}" in _mount(document, "/dev/shm")["options"]
    assert _mount(document, "/sys")["type"] == "sysfs" and "ro" in _mount(document, "/sys")["options"]
    assert _mount(document, "/sys/fs/cgroup")["type"] == "cgroup"
    assert "ro" in _mount(document, "/sys/fs/cgroup")["options"]

    process = document["process"]
    assert process["args"] == ["sh"] and process["cwd"] == "/" and process["user"] == {"uid": 0, "gid": 0}
    assert process["capabilities"] == {
        "bounding": DEFAULT_CAPABILITIES, "effective": DEFAULT_CAPABILITIES, "permitted": DEFAULT_CAPABILITIES}
    assert [r["type"] for r in process["rlimits"]] == ["RLIMIT_NOFILE"]
    nofile = process["rlimits"][0]
    assert nofile["soft"] == nofile["hard"] <= 1048576
    assert process["noNewPrivileges"] is False and "oomScoreAdj" not in process

    devices = linux["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}
    allowed = {(d["type"], d["major"], d.get("minor")) for d in devices[1:] if "major" in d}
    assert {("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0), ("c", 5, 1),
            ("c", 5, 2), ("c", 136, None)} == allowed
    assert all(d["allow"] for d in devices[1:])
    assert set(linux["resources"]) == {"devices"}


def test_resources_are_written_with_dockers_defaults():
    resources = Resources(memory=64 * MiB, memory_reservation=32 * MiB, cpu_shares=512, cpu_quota=50_000,
                          cpuset_cpus="0", pids_limit=100)
    linux = build_spec(_spec(resources=resources))["linux"]
    memory = {"limit": 64 * MiB, "reservation": 32 * MiB}
    if cgroups.swap_accounting():
        memory["swap"] = 128 * MiB  # no --memory-swap: as much swap as memory
    assert linux["resources"]["memory"] == memory
    assert linux["resources"]["cpu"] == {"shares": 512, "quota": 50_000, "period": 100_000, "cpus": "0"}
    assert linux["resources"]["pids"] == {"limit": 100}


@pytest.mark.parametrize(("memory", "swap", "expected"), [
    (None, None, None),
    (None, -1, -1),
    (64 * MiB, None, 128 * MiB),
    (64 * MiB, 0, 128 * MiB),
    (64 * MiB, -1, -1),
    (64 * MiB, 64 * MiB, 64 * MiB),   # no swap at all
    (64 * MiB, 100 * MiB, 100 * MiB),
])
def test_swap_limit_follows_docker(memory, swap, expected):
    assert Resources(memory=memory, memory_swap=swap).swap_limit() == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"memory": 4 * MiB}, "Minimum memory limit allowed is 6MB"),
    ({"memory_swap": 64 * MiB}, "You should always set the Memory limit when using Memoryswap limit"),
    ({"memory": 64 * MiB, "memory_swap": 32 * MiB}, "Minimum memoryswap limit should be larger than memory limit"),
    ({"memory": 16 * MiB, "memory_reservation": 32 * MiB}, "can not be less than memory reservation"),
    ({"cpu_period": 500}, "CPU cfs period can not be less than 1ms"),
    ({"cpu_quota": 999}, "CPU cfs quota can not be less than 1ms"),
])
def test_resources_refuse_what_docker_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Resources(**kwargs)


def test_from_cpus_is_quota_over_period():
    assert (Resources.from_cpus(1.5).cpu_quota, Resources.from_cpus(1.5).cpu_period) == (150_000, 100_000)
    custom = Resources.from_cpus(0.5, cpu_period=50_000, memory=64 * MiB)
    assert (custom.cpu_quota, custom.cpu_period, custom.memory) == (25_000, 50_000, 64 * MiB)
    with pytest.raises(ValueError, match="too small"):
        Resources.from_cpus(0.001)
    with pytest.raises(ValueError, match="must be positive"):
        Resources.from_cpus(0)


def test_pids_limit_zero_or_less_means_unlimited():
    assert build_spec(_spec(resources=Resources(pids_limit=0)))["linux"]["resources"]["pids"] == {"limit": -1}


def test_privileged_gets_everything():
    document = build_spec(_spec(privileged=True))
    linux = document["linux"]
    caps = document["process"]["capabilities"]["effective"]
    assert set(DEFAULT_CAPABILITIES) < set(caps) and "CAP_SYS_ADMIN" in caps and "CAP_NET_ADMIN" in caps
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert "rw" in _mount(document, "/sys")["options"] and "ro" not in _mount(document, "/sys")["options"]
    assert "rw" in _mount(document, "/sys/fs/cgroup")["options"]
    null = next(d for d in linux["devices"] if d["path"] == "/dev/null")
    assert (null["type"], null["major"], null["minor"]) == ("c", 1, 3)
    assert not any(d["path"].startswith(("/dev/pts/", "/dev/console")) for d in linux["devices"])
    blocks = [d for d in linux["devices"] if d["type"] == "b"]
    assert all(os.path.exists(d["path"]) for d in blocks)


def test_readonly_rootfs_and_joined_namespaces():
    document = build_spec(_spec(
        readonly_rootfs=True, hostname="ignored",
        namespaces={"pid": None, "mount": None, "network": "/run/x/net", "ipc": "/run/x/ipc", "uts": "/run/x/uts"}))
    assert document["root"]["readonly"] is True
    assert {"type": "network", "path": "/run/x/net"} in document["linux"]["namespaces"]
    assert {"type": "uts", "path": "/run/x/uts"} in document["linux"]["namespaces"]
    assert "hostname" not in document  # a joined uts namespace keeps its own name


def test_host_namespaces_are_left_out():
    document = build_spec(_spec(hostname="ignored", namespaces={"pid": None, "mount": None}))
    assert [n["type"] for n in document["linux"]["namespaces"]] == ["pid", "mount"]
    assert "hostname" not in document
    with pytest.raises(ValueError, match="unknown namespace kind 'user'"):
        build_spec(_spec(namespaces={"mount": None, "user": None}))


def test_user_mounts_override_defaults_and_get_docker_options():
    mounts = [
        Mount("/data/cache", "/srv/cache"),
        Mount("/data", "/srv/data", options=["ro"]),
        Mount("/dev/shm", "/run/pod/shm", options=["rbind", "rw", "rslave"]),
        Mount("/scratch", "tmpfs", type="tmpfs", options=["size=1m", "exec"]),
    ]
    document = build_spec(_spec(mounts=mounts, sysctls={"net.ipv4.ip_forward": "1"},
                                annotations={"io.pocketkube/pod": "web"}))
    destinations = [m["destination"] for m in document["mounts"]]
    assert destinations.count("/dev/shm") == 1
    assert destinations.index("/data") < destinations.index("/data/cache")  # parents first
    assert _mount(document, "/data")["options"] == ["rbind", "ro", "rprivate"]
    assert _mount(document, "/data/cache")["options"] == ["rbind", "rw", "rprivate"]
    assert _mount(document, "/dev/shm") == {"destination": "/dev/shm", "type": "bind", "source": "/run/pod/shm",
                                            "options": ["rbind", "rw", "rslave"]}
    assert _mount(document, "/scratch")["options"] == ["size=1m", "exec", "nosuid", "nodev"]
    assert document["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert document["annotations"] == {"io.pocketkube/pod": "web"}


def test_a_user_dev_mount_replaces_every_dev_default():
    document = build_spec(_spec(mounts=[Mount("/dev", "/srv/dev")]))
    assert [m["destination"] for m in document["mounts"]] == ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]


# --- process -------------------------------------------------------------------------------------------


def test_process_spec_for_a_non_root_user_and_exec():
    process = Process(args=["id"], env=["A=1"], cwd="/work", uid=1000, gid=1000, additional_gids=[10, 20],
                      terminal=True, cap_add=["net_admin"], no_new_privileges=True, oom_score_adj=500,
                      rlimits=[("nofile", 100, 200), ("RLIMIT_CORE", -1, -1)])
    document = process_spec(process)
    assert document["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}
    assert document["terminal"] is True and document["cwd"] == "/work" and document["env"] == ["A=1"]
    # a non-root user starts without effective capabilities; the bounding set still limits setuid binaries
    assert document["capabilities"] == {"bounding": DEFAULT_CAPABILITIES + ["CAP_NET_ADMIN"]}
    assert document["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 200, "soft": 100},
                                   {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1}]
    assert document["noNewPrivileges"] is True and document["oomScoreAdj"] == 500
    assert "CAP_SYS_ADMIN" in process_spec(Process(args=["sh"], env=[]), privileged=True)["capabilities"]["effective"]


@pytest.mark.parametrize(("process", "message"), [
    (Process(args=[], env=[]), "no command specified"),
    (Process(args=["sh"], env=[], cwd="work"), "needs to be an absolute path"),
    (Process(args=["sh"], env=[], rlimits=[("nofiles", 1, 1)]), "unknown rlimit: nofiles"),
    (Process(args=["sh"], env=[], rlimits=[("nofile", 2, 1)]), "soft limit 2 is greater than the hard limit 1"),
])
def test_process_spec_errors(process, message):
    with pytest.raises(ValueError, match=message):
        process_spec(process)


# --- capabilities ----------------------------------------------------------------------------------------

ALL_GRANTABLE = effective_capabilities(["ALL"], [], False)


@pytest.mark.parametrize(("add", "drop", "expected"), [
    ([], [], DEFAULT_CAPABILITIES),
    (["NET_ADMIN"], [], DEFAULT_CAPABILITIES + ["CAP_NET_ADMIN"]),
    (["cap_sys_time"], ["chown", "CAP_KILL"],
     [c for c in DEFAULT_CAPABILITIES if c not in ("CAP_CHOWN", "CAP_KILL")] + ["CAP_SYS_TIME"]),
    (["CHOWN"], [], DEFAULT_CAPABILITIES),  # already there: no duplicate
    ([], ["ALL"], []),
    (["NET_BIND_SERVICE"], ["all"], ["CAP_NET_BIND_SERVICE"]),
    (["ALL"], ["MKNOD"], [c for c in ALL_GRANTABLE if c != "CAP_MKNOD"]),
])
def test_effective_capabilities_follow_docker(add, drop, expected):
    assert effective_capabilities(add, drop, False) == expected


def test_privileged_and_unknown_capabilities():
    assert effective_capabilities(["NET_ADMIN"], ["ALL"], True) == ALL_GRANTABLE
    assert {"CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_BPF"} <= set(ALL_GRANTABLE)
    with pytest.raises(ValueError, match='^unknown capability: "CAP_FOO"$'):
        effective_capabilities(["foo"], [], False)
    with pytest.raises(ValueError, match='unknown capability: "CAP_BAR"'):
        effective_capabilities([], ["CAP_BAR"], False)


# --- command and environment ------------------------------------------------------------------------------


@pytest.mark.parametrize(("entrypoint", "cmd", "image_entrypoint", "image_cmd", "expected"), [
    (None, None, None, ["sh"], ["sh"]),
    (None, None, ["/entry"], ["-v"], ["/entry", "-v"]),
    (None, ["echo", "hi"], ["/entry"], ["-v"], ["/entry", "echo", "hi"]),
    (None, [], ["/entry"], ["-v"], ["/entry", "-v"]),          # empty CMD args: the image's stay
    (["/bin/other"], None, ["/entry"], ["-v"], ["/bin/other"]),  # --entrypoint drops the image CMD
    (["/bin/other"], ["x"], ["/entry"], ["-v"], ["/bin/other", "x"]),
    ([""], ["ls", "/"], ["/entry"], ["-v"], ["ls", "/"]),      # --entrypoint "" clears the entrypoint
    ([], ["ls"], ["/entry"], None, ["ls"]),
    (None, ["ls"], None, None, ["ls"]),
])
def test_resolve_command_matrix(entrypoint, cmd, image_entrypoint, image_cmd, expected):
    assert resolve_command(entrypoint, cmd, image_entrypoint, image_cmd) == expected


@pytest.mark.parametrize(("entrypoint", "cmd", "image_entrypoint", "image_cmd"), [
    (None, None, None, None),
    ([""], None, ["/entry"], ["-v"]),
    (None, None, [], []),
])
def test_resolve_command_without_command(entrypoint, cmd, image_entrypoint, image_cmd):
    with pytest.raises(ValueError, match="^no command specified$"):
        resolve_command(entrypoint, cmd, image_entrypoint, image_cmd)


def test_merge_env():
    image = ["PATH=/opt/bin:/bin", "LANG=C", "EMPTY=", "DROP=me"]
    assert merge_env(image, ["LANG=en_US.UTF-8", "NEW=a=b", "DROP"]) == [
        "PATH=/opt/bin:/bin", "LANG=en_US.UTF-8", "EMPTY=", "NEW=a=b"]
    assert merge_env(["A=1"], ["A=2", "A=3"]) == ["A=3", f"PATH={DEFAULT_PATH}"]
    assert merge_env([], []) == [f"PATH={DEFAULT_PATH}"]


# --- users -------------------------------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "# comment\n"
        "root:x:0:0:root:/root:/bin/sh\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
        "svc:x:998:998::/var/lib/svc:/sbin/nologin\n"
        "broken:x:notanumber:1::/:\n")
    (root / "etc" / "group").write_text(
        "root:x:0:\n"
        "wheel:x:10:root,alice\n"
        "alice:x:1000:\n"
        "staff:x:50:alice , svc\n"
        "docker:x:999:svc\n")
    return root


# The primary group comes first among the supplementary ones: a process must not be able to shed it.
@pytest.mark.parametrize(("user", "expected"), [
    ("", (0, 0, [0, 10], "/root")),
    (None, (0, 0, [0, 10], "/root")),
    ("root", (0, 0, [0, 10], "/root")),
    ("alice", (1000, 1000, [1000, 10, 50], "/home/alice")),
    ("1000", (1000, 1000, [1000, 10, 50], "/home/alice")),
    ("alice:staff", (1000, 50, [50], "/home/alice")),       # an explicit group: no memberships
    ("alice:999", (1000, 999, [999], "/home/alice")),
    ("998:docker", (998, 999, [999], "/var/lib/svc")),
    ("1000:4242", (1000, 4242, [4242], "/home/alice")),    # a numeric gid needs no group entry
    ("4242", (4242, 0, [0], "/")),                          # a numeric uid needs no passwd entry
    ("4242:50", (4242, 50, [50], "/")),
    ("svc", (998, 998, [998, 50, 999], "/var/lib/svc")),
])
def test_resolve_user(rootfs, user, expected):
    assert resolve_user(rootfs, user) == expected


@pytest.mark.parametrize(("user", "group_add", "image_groups", "expected"), [
    ("alice", ["docker"], True, (1000, 1000, [1000, 10, 50, 999], "/home/alice")),
    ("alice", ["50", "2000"], True, (1000, 1000, [1000, 10, 50, 2000], "/home/alice")),  # no duplicates
    ("alice:staff", ["wheel"], True, (1000, 50, [50, 10], "/home/alice")),               # even with a group
    ("4242:4242", ["2000", "3000"], True, (4242, 4242, [4242, 2000, 3000], "/")),
    ("alice", ["2000"], False, (1000, 1000, [1000, 2000], "/home/alice")),  # without the image's memberships
])
def test_resolve_user_group_add(rootfs, user, group_add, image_groups, expected):
    assert resolve_user(rootfs, user, group_add, image_groups=image_groups) == expected


def test_resolve_user_errors(rootfs):
    with pytest.raises(UserNotFound, match="^unable to find user bob: no matching entries in passwd file$"):
        resolve_user(rootfs, "bob")
    with pytest.raises(GroupNotFound, match="^unable to find group nogroup: no matching entries in group file$"):
        resolve_user(rootfs, "alice:nogroup")
    with pytest.raises(UserNotFound, match="out of range"):
        resolve_user(rootfs, "-5")
    with pytest.raises(GroupNotFound, match="^unable to find group nogroup: no matching entries in group file$"):
        resolve_user(rootfs, "alice", ["nogroup"])
    with pytest.raises(UserNotFound, match="gid -1 is out of range"):
        resolve_user(rootfs, "alice", ["-1"])


def test_resolve_user_never_reads_the_host(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_user(empty, "") == (0, 0, [0], "/")
    with pytest.raises(UserNotFound):
        resolve_user(empty, "root")  # the host has a root user; the image does not


def test_resolve_user_follows_symlinks_inside_the_rootfs_only(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "share").mkdir(parents=True)
    (root / "usr" / "share" / "passwd").write_text("app:x:500:500::/app:/bin/sh\n")
    # absolute and escaping links both resolve inside the rootfs, never to the host's /etc
    (root / "etc" / "passwd").symlink_to("/../../../../usr/share/passwd")
    (root / "etc" / "group").symlink_to("/etc/group-missing")
    assert resolve_user(root, "app") == (500, 500, [500], "/app")
