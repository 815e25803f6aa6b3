"""Authentication: bearer tokens, client certificates over a real TLS handshake, and real kubectl."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from pocketkube.apiserver.authn import Authenticator, UserInfo, load_token_file
from pocketkube.apiserver.pki import PKI, ensure_pki, write_kubeconfig
from pocketkube.cli.kubectl import find_kubectl

ADMIN = UserInfo("admin", ("system:masters", "system:authenticated"))


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return ensure_pki(tmp_path / "cluster", sans=[], hostname="node-a")


@pytest.fixture
def authn(pki: PKI) -> Authenticator:
    return Authenticator(pki.ca_cert, pki.token_file)


# --- bearer tokens ------------------------------------------------------------------------------


def test_admin_token(pki: PKI, authn: Authenticator) -> None:
    token = pki.admin_token()
    assert authn.authenticate(None, f"Bearer {token}") == ADMIN
    # The scheme is case-insensitive and surrounding blanks are ignored, as upstream.
    assert authn.authenticate(None, f"  bearer {token} ") == ADMIN


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer wrong-token", "Basic YWRtaW46YWRtaW4=", "Token abc", "Bearer  x"],
)
def test_bad_or_missing_token(authn: Authenticator, header: str | None) -> None:
    assert authn.authenticate(None, header) is None


def test_token_prefix_is_not_enough(pki: PKI, authn: Authenticator) -> None:
    token = pki.admin_token()
    assert authn.authenticate(None, f"Bearer {token[:-1]}") is None
    assert authn.authenticate(None, f"Bearer {token}x") is None
    assert authn.authenticate(None, "Bearer é") is None  # non-ASCII must not crash compare_digest


def test_static_token_file_format(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text('admintok\n\nt2,alice,uid-1,"dev,ops"\n  t3, bob, uid-2\n')
    tokens = load_token_file(path)
    assert tokens == {
        "admintok": ADMIN,
        "t2": UserInfo("alice", ("dev", "ops", "system:authenticated"), uid="uid-1"),
        "t3": UserInfo("bob", ("system:authenticated",), uid="uid-2"),
    }


@pytest.mark.parametrize("line", ["tok,user", ",user,uid"])
def test_invalid_token_file(tmp_path: Path, line: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match="tokens:1"):
        load_token_file(path)


# --- client certificates: peercert dicts --------------------------------------------------------


def peer(issuer_cn: str, subject: list[tuple[str, str]]) -> dict:
    return {
        "subject": tuple(((k, v),) for k, v in subject),
        "issuer": ((("commonName", issuer_cn),),),
    }


def ca_cn(pki: PKI) -> str:
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    return str(ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_peercert_mapping(pki: PKI, authn: Authenticator) -> None:
    cn = ca_cn(pki)
    got = authn.authenticate(
        peer(cn, [("organizationName", "g1"), ("organizationName", "g2"), ("commonName", "jane")]), None
    )
    assert got == UserInfo("jane", ("g1", "g2", "system:authenticated"))
    # A certificate from another issuer, or without a CN, is not a user.
    assert authn.authenticate(peer("someone-else", [("commonName", "jane")]), None) is None
    assert authn.authenticate(peer(cn, [("organizationName", "g1")]), None) is None
    assert authn.authenticate({}, None) is None  # getpeercert() of an unverified certificate


def test_valid_cert_wins_over_bad_token(pki: PKI, authn: Authenticator) -> None:
    # Upstream's union authenticator stops at the first success (x509 comes before tokens).
    got = authn.authenticate(peer(ca_cn(pki), [("commonName", "jane")]), "Bearer nope")
    assert got == UserInfo("jane", ("system:authenticated",))
    # A cert that does not map to a user falls through to the token.
    assert authn.authenticate(peer("other", [("commonName", "x")]), f"Bearer {pki.admin_token()}") == ADMIN


# --- a real TLS handshake -------------------------------------------------------------------------


@pytest.fixture
async def tls_server(pki: PKI, authn: Authenticator) -> AsyncIterator[tuple[int, list]]:
    """A raw asyncio TLS server that reports what the authenticator made of each connection."""
    seen: list = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = (await reader.readline()).decode().strip() or None
        user = authn.authenticate(writer.get_extra_info("peercert"), header)
        seen.append(user)
        writer.write(json.dumps(None if user is None else [user.name, list(user.groups)]).encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=pki.ssl_context())
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, seen


def client_ctx(pki: PKI, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


async def exchange(port: int, ctx: ssl.SSLContext, header: str = "", host: str = "localhost") -> object:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    try:
        writer.write(header.encode() + b"\n")
        await writer.drain()
        return json.loads(await reader.readline())
    finally:
        writer.close()


async def test_handshake_with_admin_cert(pki: PKI, tls_server: tuple[int, list]) -> None:
    port, _ = tls_server
    # The server certificate verifies for both the name and the IP clients use.
    for host in ("localhost", "127.0.0.1", "kubernetes.default.svc"):
        got = await exchange(port, client_ctx(pki, pki.admin_cert, pki.admin_key), host=host)
        assert got == ["admin", ["system:masters", "system:authenticated"]]


async def test_handshake_with_issued_cert(pki: PKI, tls_server: tuple[int, list], tmp_path: Path) -> None:
    port, _ = tls_server
    cert, key = pki.issue_client_cert("system:node:n1", ["system:nodes"])
    (tmp_path / "n1.crt").write_bytes(cert)
    (tmp_path / "n1.key").write_bytes(key)
    got = await exchange(port, client_ctx(pki, tmp_path / "n1.crt", tmp_path / "n1.key"))
    assert got == ["system:node:n1", ["system:nodes", "system:authenticated"]]


async def test_handshake_without_cert_uses_token(pki: PKI, tls_server: tuple[int, list]) -> None:
    port, _ = tls_server
    got = await exchange(port, client_ctx(pki), header=f"Bearer {pki.admin_token()}")
    assert got == ["admin", ["system:masters", "system:authenticated"]]
    assert await exchange(port, client_ctx(pki)) is None
    assert await exchange(port, client_ctx(pki), header="Bearer wrong") is None


async def refused(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        await exchange(port, ctx)
    except (ssl.SSLError, ConnectionError, json.JSONDecodeError):
        return True
    return False


async def test_foreign_ca_client_cert_is_refused(
    pki: PKI, tls_server: tuple[int, list], tmp_path: Path
) -> None:
    port, seen = tls_server
    other = ensure_pki(tmp_path / "other", sans=[], hostname="x")
    assert await refused(port, client_ctx(pki, other.admin_cert, other.admin_key))
    assert seen == []  # the handshake failed before any request was handled


async def test_server_cert_is_not_a_client_cert(pki: PKI, tls_server: tuple[int, list]) -> None:
    port, seen = tls_server
    # Signed by the right CA, but its EKU is serverAuth only: OpenSSL refuses it for clients.
    assert await refused(port, client_ctx(pki, pki.serving_cert, pki.serving_key))
    assert seen == []


# --- real kubectl against an aiohttp server using the same TLS setup -----------------------------


@pytest.fixture
async def whoami_server(pki: PKI, authn: Authenticator) -> AsyncIterator[str]:
    async def whoami(request: web.Request) -> web.Response:
        user = authn.authenticate(
            request.transport.get_extra_info("peercert"), request.headers.get("Authorization")
        )
        if user is None:
            status = {"status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, **status}, status=401
            )
        return web.json_response({"name": user.name, "groups": list(user.groups)})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock, ssl_context=pki.ssl_context())
    await site.start()
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


async def kubectl(*args: str) -> tuple[int, str, str]:
    path = find_kubectl()
    assert path is not None
    proc = await asyncio.create_subprocess_exec(
        str(path), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_kubectl_with_written_kubeconfig(pki: PKI, whoami_server: str, tmp_path: Path) -> None:
    config = tmp_path / "kc" / "kubeconfig.yaml"
    write_kubeconfig(config, server_url=whoami_server, pki=pki)
    rc, out, err = await kubectl("--kubeconfig", str(config), "get", "--raw", "/whoami")
    assert rc == 0, err
    assert json.loads(out) == {"name": "admin", "groups": ["system:masters", "system:authenticated"]}


async def test_kubectl_with_token(pki: PKI, whoami_server: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"  # keep the host's kubeconfig out of it
    empty.write_text("")
    base = ["--kubeconfig", str(empty), "-s", whoami_server, "--certificate-authority", str(pki.ca_cert)]
    rc, out, err = await kubectl(*base, "--token", pki.admin_token(), "get", "--raw", "/whoami")
    assert rc == 0, err
    assert json.loads(out)["name"] == "admin"
    rc, out, err = await kubectl(*base, "--token", "bogus", "get", "--raw", "/whoami")
    assert rc == 1 and "You must be logged in to the server (Unauthorized)" in err
