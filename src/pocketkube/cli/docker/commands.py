"""Handlers of the Docker-style commands: each turns parsed arguments into engine calls and prints what
Docker would print. Errors print `Error: …` on stderr and exit non-zero (125 for `run` failures of the
engine itself, 126/127 when the command cannot be invoked, as Docker)."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pocketkube.cli.docker import format as fmt
from pocketkube.cli.docker import inspect as views
from pocketkube.cli.docker.changes import ChangeError, apply_changes
from pocketkube.cli.docker.options import OptionError, build_config, parse_env
from pocketkube.cli.docker.stdio import pump
from pocketkube.engine.containers import (
    Container,
    ContainerConfig,
    ContainerNotFound,
    ContainerStateError,
    NameConflict,
)
from pocketkube.engine.engine import Engine, EngineError
from pocketkube.engine.images.reference import InvalidReference
from pocketkube.engine.images.store import ImageNotFound
from pocketkube.engine.logs import follow, log_size, parse_time, read_log, select
from pocketkube.engine.settings import SettingsError
from pocketkube.engine.streams import ExecFailed

Handler = Callable[[Engine, argparse.Namespace], Awaitable[int]]
HANDLERS: dict[str, Handler] = {}

# Errors a user can cause; anything else is a bug and keeps its traceback.
USER_ERRORS = (EngineError, ExecFailed, SettingsError, ContainerNotFound, ContainerStateError, NameConflict, ImageNotFound, InvalidReference,
               OptionError, ChangeError, ValueError, FileNotFoundError, PermissionError, TimeoutError)


def handler(*names: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = func
        return func
    return register


def _error(message: object) -> None:
    print(f"Error: {message}", file=sys.stderr)


def run_command(args: argparse.Namespace) -> int:
    func = HANDLERS[args.engine_command]
    try:
        engine = Engine(args.data_dir, runtime=getattr(args, "runtime", None))
        return asyncio.run(func(engine, args))
    except KeyboardInterrupt:
        return 130
    except USER_ERRORS as err:
        _error(err)
        code = getattr(err, "exit_code", None)
        return code if code is not None else (125 if args.engine_command in ("run", "create") else 1)


# --- containers --------------------------------------------------------------------------------------

def _config_from(engine: Engine, args: argparse.Namespace) -> ContainerConfig:
    return build_config(args, args.image, args.command, engine.root / "volumes")


@handler("create")
async def create(engine: Engine, args: argparse.Namespace) -> int:
    container = await engine.create(_config_from(engine, args))
    print(container.id)
    return 0


@handler("run")
async def run(engine: Engine, args: argparse.Namespace) -> int:
    config = _config_from(engine, args)
    if not args.detach:
        # The CLI stays until the end, so it records the exit itself and honours --rm afterwards.
        config.cleanup_on_exit = False
        config.auto_remove = False
    container = await engine.create(config)
    if args.detach:
        await engine.start(container.id)
        print(container.id)
        return 0
    try:
        if config.tty or config.stdin:
            sessions = []

            async def attach(created: Container) -> None:
                sessions.append(await engine.attach(created.id))

            await engine.start(container.id, on_created=attach)
            try:
                await pump(sessions[0], tty=config.tty, stdin=config.stdin)
            finally:
                await sessions[0].close()
        else:
            offset = log_size(container.log_path)
            await engine.start(container.id)
            await _print_log(engine, container, offset)
        finished = await engine.wait(container.id)
        return finished.state.exit_code
    finally:
        if args.rm:
            try:
                await engine.remove(container.id, force=True)
            except ContainerNotFound:
                pass


async def _print_log(engine: Engine, container: Container, offset: int) -> None:
    exited = asyncio.ensure_future(engine.wait(container.id))
    try:
        async for line in follow(container.log_path, start_offset=offset, running=lambda: not exited.done()):
            out = sys.stdout.buffer if line.stream == "stdout" else sys.stderr.buffer
            out.write(line.data)
            out.flush()
    finally:
        await exited


@handler("start")
async def start(engine: Engine, args: argparse.Namespace) -> int:
    status = 0
    for ref in args.containers:
        try:
            container = await engine.start(ref)
        except USER_ERRORS as err:
            _error(err)
            status = 1
            continue
        if args.attach:
            offset = log_size(container.log_path)
            await _print_log(engine, container, offset)
            return (await engine.refresh(container.id)).state.exit_code
        print(ref)
    return status


async def _each(refs: list[str], action: Callable[[str], Awaitable[object]],
                shown: Callable[[str, object], object] = lambda ref, _: ref) -> int:
    """Docker acts on each named container, prints what `shown` makes of each success (the name as
    given, by default), reports each failure, and exits 1 if any failed."""
    status = 0
    for ref in refs:
        try:
            result = await action(ref)
        except USER_ERRORS as err:
            _error(err)
            status = 1
            continue
        print(shown(ref, result))
    return status


@handler("stop")
async def stop(engine: Engine, args: argparse.Namespace) -> int:
    return await _each(args.containers, lambda ref: engine.stop(ref, args.timeout, args.signal))


@handler("restart")
async def restart(engine: Engine, args: argparse.Namespace) -> int:
    return await _each(args.containers, lambda ref: engine.restart(ref, args.timeout))


@handler("kill")
async def kill(engine: Engine, args: argparse.Namespace) -> int:
    return await _each(args.containers, lambda ref: engine.kill(ref, args.signal))


@handler("rm")
async def remove(engine: Engine, args: argparse.Namespace) -> int:
    return await _each(args.containers, lambda ref: engine.remove(ref, force=args.force))


@handler("wait")
async def wait(engine: Engine, args: argparse.Namespace) -> int:
    return await _each(args.containers, engine.wait, lambda _, container: container.state.exit_code)


def _matches(container: Container, filters: list[str]) -> bool:
    for item in filters:
        key, _, value = item.partition("=")
        if key == "name" and value not in container.name:
            return False
        if key == "id" and not container.id.startswith(value):
            return False
        if key == "status" and container.state.status != value:
            return False
        if key == "ancestor" and value not in (container.image, container.image_id):
            return False
        if key == "exited" and (container.state.status != "exited" or str(container.state.exit_code) != value):
            return False
        if key == "label":
            label, eq, expected = value.partition("=")
            if label not in container.config.labels or (eq and container.config.labels[label] != expected):
                return False
    return True


PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "RunningFor": "CREATED",
              "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES", "CreatedAt": "CREATED AT", "State": "STATE",
              "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS"}


@handler("ps")
async def ps(engine: Engine, args: argparse.Namespace) -> int:
    containers = []
    for container in engine.containers.list():
        if container.running:
            container = await engine.refresh(container.id)
        containers.append(container)
    show_all = args.all or args.latest or args.last > 0 or any(f.startswith(("status=", "exited="))
                                                                for f in args.filter)
    selected = [c for c in containers if (show_all or c.running) and _matches(c, args.filter)]
    if args.latest:
        selected = selected[:1]
    elif args.last > 0:
        selected = selected[:args.last]
    if args.quiet:
        for container in selected:
            print(container.id if args.no_trunc else container.short_id)
        return 0
    rows = [views.container_row(c, no_trunc=args.no_trunc) for c in selected]
    template = args.format or "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t" \
                              "{{.Ports}}\t{{.Names}}"
    output = fmt.format_rows(template, rows, PS_HEADERS)
    if output:
        print(output)
    return 0


def _time_arg(text: str | None) -> float | None:
    """--since/--until: an RFC3339 time, a Unix timestamp, or a duration before now (10m, 1h30m)."""
    if not text:
        return None
    if re.fullmatch(r"(\d+(\.\d+)?[smh])+", text):
        seconds = sum(float(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([smh])",
                                                                                          text))
        return time.time() - seconds
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise OptionError(f'invalid value for "since": failed to parse value as time or duration: "{text}"') \
            from None


def _write_line(line, timestamps: bool) -> None:
    out = sys.stdout.buffer if line.stream == "stdout" else sys.stderr.buffer
    if timestamps:
        out.write(fmt.rfc3339(line.timestamp).encode() + b" ")
    out.write(line.data)


@handler("logs")
async def logs(engine: Engine, args: argparse.Namespace) -> int:
    container = await engine.refresh(args.container)
    tail = None if args.tail in ("all", "-1") else int(args.tail)
    path = container.log_path
    offset = log_size(path)
    lines = select(read_log(path), tail=tail, since=_time_arg(args.since), until=_time_arg(args.until))
    for line in lines:
        _write_line(line, args.timestamps)
    sys.stdout.flush()
    sys.stderr.flush()
    if args.follow and container.running:
        exited = asyncio.ensure_future(engine.wait(container.id))
        async for line in follow(path, start_offset=offset, running=lambda: not exited.done()):
            _write_line(line, args.timestamps)
            sys.stdout.flush()
            sys.stderr.flush()
        await exited
    return 0


@handler("exec")
async def exec_(engine: Engine, args: argparse.Namespace) -> int:
    if not args.exec_command:
        raise OptionError('"exec" requires at least 2 arguments')
    env = parse_env(args.env, args.env_file)
    session = await engine.exec(args.container, args.exec_command, tty=args.tty, stdin=args.interactive,
                                env=env, user=args.user or "", working_dir=args.workdir or "",
                                privileged=args.privileged)
    if args.detach:
        return 0
    await pump(session, tty=args.tty, stdin=args.interactive)
    return await session.wait()


@handler("inspect")
async def inspect(engine: Engine, args: argparse.Namespace) -> int:
    documents = []
    status = 0
    for name in args.names:
        document = None
        if args.type in (None, "container"):
            try:
                container = await engine.refresh(name)
                document = views.inspect_container(container, graph=_graph(engine, container))
            except ContainerNotFound:
                pass
        if document is None and args.type in (None, "image"):
            try:
                document = _inspect_image(engine, name)
            except (ImageNotFound, InvalidReference):
                pass
        if document is None:
            _error(f"No such object: {name}")
            status = 1
            continue
        documents.append(document)
    _print_documents(documents, args.format)
    return status


def _print_documents(documents: list[dict], template: str | None) -> None:
    if template:
        for document in documents:
            print(fmt.render_template(template, document))
    else:
        print(json.dumps(documents, indent=4))


def _graph(engine: Engine, container: Container) -> dict[str, str]:
    lower = ":".join(str(p) for p in engine.snapshots.lower_dirs(container.id))
    upper = engine.snapshots.upper_dir(container.id)
    return {"LowerDir": lower, "UpperDir": str(upper), "WorkDir": str(upper.parent / "work"),
            "MergedDir": str(container.rootfs)}


def _inspect_image(engine: Engine, name: str) -> dict:
    image = engine.images.resolve(name)
    config = image.config
    return {
        "Id": image.id, "RepoTags": image.repo_tags, "RepoDigests": image.repo_digests,
        "Created": config.get("created", ""), "Author": config.get("author", ""),
        "Config": config.get("config", {}), "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""), "Size": image.size,
        "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
        "Metadata": {"LastTagTime": ""},
    }


@handler("top")
async def top(engine: Engine, args: argparse.Namespace) -> int:
    container = await engine.refresh(args.container)
    if not container.running:
        raise ContainerStateError(f"container {container.id} is not running")
    pids = engine.processes(container)
    rows = []
    for pid in pids:
        info = _process_info(pid)
        if info:
            rows.append(info)
    print(fmt.table(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], rows))
    return 0


def _process_info(pid: int) -> list[str] | None:
    """One `ps -ef` row from /proc, read on the host as Docker's top does."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    ppid = fields[1]
    utime, stime = int(fields[11]), int(fields[12])
    start_ticks = int(fields[19])
    ticks = os.sysconf("SC_CLK_TCK")
    uid = next((line.split()[1] for line in status.splitlines() if line.startswith("Uid:")), "0")
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    started = time.strftime("%H:%M", time.localtime(boot + start_ticks / ticks))
    cpu_seconds = (utime + stime) // ticks
    cpu_time = f"{cpu_seconds // 3600:02d}:{cpu_seconds // 60 % 60:02d}:{cpu_seconds % 60:02d}"
    command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip() or \
        "[" + stat[stat.index("(") + 1:stat.rindex(")")] + "]"
    user = "root" if uid == "0" else uid
    return [user, str(pid), ppid, "0", started, "?", cpu_time, command]


@handler("stats")
async def stats(engine: Engine, args: argparse.Namespace) -> int:
    containers = [await engine.refresh(ref) for ref in args.containers] if args.containers else \
        [c for c in engine.containers.list() if c.running or args.all]
    while True:
        first = {c.id: engine.stats(c) for c in containers}
        started = time.monotonic()
        await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        rows = []
        for container in containers:
            now = engine.stats(container)
            before = first.get(container.id)
            rows.append(_stats_row(container, before, now, elapsed, args.no_trunc))
        headers = {"ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
                   "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
        template = args.format or "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t" \
                                  "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
        if not args.no_stream:
            sys.stdout.write("\033[2J\033[H")
        print(fmt.format_rows(template, rows, headers))
        sys.stdout.flush()
        if args.no_stream:
            return 0


def _stats_row(container: Container, before, now, elapsed: float, no_trunc: bool) -> dict:
    total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = mem = 0.0
    usage = limit = pids = 0
    if now is not None:
        if before is not None:
            cpu = (now.cpu_usage_ns - before.cpu_usage_ns) / (elapsed * 1e9) * 100
        usage = now.memory_working_set
        limit = now.memory_limit if now.memory_limit and now.memory_limit < total_memory else total_memory
        mem = usage / limit * 100 if limit else 0.0
        pids = now.pids_current
    rx, tx = _net_io(container)
    return {"ID": container.id if no_trunc else container.short_id, "Name": container.name,
            "CPUPerc": f"{cpu:.2f}%", "MemUsage": f"{fmt.bytes_size(usage)} / {fmt.bytes_size(limit)}",
            "MemPerc": f"{mem:.2f}%", "NetIO": f"{fmt.human_size(rx)} / {fmt.human_size(tx)}",
            "BlockIO": "0B / 0B", "PIDs": str(pids), "Container": container.short_id}


def _net_io(container: Container) -> tuple[int, int]:
    if not container.state.pid:
        return 0, 0
    try:
        lines = Path(f"/proc/{container.state.pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return 0, 0
    rx = tx = 0
    for line in lines:
        name, _, data = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = data.split()
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


@handler("cp")
async def cp(engine: Engine, args: argparse.Namespace) -> int:
    source_ref, source_path = _split_container_path(args.source)
    dest_ref, dest_path = _split_container_path(args.destination)
    if bool(source_ref) == bool(dest_ref):
        raise OptionError("copying between containers is not supported" if source_ref else
                          "must specify at least one container source")
    if source_ref:
        buffer = io.BytesIO()
        await engine.copy_from(source_ref, source_path, buffer, follow_link=args.follow_link)
        buffer.seek(0)
        if args.destination == "-":
            sys.stdout.buffer.write(buffer.getvalue())
            return 0
        _extract_local(buffer, Path(dest_path))
        return 0
    if args.source == "-":
        data = io.BytesIO(sys.stdin.buffer.read())
    else:
        local = Path(source_path)
        if not local.exists() and not local.is_symlink():
            raise FileNotFoundError(f'lstat {local}: no such file or directory')
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(local, arcname=local.name if local.name else ".")
        data.seek(0)
    await engine.copy_to(dest_ref, dest_path, data, archive=args.source == "-")
    return 0


def _split_container_path(text: str) -> tuple[str, str]:
    if text.startswith(("/", ".")) or ":" not in text:
        return "", text
    ref, _, path = text.partition(":")
    return ref, path


def _extract_local(buffer: io.BytesIO, destination: Path) -> None:
    """Docker cp's rules: into an existing directory the copy keeps its name; otherwise it takes DEST's."""
    with tarfile.open(fileobj=buffer) as tar:
        members = tar.getmembers()
        if not members:
            return
        top_name = members[0].name.split("/")[0]
        if destination.is_dir():
            tar.extractall(destination, filter="tar")
            return
        if not destination.parent.is_dir():
            raise FileNotFoundError(f"no such directory: {destination.parent}")
        staging = destination.parent / f".pocketkube-cp-{os.getpid()}"
        staging.mkdir()
        try:
            tar.extractall(staging, filter="tar")
            os.replace(staging / top_name, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# --- images ------------------------------------------------------------------------------------------

IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE"}


@handler("images")
async def images(engine: Engine, args: argparse.Namespace) -> int:
    selected = engine.images.list()
    if args.repository:
        selected = [i for i in selected if any(_repo_matches(t, args.repository) for t in i.repo_tags)]
    for item in args.filter:
        key, _, value = item.partition("=")
        if key == "dangling":
            selected = [i for i in selected if (not i.repo_tags) == (value.lower() == "true")]
        elif key == "reference":
            selected = [i for i in selected if any(_repo_matches(t, value) for t in i.repo_tags)]
        else:
            raise OptionError(f"invalid filter '{key}'")
    if args.quiet:
        seen: dict[str, None] = {}
        for image in selected:
            seen[image.id if args.no_trunc else image.id.removeprefix("sha256:")[:12]] = None
        for short in seen:
            print(short)
        return 0
    rows = views.image_rows(selected, no_trunc=args.no_trunc)
    default = "table {{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if args.digests else "") + \
              "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    output = fmt.format_rows(args.format or default, rows, IMAGE_HEADERS)
    if output:
        print(output)
    return 0


def _repo_matches(tag: str, pattern: str) -> bool:
    repository = tag.rpartition(":")[0]
    return fnmatch.fnmatch(tag, pattern) or fnmatch.fnmatch(repository, pattern)


@handler("rmi")
async def rmi(engine: Engine, args: argparse.Namespace) -> int:
    status = 0
    for name in args.images:
        try:
            results = engine.images.remove(name, force=args.force,
                                           in_use=engine.image_in_use)
        except USER_ERRORS as err:
            _error(err)
            status = 1
            continue
        for action, what in results:
            print(f"{action}: {what}")
    _collect_blobs(engine)
    return status


@handler("tag")
async def tag(engine: Engine, args: argparse.Namespace) -> int:
    engine.images.tag(args.source, args.target)
    return 0


@handler("history")
async def history(engine: Engine, args: argparse.Namespace) -> int:
    entries = engine.images.history(args.image)
    if args.quiet:
        for entry in entries:
            print(entry.get("id", "<missing>") if args.no_trunc else
                  entry.get("id", "<missing>").removeprefix("sha256:")[:12])
        return 0
    rows = views.history_rows(entries, no_trunc=args.no_trunc, human=args.human != "false")
    headers = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
               "Size": "SIZE", "Comment": "COMMENT"}
    print(fmt.format_rows(args.format or "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t"
                                         "{{.Comment}}", rows, headers))
    return 0


@handler("save")
async def save(engine: Engine, args: argparse.Namespace) -> int:
    from pocketkube.engine.images import archive  # only the archive commands need it: `run` starts faster

    if args.output:
        await asyncio.to_thread(archive.save, engine.images, args.images, Path(args.output), format=args.format)
        return 0
    if sys.stdout.isatty():
        raise OptionError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    await asyncio.to_thread(archive.save, engine.images, args.images, sys.stdout.buffer, format=args.format)
    return 0


@handler("load")
async def load(engine: Engine, args: argparse.Namespace) -> int:
    source = Path(args.input) if args.input else sys.stdin.buffer
    if not args.input and sys.stdin.isatty():
        raise OptionError("requested load from stdin, but stdin is empty")
    from pocketkube.engine.images import archive

    lines = await asyncio.to_thread(archive.load, engine.images, source)
    if not args.quiet:
        for line in lines:
            print(line)
    return 0


@handler("import")
async def import_(engine: Engine, args: argparse.Namespace) -> int:
    changes = apply_changes(args.change)
    os_name, _, arch = args.platform.partition("/")
    source = sys.stdin.buffer if args.file == "-" else Path(args.file)
    from pocketkube.engine.images import archive

    image = await asyncio.to_thread(archive.import_rootfs, engine.images, source, args.reference,
                                    changes=changes, message=args.message, platform=(os_name, arch or "amd64"))
    print(image.id)
    return 0


@handler("image")
async def image(engine: Engine, args: argparse.Namespace) -> int:
    sub = args.image_command
    if sub in ("ls", "list"):
        return await images(engine, args)
    if sub in ("rm", "remove"):
        return await rmi(engine, args)
    if sub == "history":
        return await history(engine, args)
    if sub == "save":
        return await save(engine, args)
    if sub == "load":
        return await load(engine, args)
    if sub == "import":
        return await import_(engine, args)
    if sub == "tag":
        return await tag(engine, args)
    if sub == "inspect":
        documents = []
        status = 0
        for name in args.names:
            try:
                documents.append(_inspect_image(engine, name))
            except (ImageNotFound, InvalidReference) as err:
                _error(err)
                status = 1
        _print_documents(documents, args.format)
        return status
    if sub == "prune":
        before = _stored_bytes(engine)
        results = engine.images.prune(all=args.all, in_use=engine.image_in_use)
        _collect_blobs(engine)
        _print_prune(results, before - _stored_bytes(engine))
        return 0
    raise OptionError(f"unknown image command {sub}")


def _collect_blobs(engine: Engine) -> None:
    """Deletes blobs no image needs, keeping the build cache's layers (the builder writes a blob and its
    cache record under the same lock, so none is taken in between)."""
    from pocketkube.engine.build.cache import referenced_blobs

    with engine.images.locked():
        engine.images.gc(keep_blobs=referenced_blobs(engine.data_dir))


def _stored_bytes(engine: Engine) -> int:
    return sum(engine.content.size(digest) for digest in engine.content.digests())


def _print_prune(results: list[tuple[str, str]], reclaimed: int) -> None:
    if results:
        print("Deleted Images:")
        for action, what in results:
            print(f"{action.lower()}: {what}")
        print()
    print(f"Total reclaimed space: {fmt.human_size(max(reclaimed, 0))}")


@handler("system")
async def system(engine: Engine, args: argparse.Namespace) -> int:
    if args.system_command == "df":
        return _system_df(engine, args.verbose)
    containers = [await engine.refresh(c.id) for c in engine.containers.list()]
    deleted = []
    for container in containers:
        if not container.running:
            await engine.remove(container.id)
            deleted.append(container.id)
    if deleted:
        print("Deleted Containers:")
        print("\n".join(deleted))
        print()
    before = _stored_bytes(engine)
    results = engine.images.prune(all=args.all, in_use=engine.image_in_use)
    _collect_blobs(engine)
    engine.collect_snapshots()
    _print_prune(results, before - _stored_bytes(engine))
    return 0


def _system_df(engine: Engine, verbose: bool) -> int:
    usage = engine.images.disk_usage()
    containers = engine.containers.list()
    active_images = {c.image_id for c in containers}
    container_sizes = [engine.snapshots.usage(c.id) for c in containers]
    running = sum(1 for c in containers if c.running)
    rows = [
        ["Images", str(len(usage["images"])), str(sum(1 for i in usage["images"] if i["id"] in active_images)),
         fmt.human_size(usage["total"]),
         fmt.human_size(sum(i["size"] for i in usage["images"] if i["id"] not in active_images))],
        ["Containers", str(len(containers)), str(running), fmt.human_size(sum(container_sizes)),
         fmt.human_size(sum(s for c, s in zip(containers, container_sizes, strict=True) if not c.running))],
        ["Local Volumes", "0", "0", "0B", "0B"],
        ["Build Cache", "0", "0", "0B", "0B"],
    ]
    print(fmt.table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows))
    return 0
