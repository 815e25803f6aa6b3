"""One stage's instructions compiled into steps and the image config they produce (BuildKit's
dispatch): ARG scoping, variable expansion per instruction, the config fields Docker writes and the
history text BuildKit records. Nothing here touches a filesystem."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from pocketkube.engine.build import imageconfig as ic
from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.expand import ExpansionError, ShellLex
from pocketkube.engine.build.mountflags import parse_mount
from pocketkube.engine.build.parse import HEREDOC_MARKER, Instruction, parse_flags
from pocketkube.engine.build.steps import CopyStep, MetaStep, RunMount, RunStep, Step, WorkdirStep

# Build args every Dockerfile may use without declaring them; RUN sees them but they are neither cached
# nor recorded (Docker's rule).
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY",
              "no_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_SHELL = ["/bin/sh", "-c"]
_NETWORKS = ("default", "none", "host")
_HEALTH_FLAGS = {"interval": "string", "timeout": "string", "start-period": "string",
                 "start-interval": "string", "retries": "string"}


@dataclass
class StageScope:
    """What a stage's compilation needs from the rest of the build."""

    lex: ShellLex
    build_args: dict[str, str]              # --build-arg values
    global_args: dict[str, str | None]      # ARGs before the first FROM, resolved
    network: str                            # the build's default for RUN
    find_stage: Callable[[str], int | None]  # an earlier stage by name or index, else None


class StageCompiler:
    def __init__(self, scope: StageScope, image: dict) -> None:
        self.scope = scope
        self.image = image                  # config document, changed in place
        self.config: dict = image.setdefault("config", {})
        self.args: dict[str, str | None] = {}
        self.cmd_set = False
        self.steps: list[Step] = []
        self.depends_on: set[int] = set()
        self.onbuild: list[str] = []

    def compile(self, instructions: list[Instruction]) -> list[Step]:
        for instruction in instructions:
            handler = getattr(self, "_" + instruction.cmd.lower())
            try:
                handler(instruction)
            except BuildError as err:
                raise err.at(instruction.location) from None
            except (ExpansionError, ValueError) as err:
                raise BuildError(str(err), location=instruction.location) from None
        if self.onbuild:
            self.config["OnBuild"] = list(self.onbuild)
        return self.steps

    # --- environment ------------------------------------------------------------------------------

    def expansion_env(self) -> dict[str, str]:
        """What $VARS expand to: the stage's ARGs, overridden by ENV (Docker's precedence)."""
        env = {name: value for name, value in self.args.items() if value is not None}
        env.update(ic.env_dict(self.config.get("Env") or []))
        return env

    def _word(self, text: str) -> str:
        return self.scope.lex.process_word(text, self.expansion_env())

    def _run_env(self) -> list[str]:
        """RUN's environment: the image's, plus the build args the stage declared (ENV wins)."""
        env = list(self.config.get("Env") or [])
        names = set(ic.env_dict(env))
        env += [f"{name}={value}" for name, value in self.args.items()
                if value is not None and name not in names and name not in PROXY_ARGS]
        return env

    def _meta(self, instruction: Instruction, created_by: str) -> None:
        self.steps.append(MetaStep(location=instruction.location, display=instruction.display,
                                   created_by=created_by, key_text=created_by))

    @property
    def shell_words(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    # --- metadata instructions -------------------------------------------------------------------

    def _arg(self, instruction: Instruction) -> None:
        if not instruction.args:
            raise BuildError("ARG requires at least one argument")
        for token in instruction.args:
            name, has_default, default = token.partition("=")
            if not name:
                raise BuildError("ARG names can not be blank")
            if name in self.scope.build_args:
                self.args[name] = self.scope.build_args[name]
            elif has_default:
                self.args[name] = self._word(default)
            else:
                self.args[name] = self.scope.global_args.get(name)
        # the Dockerfile's text, never a --build-arg value
        self._meta(instruction, "ARG " + " ".join(instruction.args))

    def _env(self, instruction: Instruction) -> None:
        pairs = self._pairs(instruction, "ENV")
        env = list(self.config.get("Env") or [])
        for key, value in pairs:
            env = ic.set_env(env, key, value)
        self.config["Env"] = env
        self._meta(instruction, "ENV " + " ".join(f"{key}={value}" for key, value in pairs))

    def _label(self, instruction: Instruction) -> None:
        pairs = self._pairs(instruction, "LABEL")
        labels = dict(self.config.get("Labels") or {})
        labels.update(pairs)
        self.config["Labels"] = labels
        self._meta(instruction, "LABEL " + " ".join(f"{key}={value}" for key, value in pairs))

    def _pairs(self, instruction: Instruction, name: str) -> list[tuple[str, str]]:
        """KEY=VALUE pairs (or the legacy KEY VALUE), all expanded against the env before the instruction."""
        args = instruction.args
        if not args or len(args) % 2:
            raise BuildError(f"{name} requires at least one argument")
        env = self.expansion_env()
        lex = self.scope.lex
        pairs = []
        for key, value in zip(args[::2], args[1::2], strict=True):
            key = lex.process_word(key, env)
            if not key:
                raise BuildError(f"{name} names can not be blank")
            pairs.append((key, lex.process_word(value, env)))
        return pairs

    def _maintainer(self, instruction: Instruction) -> None:
        if len(instruction.args) != 1:
            raise BuildError("MAINTAINER requires exactly one argument")
        self.image["author"] = instruction.args[0]
        self._meta(instruction, f"MAINTAINER {instruction.args[0]}")

    def _user(self, instruction: Instruction) -> None:
        if len(instruction.args) != 1:
            raise BuildError("USER requires exactly one argument")
        user = self._word(instruction.args[0])
        self.config["User"] = user
        self._meta(instruction, f"USER {user}")

    def _cmd(self, instruction: Instruction) -> None:
        self.config["Cmd"] = self._command_line(instruction)
        self.cmd_set = True
        self._meta(instruction, f"CMD {ic.go_quoted_list(self.config['Cmd'])}")

    def _entrypoint(self, instruction: Instruction) -> None:
        self.config["Entrypoint"] = self._command_line(instruction)
        if not self.cmd_set:  # an inherited CMD makes no sense with a new ENTRYPOINT (Docker drops it)
            self.config.pop("Cmd", None)
        self._meta(instruction, f"ENTRYPOINT {ic.go_quoted_list(self.config['Entrypoint'])}")

    def _command_line(self, instruction: Instruction) -> list[str]:
        if instruction.json:
            return list(instruction.args)
        return self.shell_words + [instruction.args[0]] if instruction.args else []

    def _shell(self, instruction: Instruction) -> None:
        if not instruction.args:
            raise BuildError("SHELL requires at least one argument")
        if not instruction.json:
            raise BuildError("SHELL requires the arguments to be in JSON form")
        self.config["Shell"] = list(instruction.args)
        self._meta(instruction, f"SHELL {ic.go_list(self.config['Shell'])}")

    def _healthcheck(self, instruction: Instruction) -> None:
        args = instruction.args
        if not args:
            raise BuildError("HEALTHCHECK requires at least one argument")
        kind = args[0].upper()
        if kind == "NONE":
            if len(args) > 1 or instruction.flags:
                raise BuildError("HEALTHCHECK NONE takes no arguments")
            health: dict = {"Test": ["NONE"]}
        elif kind == "CMD":
            flags = parse_flags(instruction, _HEALTH_FLAGS)
            if instruction.json:
                test = ["CMD", *args[1:]]
            else:
                if len(args) < 2 or not args[1]:
                    raise BuildError("Missing command after HEALTHCHECK CMD")
                test = ["CMD-SHELL", args[1]]
            if len(test) < 2:
                raise BuildError("Missing command after HEALTHCHECK CMD")
            health = {"Test": test}
            for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                              ("start-interval", "StartInterval")):
                if flag in flags:
                    value = ic.parse_duration(str(flags[flag]))
                    if value and value < 1_000_000:
                        raise BuildError(f'Interval "{flag}" cannot be less than 1ms')
                    if value:
                        health[key] = value
            if "retries" in flags:
                retries = int(str(flags["retries"]))
                if retries < 0:
                    raise BuildError(f"--retries cannot be negative ({retries})")
                if retries:
                    health["Retries"] = retries
        else:
            raise BuildError(f'Unknown type "{args[0]}" in HEALTHCHECK (try CMD)')
        self.config["Healthcheck"] = health
        self._meta(instruction, ic.healthcheck_text(health))

    def _expose(self, instruction: Instruction) -> None:
        if not instruction.args:
            raise BuildError("EXPOSE requires at least one argument")
        words = [word for arg in instruction.args
                 for word in self.scope.lex.process_words(arg, self.expansion_env())]
        specs = ic.port_specs(words)
        ports = dict(self.config.get("ExposedPorts") or {})
        ports.update({spec: {} for spec in specs})
        self.config["ExposedPorts"] = ports
        self._meta(instruction, "EXPOSE " + " ".join(specs))

    def _volume(self, instruction: Instruction) -> None:
        if not instruction.args:
            raise BuildError("VOLUME requires at least one argument")
        volumes = [self._word(arg) for arg in instruction.args]
        if any(not volume for volume in volumes):
            raise BuildError("VOLUME specified can not be an empty string")
        existing = dict(self.config.get("Volumes") or {})
        existing.update({volume: {} for volume in volumes})
        self.config["Volumes"] = existing
        self._meta(instruction, f"VOLUME {ic.go_list(volumes)}")

    def _stopsignal(self, instruction: Instruction) -> None:
        if len(instruction.args) != 1:
            raise BuildError("STOPSIGNAL requires exactly one argument")
        value = self._word(instruction.args[0])
        ic.check_signal(value)
        self.config["StopSignal"] = value
        self._meta(instruction, f"STOPSIGNAL {value}")

    def _onbuild(self, instruction: Instruction) -> None:
        self.onbuild.append(instruction.args[0])

    # --- filesystem instructions -----------------------------------------------------------------

    def _workdir(self, instruction: Instruction) -> None:
        if len(instruction.args) != 1:
            raise BuildError("WORKDIR requires exactly one argument")
        path = self._word(instruction.args[0])
        path = posixpath.normpath(posixpath.join(self.config.get("WorkingDir") or "/", path))
        path = "/" + path.lstrip("/")
        self.config["WorkingDir"] = path
        if path == "/":
            self._meta(instruction, f"WORKDIR {path}")
            return
        user = self.config.get("User", "")
        self.steps.append(WorkdirStep(
            location=instruction.location, display=instruction.display, created_by=f"WORKDIR {path}",
            key_text=json.dumps({"workdir": path, "user": user}), path=path, user=user))

    def _run(self, instruction: Instruction) -> None:
        flags = parse_flags(instruction, {"mount": "list", "network": "string", "security": "string"})
        if not instruction.args and not instruction.heredocs:
            raise BuildError("RUN requires at least one argument")
        network = str(flags.get("network", self.scope.network))
        if network not in _NETWORKS:
            raise BuildError(f"unsupported network mode {network!r}: use default, none or host")
        if flags.get("security", "sandbox") != "sandbox":
            raise BuildError("RUN --security=insecure needs an entitlement this builder does not grant")
        mounts = [parse_mount(text, expand=self._word, find_stage=self.scope.find_stage,
                              workdir=self.config.get("WorkingDir") or "/")
                  for text in flags.get("mount", [])]  # type: ignore[union-attr]
        self.depends_on.update(mount.from_stage for mount in mounts if mount.from_stage is not None)
        args = self._run_args(instruction, mounts)
        env = self._run_env()
        proxies = [f"{name}={self.scope.build_args[name]}" for name in PROXY_ARGS if name in self.scope.build_args]
        user = self.config.get("User", "")
        workdir = self.config.get("WorkingDir") or "/"
        key = {"args": args, "env": env, "user": user, "workdir": workdir, "network": network,
               "mounts": [mount.key_text() for mount in mounts]}
        self.steps.append(RunStep(
            location=instruction.location, display=instruction.display,
            created_by="RUN " + " ".join(args) + " # buildkit", key_text=json.dumps(key), args=args, env=env,
            proxy_env=proxies, user=user, workdir=workdir, network=network, mounts=mounts))

    def _run_args(self, instruction: Instruction, mounts: list[RunMount]) -> list[str]:
        if instruction.json:
            if not instruction.args:
                raise BuildError("RUN requires at least one argument")
            return list(instruction.args)
        command = instruction.args[0] if instruction.args else ""
        if not instruction.heredocs:
            return self.shell_words + [command]
        only = instruction.heredocs[0]
        if len(instruction.heredocs) == 1 and HEREDOC_MARKER.fullmatch(command.strip()):
            script = only.content
            if script.startswith("#!"):  # run the document itself, by its interpreter line
                target = posixpath.join("/dev/pipes", only.name)
                mounts.append(RunMount(type="heredoc", target=target, readonly=True, content=script))
                return [target]
            return self.shell_words + [script]
        # anything else: the shell gets the heredocs back and reads them itself
        text = command + "".join(f"\n{heredoc.raw}{heredoc.name}" for heredoc in instruction.heredocs)
        return self.shell_words + [text]

    def _copy(self, instruction: Instruction) -> None:
        self._copy_or_add(instruction, "COPY")

    def _add(self, instruction: Instruction) -> None:
        self._copy_or_add(instruction, "ADD")

    def _copy_or_add(self, instruction: Instruction, name: str) -> None:
        allowed = {"chown": "string", "chmod": "string", "link": "bool"}
        if name == "COPY":
            allowed["from"] = "string"
        else:
            allowed.update({"keep-git-dir": "bool", "checksum": "string"})
        flags = parse_flags(instruction, allowed)
        args = instruction.args
        if len(args) < 2:
            raise BuildError(f"{name} requires at least two arguments, but only one was provided. Destination "
                             "could not be determined" if args else f"{name} requires at least one argument")
        env = self.expansion_env()
        lex = self.scope.lex
        heredocs = {heredoc.name: heredoc for heredoc in instruction.heredocs}
        sources, inline = [], []
        for token in args[:-1]:
            marker = HEREDOC_MARKER.fullmatch(token)
            if marker and marker.group(3) in heredocs:
                heredoc = heredocs[marker.group(3)]
                content = heredoc.content
                if heredoc.expand:
                    content = ShellLex(process_quotes=False).process_word(content, env)
                inline.append((heredoc.name, content))
            else:
                sources.append(lex.process_word(token, env))
        if HEREDOC_MARKER.fullmatch(args[-1]):
            raise BuildError(f"{name} cannot accept a heredoc as destination")
        for source in sources:
            _refuse_remote(name, source)
        if flags.get("checksum"):
            raise BuildError("checksum requires HTTP(S) or Git sources")
        dest = self._dest(lex.process_word(args[-1], env))
        chown = lex.process_word(str(flags.get("chown", "")), env)
        chmod_text = lex.process_word(str(flags.get("chmod", "")), env)
        chmod = _chmod(chmod_text) if chmod_text else None
        from_stage, from_image = None, None
        if "from" in flags:
            source_name = str(flags["from"])
            if "$" in source_name:
                raise BuildError("variable expansion is not supported for --from, define a new stage with FROM "
                                 "using ARG from global scope as a workaround")
            from_stage = self.scope.find_stage(source_name)
            if from_stage is None:
                from_image = source_name
            else:
                self.depends_on.add(from_stage)
        created_by = " ".join([name, *([f"--chown={chown}"] if chown else []),
                               *([f"--chmod={chmod_text}"] if chmod_text else []), *sources,
                               *(f"<<{n}" for n, _ in inline), args[-1]]) + " # buildkit"
        key = {"instruction": name, "sources": sources, "inline": inline, "dest": dest, "chown": chown,
               "chmod": chmod, "link": bool(flags.get("link")), "from_image": from_image}
        self.steps.append(CopyStep(
            location=instruction.location, display=instruction.display, created_by=created_by,
            key_text=json.dumps(key), instruction=name, sources=sources, inline=inline, dest=dest,
            from_stage=from_stage, from_image=from_image, chown=chown, chmod=chmod, link=bool(flags.get("link"))))

    def _dest(self, dest: str) -> str:
        """The destination made absolute against WORKDIR; a trailing slash (or ".") means "into"."""
        if not dest or dest == ".":
            dest = "./"
        directory = dest.endswith("/") or dest.endswith("/.") or dest == "."
        if not dest.startswith("/"):
            dest = posixpath.join(self.config.get("WorkingDir") or "/", dest)
        normalized = posixpath.normpath("/" + dest.lstrip("/"))
        if directory and normalized != "/":
            normalized += "/"
        return normalized


def _refuse_remote(name: str, source: str) -> None:
    lowered = source.lower()
    if lowered.startswith(("http://", "https://")) or lowered.startswith("git@") or lowered.endswith(".git"):
        if name == "COPY":
            raise BuildError("source can't be a URL for COPY")
        raise BuildError(f"ADD {source}: remote sources (URLs and git repositories) cannot be fetched: this "
                         "builder has no network access; download the file into the build context and COPY it")


def _chmod(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o7777:
        raise BuildError(f"invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777")
    return value
