"""Dockerfile text → instructions grouped into stages, with Docker's parser (the `dockerfile` package wraps
BuildKit's Go parser: continuations, comments, JSON and shell forms, heredocs, the escape directive).

This module adds what the Go parser leaves to the frontend: parser directives, the instruction names
Docker knows, flags (`--from=x`), heredoc delimiters (quoted: no expansion; `<<-`: leading tabs removed),
ARGs before the first FROM and the split into stages. Errors carry the Dockerfile line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dockerfile

from pocketkube.engine.build.errors import BuildError, Location

INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "MAINTAINER",
    "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
HEREDOC_MARKER = re.compile(r"<<(-?)\s*(\"|')?([^\s\"']+)(\2)?")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")


@dataclass(frozen=True)
class Heredoc:
    name: str
    raw: str      # the body as written
    chomp: bool   # `<<-`: leading tabs of every line go
    expand: bool  # the delimiter was not quoted: $VARS in the body are expanded (COPY/ADD)

    @property
    def content(self) -> str:
        if not self.chomp:
            return self.raw
        return "".join(line.lstrip("\t") for line in self.raw.splitlines(keepends=True))


@dataclass
class Instruction:
    cmd: str                  # upper case: "RUN"
    args: list[str]           # the arguments after the flags (JSON form: the list elements)
    flags: list[str]          # "--from=x", "--link"
    json: bool                # exec (JSON) form
    original: str             # the instruction's text, continuations joined
    location: Location
    heredocs: list[Heredoc] = field(default_factory=list)

    @property
    def display(self) -> str:
        """How progress names the instruction: its first line, the keyword upper case."""
        first = self.original.split("\n", 1)[0].strip()
        keyword, _, rest = first.partition(" ")
        return f"{keyword.upper()} {rest.strip()}".strip()


@dataclass
class StageDef:
    index: int
    name: str | None          # lower case, as FROM ... AS <name> gave it
    base: str                 # the image or stage FROM names (not yet expanded)
    platform: str | None      # FROM --platform=...
    location: Location
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass
class Dockerfile:
    lines: list[str]              # the source, for error snippets
    escape: str
    meta_args: list[Instruction]  # ARGs before the first FROM
    stages: list[StageDef]


def parse_dockerfile(text: str) -> Dockerfile:
    lines = text.splitlines()
    directives = _directives(lines)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise BuildError(f"invalid escape token {escape!r} does not match ^[\\\\`]$", location=Location(1, 1))
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as err:
        location = _failing_line(lines, str(err))
        where = f" on line {location.start}" if location else ""
        raise BuildError(f"dockerfile parse error{where}: {err}", location=location) from None
    instructions = [_instruction(command) for command in commands]
    meta_args: list[Instruction] = []
    stages: list[StageDef] = []
    for instruction in instructions:
        if instruction.cmd == "FROM":
            stages.append(_stage(instruction, len(stages)))
        elif not stages:
            if instruction.cmd != "ARG":
                raise BuildError("no build stage in current context", location=instruction.location)
            meta_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise BuildError("dockerfile parse error: file with no instructions" if not instructions
                         else "no build stage in current context",
                         location=instructions[-1].location if instructions else None)
    names: dict[str, StageDef] = {}
    for stage in stages:
        if stage.name is not None:
            if stage.name in names:
                raise BuildError(f"duplicate stage name {stage.name!r}", location=stage.location)
            names[stage.name] = stage
    return Dockerfile(lines=lines, escape=escape, meta_args=meta_args, stages=stages)


def parse_trigger(expression: str, location: Location) -> Instruction:
    """An ONBUILD trigger stored in an image config ("RUN make"), as an instruction at ``location``."""
    try:
        commands = dockerfile.parse_string(expression + "\n")
    except dockerfile.GoParseError as err:
        raise BuildError(f"invalid ONBUILD trigger {expression!r}: {err}", location=location) from None
    if len(commands) != 1:
        raise BuildError(f"invalid ONBUILD trigger {expression!r}", location=location)
    instruction = _instruction(commands[0])
    instruction.location = location
    _check_trigger(instruction.cmd, location)
    return instruction


def _directives(lines: list[str]) -> dict[str, str]:
    """Parser directives: `# key=value` lines at the very top, before any other line. `syntax` is
    recognised and ignored: there is no frontend image to fetch here, the built-in one is used."""
    found: dict[str, str] = {}
    for line in lines:
        match = _DIRECTIVE.match(line.strip())
        if not match or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        key = match.group(1).lower()
        if key in found:
            break  # a repeated directive is a comment, as in Docker
        found[key] = match.group(2)
    return found


def _failing_line(lines: list[str], message: str) -> Location | None:
    """The line of a parse error the Go parser reports without one: the shortest prefix of the file that
    fails with the same message ends there."""
    low, high = 1, len(lines)
    if high == 0:
        return None
    if not _fails_with(lines, high, message):
        return None
    while low < high:
        middle = (low + high) // 2
        if _fails_with(lines, middle, message):
            high = middle
        else:
            low = middle + 1
    return Location(low, low)


def _fails_with(lines: list[str], count: int, message: str) -> bool:
    try:
        dockerfile.parse_string("\n".join(lines[:count]) + "\n")
    except dockerfile.GoParseError as err:
        return str(err) == message
    return False


def _instruction(command: dockerfile.Command) -> Instruction:
    location = Location(command.start_line, command.end_line)
    cmd = command.cmd.upper()
    if cmd not in INSTRUCTIONS:
        raise BuildError(f"dockerfile parse error on line {location.start}: unknown instruction: {cmd}",
                         location=location)
    instruction = Instruction(cmd=cmd, args=list(command.value), flags=list(command.flags), json=command.json,
                              original=command.original, location=location)
    if command.heredocs:
        instruction.heredocs = _heredocs(command)
    if cmd == "ONBUILD":
        if not command.sub_cmd:
            raise BuildError("ONBUILD requires at least one argument", location=location)
        _check_trigger(command.sub_cmd.upper(), location)
        # the trigger as written; it is parsed again when a build starts FROM this image
        instruction.args = [command.original.split(None, 1)[1].strip()]
        instruction.flags = []
    return instruction


def _check_trigger(cmd: str, location: Location) -> None:
    if cmd == "ONBUILD":
        raise BuildError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", location=location)
    if cmd in ("FROM", "MAINTAINER"):
        raise BuildError(f"{cmd} isn't allowed as an ONBUILD trigger", location=location)
    if cmd not in INSTRUCTIONS:
        raise BuildError(f"unknown instruction: {cmd}", location=location)


def _heredocs(command: dockerfile.Command) -> list[Heredoc]:
    """The heredocs with their delimiter rules, read from the markers on the instruction's first line."""
    first_line = command.original.split("\n", 1)[0]
    markers = HEREDOC_MARKER.findall(first_line)
    result = []
    for index, heredoc in enumerate(command.heredocs):
        chomp, quote = (markers[index][0], markers[index][1]) if index < len(markers) else ("", "")
        result.append(Heredoc(name=heredoc.name, raw=heredoc.content, chomp=bool(chomp), expand=not quote))
    return result


def _stage(instruction: Instruction, index: int) -> StageDef:
    flags = parse_flags(instruction, {"platform": "string"})
    args = instruction.args
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise BuildError(f'invalid name for build stage: "{args[2]}", name can\'t start with a number or '
                             "contain symbols", location=instruction.location)
    elif len(args) == 1:
        name = None
    else:
        raise BuildError("FROM requires either one or three arguments", location=instruction.location)
    return StageDef(index=index, name=name, base=args[0], platform=flags.get("platform"),
                    location=instruction.location)


def parse_flags(instruction: Instruction, allowed: dict[str, str]) -> dict[str, str | bool | list[str]]:
    """The instruction's flags by name. ``allowed`` maps a flag to "string", "bool" or "list" (repeatable);
    messages are BuildKit's."""
    values: dict[str, str | bool | list[str]] = {}
    for raw in instruction.flags:
        if not raw.startswith("--"):
            raise BuildError(f"arg should start with -- : {raw}", location=instruction.location)
        name, has_value, value = raw[2:].partition("=")
        kind = allowed.get(name.lower())
        if kind is None:
            raise BuildError(f"unknown flag: {name}", location=instruction.location)
        name = name.lower()
        if kind == "list":
            if not has_value:
                raise BuildError(f"missing a value on flag: {name}", location=instruction.location)
            values.setdefault(name, [])
            values[name].append(value)  # type: ignore[union-attr]
            continue
        if name in values:
            raise BuildError(f"duplicate flag specified: {name}", location=instruction.location)
        if kind == "bool":
            if not has_value:
                values[name] = True
            elif value.lower() in ("true", "false"):
                values[name] = value.lower() == "true"
            else:
                raise BuildError(f"expecting boolean value for flag {name}, not: {value}",
                                 location=instruction.location)
        else:
            if not has_value:
                raise BuildError(f"missing a value on flag: {name}", location=instruction.location)
            values[name] = value
    return values
