"""Argument parsers of the Docker-style commands (`pocketkube run|ps|logs|…`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_DATA_DIR = Path("/var/lib/pocketkube")

# Docker's CLI exits 125 when the command line itself is wrong.
USAGE_ERROR = 125


class DockerArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage()
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\nSee '{self.prog} --help'.\n")


def _data_dir(p: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """--data-dir and --runtime on every command; a nested command (`image ls`) only overrides what its
    parent (`image --data-dir D ls`) parsed when the flag is given to it."""
    p.add_argument("--data-dir", type=Path,
                   default=argparse.SUPPRESS if nested else
                   Path(os.environ.get("POCKETKUBE_DATA_DIR", DEFAULT_DATA_DIR)),
                   help="state directory (default: $POCKETKUBE_DATA_DIR or /var/lib/pocketkube)")
    p.add_argument("--runtime", default=argparse.SUPPRESS if nested else os.environ.get("POCKETKUBE_RUNTIME"),
                   choices=("auto", "runc", "crun"),
                   help="OCI runtime (default: DATA_DIR/engine.json's, else the fastest that works)")


def _container_options(p: argparse.ArgumentParser) -> None:
    """The options `run` and `create` share."""
    p.add_argument("--name", help="assign a name to the container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set environment variables")
    p.add_argument("--env-file", action="append", default=[], help="read in a file of environment variables")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]", help="bind mount a volume")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTS]", help="mount a tmpfs directory")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("-h", "--hostname", help="container host name")
    p.add_argument("-l", "--label", action="append", default=[], help="set metadata on a container")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-m", "--memory", help="memory limit")
    p.add_argument("--memory-swap", help="swap limit equal to memory plus swap: -1 for unlimited swap")
    p.add_argument("--memory-reservation", help="memory soft limit")
    p.add_argument("--cpus", help="number of CPUs")
    p.add_argument("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
    p.add_argument("--cpu-quota", type=int, help="limit CPU CFS quota")
    p.add_argument("--cpu-period", type=int, help="limit CPU CFS period")
    p.add_argument("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
    p.add_argument("--pids-limit", type=int, help="tune container pids limit (-1 for unlimited)")
    p.add_argument("--read-only", action="store_true", help="mount the container's root filesystem as read only")
    p.add_argument("--group-add", action="append", default=[], help="add additional groups to join")
    p.add_argument("--cap-add", action="append", default=[], help="add Linux capabilities")
    p.add_argument("--cap-drop", action="append", default=[], help="drop Linux capabilities")
    p.add_argument("--privileged", action="store_true", help="give extended privileges to this container")
    p.add_argument("--security-opt", action="append", default=[], help="security options (no-new-privileges)")
    p.add_argument("--entrypoint", help="overwrite the default ENTRYPOINT of the image")
    p.add_argument("--network", "--net", default="bridge", help="bridge (default), none or host")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CTR",
                   help="publish a container's port(s) to the host")
    p.add_argument("--stop-signal", help="signal to stop the container")
    p.add_argument("--stop-timeout", type=int, help="timeout (in seconds) to stop a container")
    p.add_argument("--sysctl", action="append", default=[], help="sysctl options")
    p.add_argument("--shm-size", help="size of /dev/shm")
    p.add_argument("--rm", action="store_true", help="automatically remove the container when it exits")
    p.add_argument("image", help="image to run")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")


def build_parser(prog: str = "pocketkube") -> argparse.ArgumentParser:
    parser = DockerArgumentParser(prog=prog, add_help=True)
    sub = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND",
                                parser_class=DockerArgumentParser)
    add_commands(sub)
    return parser


def add_commands(sub: argparse._SubParsersAction) -> None:
    def command(name: str, help: str, *, aliases: tuple[str, ...] = (), own_help: bool = True):
        p = sub.add_parser(name, help=help, aliases=list(aliases), add_help=own_help)
        p.set_defaults(engine_command=name)
        _data_dir(p)
        return p

    p = command("run", "create and run a new container from an image", own_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background and print the container ID")
    _container_options(p)

    p = command("create", "create a new container", own_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    _container_options(p)

    p = command("ps", "list containers")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("--format", help="format output using a Go template, 'table …' or 'json'")
    p.add_argument("-f", "--filter", action="append", default=[], help="filter (name=, id=, status=, label=)")
    p.add_argument("-l", "--latest", action="store_true", help="show the latest created container")
    p.add_argument("-n", "--last", type=int, default=-1, help="show n last created containers")

    p = command("logs", "fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument("-n", "--tail", default="all", help="number of lines to show from the end of the logs")
    p.add_argument("--since", help="show logs since timestamp (RFC3339) or relative (42m)")
    p.add_argument("--until", help="show logs before a timestamp or relative time")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("container")

    for name, help in (("stop", "stop one or more running containers"),
                       ("restart", "restart one or more containers")):
        p = command(name, help)
        p.add_argument("-t", "--time", "--timeout", dest="timeout", type=int, default=None,
                       help="seconds to wait before killing the container")
        p.add_argument("-s", "--signal", help="signal to send to the container")
        p.add_argument("containers", nargs="+")

    p = command("kill", "kill one or more running containers")
    p.add_argument("-s", "--signal", default="KILL", help="signal to send to the container")
    p.add_argument("containers", nargs="+")

    p = command("start", "start one or more stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="attach STDOUT/STDERR and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="attach container's STDIN")
    p.add_argument("containers", nargs="+")

    p = command("rm", "remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="force the removal of a running container")
    p.add_argument("-v", "--volumes", action="store_true", help="remove anonymous volumes")
    p.add_argument("containers", nargs="+")

    p = command("exec", "execute a command in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="run the command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], help="set environment variables")
    p.add_argument("--env-file", action="append", default=[], help="read in a file of environment variables")
    p.add_argument("-u", "--user", help="username or UID")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("--privileged", action="store_true", help="give extended privileges to the command")
    p.add_argument("container")
    p.add_argument("exec_command", nargs=argparse.REMAINDER)

    p = command("inspect", "return low-level information on containers or images")
    p.add_argument("-f", "--format", help="format output using a Go template")
    p.add_argument("--type", choices=("container", "image"), help="only inspect objects of this type")
    p.add_argument("-s", "--size", action="store_true", help="display total file sizes")
    p.add_argument("names", nargs="+")

    p = command("top", "display the running processes of a container")
    p.add_argument("container")
    p.add_argument("ps_options", nargs=argparse.REMAINDER)

    p = command("stats", "display a live stream of container resource usage statistics")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("--no-stream", action="store_true", help="disable streaming stats and only pull the first result")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("--format", help="format output using a Go template")
    p.add_argument("containers", nargs="*")

    p = command("cp", "copy files/folders between a container and the local filesystem")
    p.add_argument("-a", "--archive", action="store_true", help="archive mode (copy all uid/gid information)")
    p.add_argument("-L", "--follow-link", action="store_true", help="always follow symbol link in SRC_PATH")
    p.add_argument("source")
    p.add_argument("destination")

    p = command("wait", "block until one or more containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+")

    p = command("images", "list images")
    _images_options(p)

    p = command("rmi", "remove one or more images")
    _rmi_options(p)

    p = command("tag", "create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source")
    p.add_argument("target")

    p = command("history", "show the history of an image")
    _history_options(p)

    p = command("save", "save one or more images to a tar archive (streamed to STDOUT by default)")
    _save_options(p)

    p = command("load", "load an image from a tar archive or STDIN")
    _load_options(p)

    p = command("import", "import the contents from a tarball to create a filesystem image")
    _import_options(p)

    image = command("image", "manage images")
    image_sub = image.add_subparsers(dest="image_command", required=True, metavar="COMMAND",
                                     parser_class=DockerArgumentParser)
    for name, setup, aliases in (("ls", _images_options, ("list",)), ("rm", _rmi_options, ("remove",)),
                                 ("history", _history_options, ()), ("save", _save_options, ()),
                                 ("load", _load_options, ()), ("import", _import_options, ()),
                                 ("prune", _image_prune_options, ()), ("inspect", _image_inspect_options, ()),
                                 ("tag", _tag_options, ())):
        nested = image_sub.add_parser(name, aliases=list(aliases))
        _data_dir(nested, nested=True)
        setup(nested)

    system = command("system", "manage the engine")
    system_sub = system.add_subparsers(dest="system_command", required=True, metavar="COMMAND",
                                       parser_class=DockerArgumentParser)
    df = system_sub.add_parser("df", help="show engine disk usage")
    _data_dir(df, nested=True)
    df.add_argument("-v", "--verbose", action="store_true", help="show detailed information on space usage")
    prune = system_sub.add_parser("prune", help="remove unused data")
    _data_dir(prune, nested=True)
    prune.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    prune.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")


def _images_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show all images")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--format", help="format output using a Go template")
    p.add_argument("-f", "--filter", action="append", default=[], help="filter (dangling=true, reference=)")
    p.add_argument("repository", nargs="?")


def _rmi_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="do not delete untagged parents")
    p.add_argument("images", nargs="+")


def _history_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-H", "--human", default="true", help="print sizes and dates in human readable format")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--format", help="format output using a Go template")
    p.add_argument("image")


def _save_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="write to a file, instead of STDOUT")
    p.add_argument("--format", default="docker-archive", choices=("docker-archive", "oci-archive"),
                   help="archive format (%(default)s)")
    p.add_argument("images", nargs="+")


def _load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="read from tar archive file, instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")


def _import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--change", action="append", default=[], help="apply Dockerfile instruction to the image")
    p.add_argument("-m", "--message", default="", help="set commit message for imported image")
    p.add_argument("--platform", default="linux/amd64", help="set platform if server is multi-platform capable")
    p.add_argument("file", help="tarball path or - for STDIN")
    p.add_argument("reference", nargs="?")


def _image_prune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")


def _image_inspect_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format", help="format output using a Go template")
    p.add_argument("names", nargs="+")


def _tag_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("target")


ENGINE_COMMANDS = ("run", "create", "ps", "logs", "stop", "restart", "kill", "start", "rm", "exec", "inspect", "top",
                   "stats", "cp", "wait", "images", "rmi", "tag", "history", "save", "load", "import", "image",
                   "system")

# Served by cli/registry.py.
REGISTRY_COMMANDS = ("registry", "push", "pull", "login", "logout")
