"""End to end: real containers through the Docker-style CLI (runc/crun, conmon, overlayfs, cgroups, CNI)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from engine_harness import EngineEnv


def test_run_prints_output_and_returns_the_exit_code(engine_env: EngineEnv) -> None:
    result = engine_env.cli("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == b"out\n" and result.stderr == b"err\n"


def test_isolation_pid_hostname_mounts(engine_env: EngineEnv) -> None:
    out = engine_env.out("run", "--rm", "--hostname", "box1", "busybox", "sh", "-c",
                         "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; ps -o pid | wc -l; "
                         "grep -c ' / ' /proc/mounts; ls /")
    lines = out.splitlines()
    assert lines[0].startswith("sh -c cat /proc/1/cmdline"), out   # pid 1 is the container's command
    assert lines[1] == "box1", out
    assert int(lines[2]) <= 4, out                                 # header + sh + ps (+ wc): none of the host's
    assert "bin" in lines and "etc" in lines and "work" not in lines, out


def test_writes_stay_in_the_container(engine_env: EngineEnv) -> None:
    first = engine_env.out("run", "-d", "busybox", "sh", "-c", "echo hi > /etc/secret; sleep 30").strip()
    try:
        deadline = time.time() + 10
        while engine_env.cli("exec", first, "test", "-f", "/etc/secret").returncode != 0:
            assert time.time() < deadline
            time.sleep(0.1)
        second = engine_env.cli("run", "--rm", "busybox", "cat", "/etc/secret")
        assert second.returncode == 1 and b"No such file" in second.stderr
        inspect = json.loads(engine_env.out("inspect", first))[0]
        upper = Path(inspect["GraphDriver"]["Data"]["UpperDir"])
        assert (upper / "etc" / "secret").read_text() == "hi\n"
        for lower in inspect["GraphDriver"]["Data"]["LowerDir"].split(":"):
            assert not (Path(lower) / "etc" / "secret").exists()
    finally:
        engine_env.cli("rm", "-f", first)


def test_detached_lifecycle_ps_logs_exec_stop_rm(engine_env: EngineEnv) -> None:
    cid = engine_env.out("run", "-d", "--name", "lifecycle", "busybox", "sh", "-c",
                         "trap 'echo bye; exit 0' TERM; echo started; while true; do sleep 0.1; done").strip()
    assert len(cid) == 64
    ps = engine_env.out("ps")
    assert ps.splitlines()[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS",
                                          "NAMES"]
    assert cid[:12] in ps and "lifecycle" in ps and "Up " in ps
    deadline = time.time() + 10
    while "started" not in engine_env.out("logs", "lifecycle"):
        assert time.time() < deadline
        time.sleep(0.1)
    assert engine_env.out("exec", "lifecycle", "cat", "/proc/1/cmdline").startswith("sh")
    exec_result = engine_env.cli("exec", "lifecycle", "sh", "-c", "exit 5")
    assert exec_result.returncode == 5
    conflict = engine_env.cli("run", "--name", "lifecycle", "busybox", "true")
    assert conflict.returncode == 125 and b"is already in use" in conflict.stderr
    refused = engine_env.cli("rm", "lifecycle")
    assert refused.returncode == 1 and b"container is running" in refused.stderr
    started = time.monotonic()
    assert engine_env.out("stop", "lifecycle").strip() == "lifecycle"
    assert time.monotonic() - started < 5                     # the trap answered SIGTERM: no 10 s grace wait
    assert "bye" in engine_env.out("logs", "lifecycle")
    state = json.loads(engine_env.out("inspect", "lifecycle"))[0]["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0 and not state["Running"]
    assert "Exited (0)" in engine_env.out("ps", "-a", "--filter", "name=lifecycle")
    assert engine_env.out("ps", "-q") .count(cid[:12]) == 0
    assert engine_env.out("rm", "lifecycle").strip() == "lifecycle"
    missing = engine_env.cli("inspect", "lifecycle")
    assert missing.returncode == 1 and b"No such object" in missing.stderr


def test_stop_kills_after_the_grace_period(engine_env: EngineEnv) -> None:
    cid = engine_env.out("run", "-d", "busybox", "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")
    cid = cid.strip()
    try:
        started = time.monotonic()
        engine_env.out("stop", "-t", "1", cid)
        elapsed = time.monotonic() - started
        assert 1 <= elapsed < 8
        assert engine_env.out("inspect", "-f", "{{.State.ExitCode}}", cid).strip() == "137"
    finally:
        engine_env.cli("rm", "-f", cid)


def test_kill_with_a_signal(engine_env: EngineEnv) -> None:
    # A container's pid 1 gets only the signals it handles (as with Docker): USR1 is trapped, KILL always works.
    cid = engine_env.out("run", "-d", "busybox", "sh", "-c",
                         "trap 'echo got usr1' USR1; while true; do sleep 0.1; done").strip()
    try:
        deadline = time.time() + 10
        while engine_env.cli("exec", cid, "true").returncode != 0:
            assert time.time() < deadline
        time.sleep(0.3)  # the trap is installed once sh runs its script
        engine_env.out("kill", "-s", "USR1", cid)
        deadline = time.time() + 10
        while "got usr1" not in engine_env.out("logs", cid):
            assert time.time() < deadline
            time.sleep(0.1)
        engine_env.out("kill", cid)
        assert engine_env.out("wait", cid).strip() == "137"
        not_running = engine_env.cli("kill", cid)
        assert not_running.returncode == 1 and b"is not running" in not_running.stderr
    finally:
        engine_env.cli("rm", "-f", cid)


def test_exit_codes_for_commands_that_cannot_run(engine_env: EngineEnv) -> None:
    missing = engine_env.cli("run", "--rm", "busybox", "/no/such/binary")
    assert missing.returncode == 127, missing.stderr
    not_executable = engine_env.cli("run", "--rm", "busybox", "/etc/passwd")
    assert not_executable.returncode == 126, not_executable.stderr
    unknown_image = engine_env.cli("run", "--rm", "no-such-image:1")
    assert unknown_image.returncode == 125 and b"No such image" in unknown_image.stderr
    bad_flag = engine_env.cli("run", "--no-such-flag", "busybox")
    assert bad_flag.returncode == 125


def test_memory_limit_oom_kill(engine_env: EngineEnv) -> None:
    result = engine_env.cli("run", "--name", "oom", "-m", "16m", "--memory-swap", "16m", "busybox", "sh", "-c",
                            "x=$(head -c 64m /dev/zero | tr '\\0' a); echo survived")
    try:
        assert result.returncode == 137, result.stderr
        state = json.loads(engine_env.out("inspect", "oom"))[0]["State"]
        assert state["OOMKilled"] is True and state["ExitCode"] == 137
    finally:
        engine_env.cli("rm", "-f", "oom")


def test_pids_limit(engine_env: EngineEnv) -> None:
    limit = engine_env.out("run", "--rm", "--pids-limit", "8", "busybox", "cat", "/sys/fs/cgroup/pids/pids.max")
    assert limit.strip() == "8"
    forks = engine_env.cli("run", "--rm", "--pids-limit", "8", "busybox", "sh", "-c",
                           "for i in $(seq 20); do sleep 2 & done; wait")
    assert forks.returncode != 0 and b"can't fork" in forks.stderr


def test_cpu_quota_throttles(engine_env: EngineEnv) -> None:
    cid = engine_env.out("run", "-d", "--cpus", "0.2", "busybox", "sh", "-c",
                         "while true; do :; done").strip()
    try:
        time.sleep(1.5)
        inspect = json.loads(engine_env.out("inspect", cid))[0]
        assert inspect["HostConfig"]["CpuQuota"] == 20000
        parent = engine_env.settings["cgroup-parent"]
        stat = Path(f"/sys/fs/cgroup/cpu{parent}/{cid}/cpu.stat").read_text()
        throttled = int(stat.split("nr_throttled")[1].split()[0])
        assert throttled > 0
        stats = engine_env.out("stats", "--no-stream", "--format", "{{.CPUPerc}}", cid).strip()
        assert float(stats.rstrip("%")) < 40
    finally:
        engine_env.cli("rm", "-f", cid)


def test_the_image_user_unless_overridden(engine_env: EngineEnv, busybox_tarball: Path) -> None:
    engine_env.out("import", "--change", "USER nobody", str(busybox_tarball), "as-nobody:1")
    try:
        assert engine_env.out("run", "--rm", "as-nobody:1", "id", "-u").split() == ["65534"]
        assert engine_env.out("run", "--rm", "-u", "0", "as-nobody:1", "id", "-u").split() == ["0"]
    finally:
        engine_env.cli("image", "rm", "as-nobody:1")


def test_env_workdir_user_readonly_caps(engine_env: EngineEnv, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\n")
    out = engine_env.out("run", "--rm", "-e", "A=b", "--env-file", str(env_file), "-w", "/tmp/work", "-u",
                         "nobody", "busybox", "sh", "-c", "echo $A $FROM_FILE; pwd; id -u; id -g")
    assert out.split() == ["b", "1", "/tmp/work", "65534", "65534"]
    groups = engine_env.out("run", "--rm", "-u", "nobody", "--group-add", "1234", "--group-add", "5678", "busybox",
                            "id", "-G")
    assert set(groups.split()) == {"65534", "1234", "5678"}
    unknown = engine_env.cli("run", "--rm", "--group-add", "no-such-group", "busybox", "true")
    assert unknown.returncode != 0 and b"unable to find group no-such-group" in unknown.stderr
    readonly = engine_env.cli("run", "--rm", "--read-only", "busybox", "touch", "/x")
    assert readonly.returncode == 1 and b"Read-only file system" in readonly.stderr
    dropped = engine_env.cli("run", "--rm", "--cap-drop", "CHOWN", "busybox", "chown", "nobody", "/tmp")
    assert dropped.returncode == 1
    kept = engine_env.cli("run", "--rm", "busybox", "chown", "nobody", "/tmp")
    assert kept.returncode == 0


def test_volumes_and_tmpfs(engine_env: EngineEnv, tmp_path: Path) -> None:
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "in.txt").write_text("from host")
    out = engine_env.out("run", "--rm", "-v", f"{host_dir}:/data", "--tmpfs", "/scratch", "busybox", "sh", "-c",
                         "cat /data/in.txt; echo written > /data/out.txt; grep ' /scratch ' /proc/mounts")
    assert out.startswith("from host") and "tmpfs" in out
    assert (host_dir / "out.txt").read_text() == "written\n"
    ro = engine_env.cli("run", "--rm", "-v", f"{host_dir}:/data:ro", "busybox", "touch", "/data/x")
    assert ro.returncode == 1


def test_entrypoint_and_cmd_rules(engine_env: EngineEnv) -> None:
    # busybox's image CMD is ["sh"]; --entrypoint resets it, arguments replace it.
    assert engine_env.out("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b").strip() == "a b"
    assert engine_env.out("run", "--rm", "--entrypoint", "echo", "busybox").strip() == ""
    assert engine_env.out("run", "--rm", "busybox", "echo", "c").strip() == "c"


def test_interactive_stdin(engine_env: EngineEnv) -> None:
    result = engine_env.cli("run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z", input=b"hello\n")
    assert result.returncode == 0 and result.stdout == b"HELLO\n"


def test_exec_with_stdin(engine_env: EngineEnv) -> None:
    cid = engine_env.out("run", "-d", "busybox", "sleep", "60").strip()
    try:
        result = engine_env.cli("exec", "-i", cid, "sh", "-c", "cat > /tmp/f; wc -c < /tmp/f", input=b"12345")
        assert result.stdout.strip() == b"5"
        assert engine_env.out("exec", "-e", "X=1", "-w", "/tmp", cid, "sh", "-c", "echo $X; pwd").split() == \
            ["1", "/tmp"]
        top = engine_env.out("top", cid)
        assert top.splitlines()[0].split()[:3] == ["UID", "PID", "PPID"] and "sleep 60" in top
    finally:
        engine_env.cli("rm", "-f", cid)


def test_cp_in_and_out(engine_env: EngineEnv, tmp_path: Path) -> None:
    cid = engine_env.out("run", "-d", "busybox", "sleep", "60").strip()
    try:
        local = tmp_path / "note.txt"
        local.write_text("copied in")
        engine_env.out("cp", str(local), f"{cid}:/tmp/")
        assert engine_env.out("exec", cid, "cat", "/tmp/note.txt") == "copied in"
        engine_env.out("exec", cid, "sh", "-c", "mkdir -p /srv/d && echo x > /srv/d/f")
        engine_env.out("cp", f"{cid}:/srv/d", str(tmp_path / "out"))
        assert (tmp_path / "out" / "f").read_text() == "x\n"
        missing = engine_env.cli("cp", f"{cid}:/nope", str(tmp_path))
        assert missing.returncode == 1 and b"Could not find the file" in missing.stderr
    finally:
        engine_env.cli("rm", "-f", cid)


def test_network_modes_and_published_port(engine_env: EngineEnv) -> None:
    none = engine_env.out("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                          "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags")
    assert none.split()[0] == "lo" and int(none.split()[-1], 16) & 1, none  # only lo, and it is up (IFF_UP)
    host = engine_env.out("run", "--rm", "--network", "host", "busybox", "hostname")
    assert host.strip() == socket.gethostname()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cid = engine_env.out("run", "-d", "-p", f"127.0.0.1:{port}:8080", "busybox", "sh", "-c",
                         "mkdir -p /www && echo served > /www/index.html && httpd -f -p 8080 -h /www").strip()
    try:
        inspect = json.loads(engine_env.out("inspect", cid))[0]
        address = inspect["NetworkSettings"]["IPAddress"]
        assert address.startswith(engine_env.settings["subnet"].rsplit(".", 1)[0])
        assert f"127.0.0.1:{port}->8080/tcp" in engine_env.out("ps")
        deadline = time.time() + 10
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.2)
        assert body == b"served\n"
    finally:
        engine_env.cli("rm", "-f", cid)
    # Released on removal: nothing listens there any more.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)


def test_containers_survive_the_engine_process(engine_env: EngineEnv) -> None:
    """Each CLI call is a new engine process: a container started by one keeps running, and a later one
    still collects its logs and exit code."""
    cid = engine_env.out("run", "-d", "busybox", "sh", "-c", "echo before; sleep 1; echo after; exit 4").strip()
    try:
        assert engine_env.out("wait", cid).strip() == "4"
        assert engine_env.out("logs", cid).split() == ["before", "after"]
        logs_t = engine_env.out("logs", "-t", "--tail", "1", cid)
        assert logs_t.endswith("Z after\n")
    finally:
        engine_env.cli("rm", "-f", cid)


def test_auto_remove_of_a_detached_container(engine_env: EngineEnv) -> None:
    cid = engine_env.out("run", "-d", "--rm", "busybox", "true").strip()
    deadline = time.time() + 15
    while engine_env.cli("inspect", cid).returncode == 0:
        assert time.time() < deadline, "a --rm container must go away after it exits"
        time.sleep(0.2)


def test_images_tag_history_save_load_rmi(engine_env: EngineEnv, tmp_path: Path) -> None:
    images = engine_env.out("images")
    assert images.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert "busybox" in images
    engine_env.out("tag", "busybox", "example.com/team/box:v1")
    assert "example.com/team/box" in engine_env.out("images")
    history = engine_env.out("history", "busybox")
    assert history.splitlines()[0].split()[:2] == ["IMAGE", "CREATED"]
    archive = tmp_path / "box.tar"
    engine_env.out("save", "-o", str(archive), "example.com/team/box:v1")
    untagged = engine_env.out("rmi", "example.com/team/box:v1")
    assert "Untagged: example.com/team/box:v1" in untagged and "Deleted" not in untagged
    loaded = engine_env.out("load", "-i", str(archive))
    assert "Loaded image: example.com/team/box:v1" in loaded
    image_id = engine_env.out("image", "inspect", "-f", "{{.Id}}", "busybox").strip()
    assert engine_env.out("image", "inspect", "-f", "{{.Id}}", "example.com/team/box:v1").strip() == image_id
    engine_env.out("image", "rm", "example.com/team/box:v1")
    missing = engine_env.cli("image", "inspect", "nope:1")
    assert missing.returncode == 1


def test_system_df(engine_env: EngineEnv) -> None:
    out = engine_env.out("system", "df")
    assert out.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert out.splitlines()[1].startswith("Images")


def test_ps_format_templates(engine_env: EngineEnv) -> None:
    cid = engine_env.out("create", "--name", "formatted", "-l", "team=a", "busybox", "true").strip()
    try:
        assert engine_env.out("ps", "-a", "--filter", "label=team=a", "--format", "{{.Names}} {{.State}}") \
            .strip() == "formatted created"
        row = json.loads(engine_env.out("ps", "-a", "--filter", "name=formatted", "--format", "json"))
        assert row["Names"] == "formatted" and row["ID"] == cid[:12]
    finally:
        engine_env.cli("rm", "formatted")


def test_start_again_after_exit(engine_env: EngineEnv) -> None:
    cid = engine_env.out("run", "-d", "busybox", "sh", "-c", "echo run").strip()
    try:
        assert engine_env.out("wait", cid).strip() == "0"
        engine_env.out("start", cid)
        assert engine_env.out("wait", cid).strip() == "0"
        assert engine_env.out("logs", cid).split() == ["run", "run"]
    finally:
        engine_env.cli("rm", "-f", cid)


def test_no_process_or_mount_left_after_rm(engine_env: EngineEnv) -> None:
    cid = engine_env.out("run", "-d", "busybox", "sleep", "60").strip()
    pid = json.loads(engine_env.out("inspect", cid))[0]["State"]["Pid"]
    assert pid > 0 and Path(f"/proc/{pid}").exists()
    engine_env.out("rm", "-f", cid)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert cid not in mounts
    parent = engine_env.settings["cgroup-parent"]
    assert not Path(f"/sys/fs/cgroup/memory{parent}/{cid}").exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"-c {cid}" not in ps  # its conmon is gone too
