"""`pocketkube build` end to end, instruction by instruction: real containers for RUN, the image config and
history Docker writes, COPY/ADD semantics checked inside a running container, .dockerignore, heredocs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from engine_harness import EngineEnv

BUILD = [sys.executable, "-m", "pocketkube.cli.main", "build", "--progress", "plain"]


def build(env: EngineEnv, context: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*BUILD, *args, str(context)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, POCKETKUBE_DATA_DIR=str(env.data_dir)))
    if check and result.returncode != 0:
        raise AssertionError(f"build failed ({result.returncode}):\n{result.stderr}")
    return result


def context(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return directory


def layer_members(env: EngineEnv, image: str) -> list[list[tarfile.TarInfo]]:
    engine = env.engine()
    members = []
    for layer in engine.images.resolve(image).layers:
        with engine.content.open(layer.digest) as blob, tarfile.open(fileobj=blob, mode="r|*") as tar:
            members.append(list(tar))
    return members


def test_every_instruction_writes_the_config_docker_writes(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = context(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
ARG GREETING=hello
LABEL org.example.name=demo "with space"="a b"
ENV APP_HOME=/srv/app MODE=prod
WORKDIR $APP_HOME
COPY message.txt .
RUN echo "$GREETING from $(pwd) as $(id -un)" > greeting && cat greeting
SHELL ["/bin/sh", "-ec"]
RUN test "$MODE" = prod
USER www-data
RUN id -u > /tmp/uid || true
EXPOSE 8080 9000-9001/udp
VOLUME ["/data"]
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --timeout=3s CMD wget -q localhost:8080 || exit 1
ONBUILD RUN echo child
MAINTAINER builders@example.com
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat $APP_HOME/greeting $APP_HOME/message.txt"]
""", "message.txt": "copied\n"})
    result = build(engine_env, directory, "-t", "every:1", "--label", "from.cli=yes", "--iidfile",
                   str(tmp_path / "iid"))
    assert "hello from /srv/app as root" in result.stderr
    assert "naming to docker.io/library/every:1 done" in result.stderr
    image = engine_env.engine().images.resolve("every:1")
    assert (tmp_path / "iid").read_text() == image.id
    config = image.config["config"]
    assert config["Env"][-2:] == ["APP_HOME=/srv/app", "MODE=prod"]
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "www-data"
    assert config["Labels"] == {"org.example.name": "demo", "with space": "a b", "from.cli": "yes"}
    assert config["ExposedPorts"] == {"8080/tcp": {}, "9000/udp": {}, "9001/udp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["StopSignal"] == "SIGQUIT"
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost:8080 || exit 1"],
                                     "Interval": 30_000_000_000, "Timeout": 3_000_000_000}
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert config["OnBuild"] == ["RUN echo child"]
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["Cmd"] == ["cat $APP_HOME/greeting $APP_HOME/message.txt"]
    assert image.config["author"] == "builders@example.com"
    history = image.config["history"]
    own = history[1:]
    assert [entry["created_by"] for entry in own][:7] == [
        "ARG GREETING=hello", 'LABEL org.example.name=demo with space=a b', "ENV APP_HOME=/srv/app MODE=prod",
        "WORKDIR /srv/app", "COPY message.txt . # buildkit",
        'RUN /bin/sh -c echo "$GREETING from $(pwd) as $(id -un)" > greeting && cat greeting # buildkit',
        "SHELL [/bin/sh -ec]"]
    assert all(entry["comment"] == "buildkit.dockerfile.v0" for entry in own)
    assert sum(1 for entry in history if not entry.get("empty_layer")) == len(image.layers)
    # RUN as USER www-data ran as uid 33 (its layer holds /tmp/uid)
    uid_layer = [members for members in layer_members(engine_env, "every:1") if any(m.name == "tmp/uid" for m in members)]
    assert uid_layer and [m.uid for m in uid_layer[0] if m.name == "tmp/uid"] == [33]
    assert engine_env.out("run", "--rm", "every:1") == "hello from /srv/app as root\ncopied\n"
    child = context(tmp_path / "child", {"Dockerfile": "FROM every:1\nUSER root\n"})
    output = build(engine_env, child, "-t", "every:child").stderr
    assert "] RUN echo child\n" in output and re.search(r"^#\d+ \d+\.\d+ child$", output, re.M)
    child_config = engine_env.engine().images.resolve("every:child").config["config"]
    assert "OnBuild" not in child_config  # the triggers ran (RUN echo child) and are not inherited


def test_copy_chown_and_chmod_as_a_container_sees_them(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = context(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
COPY --chown=www-data:nogroup --chmod=640 config.ini /etc/app/
COPY --chown=1234 tree /opt/tree
COPY tree/sub/leaf.txt /plain
COPY --chmod=755 run.sh /usr/local/bin/run
COPY tree/*/leaf.txt run.s? /globbed/
""", "config.ini": "[x]\n", "tree/sub/leaf.txt": "leaf\n", "tree/top.txt": "top\n", "run.sh": "#!/bin/sh\necho ran\n"})
    (directory / "tree" / "top.txt").chmod(0o600)
    os.chown(directory / "config.ini", 4321, 4321)  # context ownership never reaches the image
    build(engine_env, directory, "-t", "owners:1")
    listing = engine_env.out("run", "--rm", "owners:1", "stat", "-c", "%n %u:%g %a", "/etc/app", "/etc/app/config.ini",
                             "/opt/tree", "/opt/tree/top.txt", "/opt/tree/sub", "/opt/tree/sub/leaf.txt", "/plain",
                             "/usr/local/bin/run")
    assert listing.splitlines() == [
        "/etc/app 33:65534 755",             # created for the copy: --chown's owner, 0755
        "/etc/app/config.ini 33:65534 640",
        "/opt/tree 1234:1234 755",           # a numeric user without a group: the same number as gid
        "/opt/tree/top.txt 1234:1234 600",   # modes are kept
        "/opt/tree/sub 1234:1234 755",
        "/opt/tree/sub/leaf.txt 1234:1234 644",
        "/plain 0:0 644",                    # no --chown: root, whoever owned it in the context
        "/usr/local/bin/run 0:0 755",
    ]
    assert engine_env.out("run", "--rm", "owners:1", "run") == "ran\n"
    assert engine_env.out("run", "--rm", "owners:1", "ls", "/globbed") == "leaf.txt\nrun.sh\n"


def test_dockerignore_decides_what_is_visible(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY . /ctx/\nRUN cd /ctx && find . -type f | sort\n",
        ".dockerignore": "# build outputs\n*.log\n**/node_modules\nsecrets/\n!secrets/public.pem\nDockerfile\n",
        "app.py": "x", "debug.log": "x", "web/node_modules/lib/index.js": "x", "web/index.html": "x",
        "secrets/private.pem": "x", "secrets/public.pem": "x", "docs/notes.log": "x", "docs/readme.txt": "x"})
    result = build(engine_env, directory, "-t", "ignored:1")
    found = sorted(line.split(" ", 2)[2] for line in result.stderr.splitlines()
                   if line.startswith("#") and " ./" in line)
    # "*.log" only matches at the top: Docker's patterns are anchored at the context root
    assert found == ["./.dockerignore", "./app.py", "./docs/notes.log", "./docs/readme.txt", "./secrets/public.pem",
                     "./web/index.html"]
    (directory / "Dockerfile").write_text("FROM busybox\nCOPY secrets/private.pem /\n")
    failed = build(engine_env, directory, "-t", "ignored:2", check=False)
    assert failed.returncode == 1
    assert '"/secrets/private.pem": not found' in failed.stderr and "Dockerfile:2" in failed.stderr


def test_heredocs(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = context(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
ARG NAME=world
RUN <<EOF
echo "hello $NAME" > /one
echo second line >> /one
EOF
RUN <<EOF
#!/bin/sh
echo "shebang script as $0" > /two
EOF
RUN cat > /three <<EOF && cat <<-INDENTED >> /three
three $NAME
EOF
	indented
	INDENTED
COPY <<EOF <<"RAW" /docs/
expanded $NAME
EOF
literal $NAME
RAW
COPY <<EOF /single.txt
just one
EOF
"""})
    build(engine_env, directory, "-t", "heredocs:1")
    out = engine_env.out("run", "--rm", "heredocs:1", "cat", "/one", "/two", "/three", "/docs/EOF", "/docs/RAW",
                         "/single.txt")
    assert out == ("hello world\nsecond line\nshebang script as /dev/pipes/EOF\nthree world\nindented\n"
                   "expanded world\nliteral $NAME\njust one\n")


def test_add_unpacks_local_archives_and_refuses_remote_sources(engine_env: EngineEnv, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    context(payload, {"bin/tool": "#!/bin/sh\necho tool\n", "share/data.txt": "data\n"})
    directory = context(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
ADD bundle.tar.gz /opt/
ADD plain.txt /opt/plain.txt
ADD --chown=33:33 bundle.tar.xz /xz
"""})
    (directory / "plain.txt").write_text("not an archive\n")
    for name, mode in (("bundle.tar.gz", "w:gz"), ("bundle.tar.xz", "w:xz")):
        with tarfile.open(directory / name, mode) as tar:
            tar.add(payload / "bin", arcname="bin")
            tar.add(payload / "share", arcname="share")
    build(engine_env, directory, "-t", "added:1")
    out = engine_env.out("run", "--rm", "added:1", "sh", "-c",
                         "cat /opt/share/data.txt /opt/plain.txt && stat -c '%u %n' /xz/share/data.txt")
    assert out == "data\nnot an archive\n33 /xz/share/data.txt\n"
    (directory / "Dockerfile").write_text("FROM busybox\nADD https://example.com/tool.tgz /opt/\n")
    failed = build(engine_env, directory, "-t", "added:2", check=False)
    assert failed.returncode == 1 and "no network access" in failed.stderr and "Dockerfile:2" in failed.stderr


def test_run_networks(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = context(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
RUN ip -4 -o addr show eth0 && ping -c1 -W5 $(ip route | awk '/default/ {print $3}') >/dev/null && echo gateway-ok
RUN --network=none ip -o link | wc -l
RUN --network=host cat /proc/net/dev | grep -c "$BRIDGE:"
"""})
    bridge = engine_env.settings["bridge"]
    (directory / "Dockerfile").write_text((directory / "Dockerfile").read_text().replace("$BRIDGE", bridge))
    result = build(engine_env, directory)
    subnet_prefix = engine_env.settings["subnet"].rsplit(".", 1)[0]
    lines = [line.split(" ", 2)[2] for line in result.stderr.splitlines() if line.startswith("#") and
             line.split(" ")[1][:1].isdigit() and "." in line.split(" ")[1]]
    assert any(f"inet {subnet_prefix}." in line for line in lines)
    assert "gateway-ok" in lines
    assert lines[-2:] == ["1", "1"]  # no network: loopback only; host network: the host's bridge
    (directory / "Dockerfile").write_text("FROM busybox\nRUN ip -o link | wc -l\n")
    isolated = build(engine_env, directory, "--network", "none").stderr
    assert re.findall(r"^#\d+ \d+\.\d{3} (.*)$", isolated, re.M) == ["1"]


def test_copy_layers_are_reproducible(engine_env: EngineEnv, tmp_path: Path) -> None:
    directory = context(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY app /srv/app/\nWORKDIR /srv/work\n",
                                           "app/a.txt": "a", "app/lib/b.txt": "b"})
    build(engine_env, directory, "-t", "repro:1")
    build(engine_env, directory, "-t", "repro:2", "--no-cache")
    engine = engine_env.engine()
    first, second = engine.images.resolve("repro:1"), engine.images.resolve("repro:2")
    assert [layer.diff_id for layer in first.layers] == [layer.diff_id for layer in second.layers]
    inspect = json.loads(engine_env.out("image", "inspect", "repro:1"))[0]
    assert inspect["Config"]["WorkingDir"] == "/srv/work"
