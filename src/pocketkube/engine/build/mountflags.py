"""`RUN --mount=type=…,target=…` parsed into a RunMount, with BuildKit's defaults, checks and messages.

Values are expanded like the rest of the instruction, except `from` (a stage or image name). Defaults:
bind mounts are read-only and show the build context; cache mounts are read-write, shared and keyed by
their target; secrets land at /run/secrets/<id> with mode 0400; relative targets follow WORKDIR."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.steps import RunMount

_KEYS = {"type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro", "readwrite", "rw",
         "id", "sharing", "required", "size", "mode", "uid", "gid", "env"}
_TYPES = ("bind", "cache", "secret", "tmpfs", "ssh")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30,
               "gb": 1 << 30}


def parse_mount(text: str, *, expand: Callable[[str], str], find_stage: Callable[[str], int | None],
                workdir: str) -> RunMount:
    """One --mount value. ``find_stage`` maps a `from` name to an earlier stage (None: an image)."""
    mount = RunMount(type="bind")
    readonly: bool | None = None
    for item in _csv_fields(text):
        key, has_value, value = item.partition("=")
        key = key.lower()
        if not has_value:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                mount.required = True
            else:
                raise BuildError(f"invalid field '{item}' must be a key=value pair")
            continue
        if key not in _KEYS:
            raise BuildError(f"unexpected key '{key}' in '{item}'")
        if key == "from":
            if "$" in value[:-1]:
                raise BuildError("'from' doesn't support variable expansion, define alias stage instead")
            mount.from_stage = find_stage(value)
            mount.from_image = value if mount.from_stage is None else None
            continue
        value = expand(value)
        if key == "type":
            if value.lower() not in _TYPES:
                raise BuildError(f'unsupported mount type "{value}"')
            mount.type = value.lower()
        elif key in ("source", "src"):
            mount.source = value
        elif key in ("target", "dst", "destination"):
            mount.target = value
        elif key in ("readonly", "ro", "readwrite", "rw"):
            flag = _bool(value, key)
            readonly = flag if key in ("readonly", "ro") else not flag
        elif key == "required":
            mount.required = _bool(value, key)
        elif key == "size":
            mount.size = _size(value)
        elif key == "id":
            mount.id = value
        elif key == "sharing":
            if value.lower() not in ("shared", "private", "locked"):
                raise BuildError(f'unsupported sharing value "{value}"')
            mount.sharing = value.lower()
        elif key == "mode":
            mount.mode = _integer(value, 8, "mode")
        elif key in ("uid", "gid"):
            setattr(mount, key, _integer(value, 10, key))
        elif key == "env":
            mount.env = value
    return _checked(mount, readonly, workdir)


def _checked(mount: RunMount, readonly: bool | None, workdir: str) -> RunMount:
    if mount.type == "ssh":
        raise BuildError("RUN --mount=type=ssh needs an SSH agent, which this builder does not forward")
    if mount.type not in ("secret", "cache") and (mount.mode is not None or mount.uid is not None
                                                    or mount.gid is not None):
        raise BuildError(f'mode, uid and gid are not allowed for "{mount.type}" type mounts')
    if mount.required and mount.type != "secret":
        raise BuildError(f"unexpected key 'required' for mount type '{mount.type}'")
    if mount.size is not None and mount.type != "tmpfs":
        raise BuildError(f"unexpected key 'size' for mount type '{mount.type}'")
    mount.readonly = readonly if readonly is not None else mount.type not in ("cache", "tmpfs")
    if mount.type == "secret":
        if mount.from_stage is not None or mount.from_image is not None:
            raise BuildError("secret mount should not have a from")
        if not (mount.source or mount.target or mount.id):
            raise BuildError("invalid secret mount. one of source, target required")
        if mount.source and mount.id:
            raise BuildError("both source and id can't be set")
        mount.id = mount.id or mount.source or posixpath.basename(mount.target)
        mount.source = ""
        if not mount.target and not mount.env:
            mount.target = f"/run/secrets/{mount.id}"
        mount.mode = 0o400 if mount.mode is None else mount.mode
        return mount
    if not mount.target:
        raise BuildError(f"mount type {mount.type} requires a target")
    mount.target = posixpath.normpath(posixpath.join(workdir, mount.target))
    if mount.type == "cache":
        mount.id = mount.id or mount.target
        mount.mode = 0o755 if mount.mode is None else mount.mode
    if mount.type in ("bind", "cache"):
        mount.source = posixpath.normpath("/" + mount.source.lstrip("/"))
    return mount


def _csv_fields(text: str) -> list[str]:
    """The comma-separated fields of a --mount value (a field may be quoted to hold commas)."""
    fields, current, quote = [], "", ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                current += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ",":
            fields.append(current)
            current = ""
        else:
            current += ch
    if quote:
        raise BuildError(f"failed to parse csv mounts: unterminated quote in {text!r}")
    fields.append(current)
    return [field.strip() for field in fields if field.strip()]


def _bool(value: str, key: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise BuildError(f"invalid value for {key}: {value}")


def _integer(value: str, base: int, key: str) -> int:
    try:
        number = int(value, base)
    except ValueError:
        number = -1
    if number < 0:
        raise BuildError(f"invalid value {value} for {key}")
    return number


def _size(value: str) -> int:
    text = value.strip().lower()
    digits = text.rstrip("bkmg")
    try:
        return int(float(digits) * _SIZE_UNITS[text[len(digits):]])
    except (KeyError, ValueError):
        raise BuildError(f"invalid value for size: {value}") from None
