"""The /etc files Docker writes for each container: hosts, hostname and resolv.conf, bind-mounted in."""

from __future__ import annotations

from pathlib import Path

from pocketkube.engine.runtime.spec import Mount

# When the host resolves through a local stub (127.0.0.53 and the like), a container in its own network
# namespace cannot reach it; Docker then falls back to public resolvers, and so do we.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def resolv_conf(host_network: bool, host_file: Path = Path("/etc/resolv.conf")) -> str:
    try:
        text = host_file.read_text()
    except OSError:
        text = ""
    if host_network:
        return text
    lines = []
    servers = 0
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            if fields[1].startswith("127.") or fields[1] == "::1":
                continue
            servers += 1
        lines.append(line)
    if not servers:
        lines += [f"nameserver {server}" for server in FALLBACK_NAMESERVERS]
    return "\n".join(lines) + "\n"


def hosts(hostname: str, ip: str) -> str:
    text = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
    if ip:
        text += f"{ip}\t{hostname}\n"
    return text


def write(directory: Path, *, hostname: str, ip: str, host_network: bool) -> list[Mount]:
    """Writes the files into the container's directory and returns the bind mounts placing them."""
    files = {
        "hosts": Path("/etc/hosts").read_text() if host_network else hosts(hostname, ip),
        "hostname": hostname + "\n",
        "resolv.conf": resolv_conf(host_network),
    }
    mounts = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        mounts.append(Mount(destination=f"/etc/{name}", source=str(path), type="bind",
                            options=["rbind", "rprivate", "rw"]))
    return mounts
