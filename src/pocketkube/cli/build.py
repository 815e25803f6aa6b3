"""`pocketkube build`: Docker's build command line (BuildKit's output) over pocketkube.engine.build.

    pocketkube build -t NAME[:TAG] [-f Dockerfile] [--target STAGE] [--build-arg K=V] [--secret id=ID,src=PATH]
                     [--no-cache] [--pull] [--platform linux/amd64] [--progress auto|plain|tty]
                     [--iidfile F] [--label K=V] [--network default|none|host] [--data-dir D]
                     [--runtime auto|runc|crun] CONTEXT
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from pocketkube.engine.build.errors import BuildError, ErrorReport
from pocketkube.engine.build.executor import Builder, BuildOptions, BuildResult
from pocketkube.engine.build.progress import Progress
from pocketkube.engine.engine import Engine

DEFAULT_DATA_DIR = Path("/var/lib/pocketkube")


def add_build_command(sub: argparse._SubParsersAction) -> None:
    """Add `build` to a subparsers action."""
    p = sub.add_parser("build", help="build an image from a Dockerfile (like docker build)")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                   help="name and optionally a tag for the image (repeatable)")
    p.add_argument("-f", "--file", default=None, metavar="PATH",
                   help="the Dockerfile (default: CONTEXT/Dockerfile; '-' reads it from standard input)")
    p.add_argument("--target", default=None, help="build this stage and stop")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                   help="set a build-time variable (K alone takes its value from the environment)")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=PATH",
                   help="a secret for RUN --mount=type=secret (src=PATH or env=VARIABLE)")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--pull", action="store_true", help="always pull the images FROM names")
    p.add_argument("--platform", default=None, metavar="OS/ARCH", help="target platform (only this machine's)")
    p.add_argument("--progress", choices=("auto", "plain", "tty", "quiet"), default="auto",
                   help="progress output (auto: tty on a terminal, else plain)")
    p.add_argument("--iidfile", type=Path, default=None, help="write the image ID to this file")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="set metadata on the image")
    p.add_argument("--network", choices=("default", "none", "host"), default="default",
                   help="the network RUN steps use (default: the engine's bridge)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("POCKETKUBE_DATA_DIR", DEFAULT_DATA_DIR)),
                   help="state directory (default: $POCKETKUBE_DATA_DIR or /var/lib/pocketkube)")
    p.add_argument("--runtime", default=os.environ.get("POCKETKUBE_RUNTIME"), choices=("auto", "runc", "crun"),
                   help="OCI runtime for RUN steps (default: DATA_DIR/engine.json's, else the fastest that works)")
    p.add_argument("context", metavar="CONTEXT", help="the build context directory")


def run_build_command(args: argparse.Namespace) -> int:
    mode = args.progress
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    progress = Progress(sys.stderr, mode)
    report = ErrorReport(message="")
    try:
        options = _options(args)
        if options.dockerfile is not None:
            report.dockerfile_name = options.dockerfile.name
        if options.dockerfile_text is not None:
            report.lines = options.dockerfile_text.splitlines()
        elif (path := options.dockerfile or options.context / "Dockerfile").is_file():
            report.lines = path.read_text(errors="replace").splitlines()
        result = asyncio.run(_build(Builder(Engine(args.data_dir, runtime=args.runtime), options, progress)))
    except (KeyboardInterrupt, asyncio.CancelledError) as err:
        progress.close(False)
        print("ERROR: build canceled", file=sys.stderr)
        return 130 if isinstance(err, KeyboardInterrupt) else 128 + signal.SIGTERM
    except BuildError as err:
        progress.close(False)
        report.message, report.location, report.step, report.logs = err.message, err.location, err.step, err.logs
        sys.stderr.write(report.render())
        return 1
    progress.close(True)
    if args.iidfile is not None:
        args.iidfile.write_text(result.image.id)
    return 0


async def _build(builder: Builder) -> BuildResult:
    """The build, cancelled (and so cleaned up) by SIGTERM as asyncio.run does for Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await builder.build()


def _options(args: argparse.Namespace) -> BuildOptions:
    if args.context == "-" or "://" in args.context:
        raise BuildError(f"unable to prepare context: {args.context!r}: only a local directory can be a build "
                         "context here")
    dockerfile_text = None
    dockerfile = None
    if args.file == "-":
        dockerfile_text = sys.stdin.read()
    elif args.file is not None:
        dockerfile = Path(args.file)
    return BuildOptions(
        context=Path(args.context), dockerfile=dockerfile, dockerfile_text=dockerfile_text, tags=list(args.tag),
        target=args.target, build_args=_build_args(args.build_arg), secrets=_secrets(args.secret),
        no_cache=args.no_cache, pull=args.pull, platform=args.platform, labels=_pairs(args.label, "--label"),
        network=args.network)


def _build_args(values: list[str]) -> dict[str, str]:
    result = {}
    for value in values:
        key, has_value, text = value.partition("=")
        if not key:
            raise BuildError(f"invalid --build-arg {value!r}: expected KEY=VALUE")
        if has_value:
            result[key] = text
        elif key in os.environ:  # Docker's rule: a bare KEY passes the variable through, if set
            result[key] = os.environ[key]
    return result


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, _, text = value.partition("=")
        if not key:
            raise BuildError(f"invalid {flag} {value!r}: expected KEY=VALUE")
        result[key] = text
    return result


def _secrets(specs: list[str]) -> dict[str, bytes]:
    """--secret id=ID[,src=PATH|,env=VAR], read now: the build keeps secrets in memory and on tmpfs only."""
    secrets = {}
    for text in specs:
        fields = dict(part.split("=", 1) if "=" in part else (part, "") for part in text.split(","))
        secret_id = fields.get("id", "")
        if not secret_id:
            raise BuildError(f"invalid secret {text!r}: id=ID is required")
        source = fields.get("src") or fields.get("source")
        variable = fields.get("env") or (secret_id if not source and secret_id in os.environ else "")
        if source:
            try:
                secrets[secret_id] = Path(source).read_bytes()
            except OSError as err:
                raise BuildError(f"failed to read secret {secret_id} from {source}: {err.strerror}") from None
        elif variable:
            if variable not in os.environ:
                raise BuildError(f"secret {secret_id}: environment variable {variable} is not set")
            secrets[secret_id] = os.environ[variable].encode()
        else:
            raise BuildError(f"secret {secret_id}: give src=PATH or env=VARIABLE")
    return secrets
