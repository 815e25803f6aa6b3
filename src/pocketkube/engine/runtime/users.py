"""`--user` resolved inside an image's root filesystem (its /etc/passwd and /etc/group, never the host's),
with the rules runc's user package gives Docker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pocketkube.engine.paths import resolve_in_root

MAX_ID = 2**31 - 1  # ids the kernel takes from a container's point of view


class UserNotFound(ValueError):
    pass


class GroupNotFound(UserNotFound):
    pass


@dataclass
class _PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass
class _GroupEntry:
    name: str
    gid: int
    members: list[str]


def _read_table(rootfs: Path, path: str) -> list[list[str]]:
    """Colon-separated records of a file inside the rootfs; a missing file is an empty table."""
    try:
        text = resolve_in_root(Path(rootfs), path).read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _passwd(rootfs: Path) -> list[_PasswdEntry]:
    entries = []
    for row in _read_table(rootfs, "/etc/passwd"):
        row += [""] * (7 - len(row))
        uid, gid = _int_or_none(row[2]), _int_or_none(row[3])
        if uid is not None and gid is not None:
            entries.append(_PasswdEntry(row[0], uid, gid, row[5]))
    return entries


def _groups(rootfs: Path) -> list[_GroupEntry]:
    entries = []
    for row in _read_table(rootfs, "/etc/group"):
        row += [""] * (4 - len(row))
        gid = _int_or_none(row[2])
        if gid is not None:
            entries.append(_GroupEntry(row[0], gid, [m.strip() for m in row[3].split(",") if m.strip()]))
    return entries


def _checked_id(value: int, what: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise UserNotFound(f"{what} {value} is out of range: ids must be between 0 and {MAX_ID}")
    return value


def resolve_user(rootfs: Path, user: str | None, group_add: Sequence[str] = (), *,
                 image_groups: bool = True) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) for "", "name", "uid", and any of those followed by ":group" or
    ":gid". Numeric ids need no passwd entry (the gid is then 0 and the home "/"). The supplementary groups
    are the primary group itself (so that a process cannot shed it: a group denied access stays denied, as
    Docker and containerd set it since CVE-2022-36109 / CVE-2023-25173), then the groups /etc/group lists
    the user in when no group was given explicitly (unless `image_groups` is False: Kubernetes'
    supplementalGroupsPolicy Strict), then `group_add` (Docker's --group-add: group names or gids)."""
    user_part, _, group_part = (user or "").partition(":")
    numeric_uid = _int_or_none(user_part)
    passwd = _passwd(rootfs)
    if not user_part:
        matches = [e for e in passwd if e.uid == 0]
    elif numeric_uid is not None:
        matches = [e for e in passwd if e.uid == numeric_uid]
    else:
        matches = [e for e in passwd if e.name == user_part]
    if matches:
        entry = matches[0]
        uid, gid, home, name = entry.uid, entry.gid, entry.home or "/", entry.name
    elif numeric_uid is not None or not user_part:
        uid, gid, home, name = numeric_uid or 0, 0, "/", ""
    else:
        raise UserNotFound(f"unable to find user {user_part}: no matching entries in passwd file")
    uid = _checked_id(uid, "uid")

    groups = _groups(rootfs) if group_part or name or group_add else []
    members: list[int] = []
    if group_part:
        gid = _group_id(groups, group_part)
    elif image_groups:
        members = [g.gid for g in groups if name in g.members]
    gid = _checked_id(gid, "gid")
    added = [_checked_id(_group_id(groups, extra), "gid") for extra in group_add]
    return uid, gid, list(dict.fromkeys([gid, *members, *added])), home


def _group_id(groups: list[_GroupEntry], wanted: str) -> int:
    """A group given by name or gid: its entry's gid, or the number itself when it has none."""
    named = [g for g in groups if g.name == wanted or str(g.gid) == wanted]
    if named:
        return named[0].gid
    numeric_gid = _int_or_none(wanted)
    if numeric_gid is None:
        raise GroupNotFound(f"unable to find group {wanted}: no matching entries in group file")
    return numeric_gid
