"""Joining a cluster with its node token, as a k3s agent does.

The agent fetches the CA from the server's public ``/cacerts`` endpoint (over TLS it cannot verify
yet), checks it against the hash carried in the token, and from then on talks to the API server over
verified TLS, authenticating with the token's secret.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import aiohttp

from pocketkube.apiserver.nodetoken import TokenError, parse_token
from pocketkube.client.rest import ClientConfig

log = logging.getLogger(__name__)
CA_FILE = "server-ca.crt"


async def join_config(server: str, token: str, data_dir: Path | None = None) -> ClientConfig:
    """Client settings for an agent holding `token`; the verified CA is kept in DATA_DIR when given.

    Raises TokenError when the server's CA does not match the token.
    """
    joined = parse_token(token)
    # Trust on first use is refused whenever the token can vouch for the CA; a bare secret cannot.
    async with aiohttp.ClientSession() as session, \
            session.get(server.rstrip("/") + "/cacerts", ssl=False,
                        timeout=aiohttp.ClientTimeout(total=30)) as resp:
        if resp.status != 200:
            raise TokenError(f"{server}/cacerts answered HTTP {resp.status}")
        ca_pem = await resp.read()
    joined.verify_ca(ca_pem)
    if not joined.ca_hash:
        log.warning("the join token carries no CA hash: trusting the CA served by %s unverified", server)
    if data_dir is not None:
        _save(Path(data_dir) / CA_FILE, ca_pem)
    return ClientConfig(server=server, ca_data=ca_pem, token=joined.secret)


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
