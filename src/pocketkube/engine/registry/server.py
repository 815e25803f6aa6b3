"""The registry's HTTP API: OCI Distribution Specification v1.1, plus what Docker and skopeo expect of it.

``RegistryApp(config).make_app()`` is an aiohttp application serving ``/v2/...`` (the API server can mount
it); ``start_registry(config)`` runs it standalone. Repository names contain slashes, so one route takes
every ``/v2/`` path and the endpoint is recognised from the path's tail (``.../blobs/uploads/<id>``,
``.../manifests/<ref>``, ...). Uploads stream to disk; nothing holds a whole blob in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.store import InvalidImage, host_platform, select_manifest
from pocketkube.engine.registry.auth import Access, Authenticator, Htpasswd, TokenAuthority, parse_scopes
from pocketkube.engine.registry.errors import DistributionError
from pocketkube.engine.registry.storage import (
    MAX_MANIFEST_SIZE,
    Manifest,
    RegistryStorage,
    Upload,
    is_tag,
    parse_digest,
    validate_name,
)

log = logging.getLogger("pocketkube.registry")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
_RECEIVE_CHUNK = 256 * 1024
_MAX_PAGE = 10000
# On stop, requests in flight get this long to finish; an interrupted upload resumes from its status.
SHUTDOWN_TIMEOUT = 5.0
_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/\d+|/\*)?")
_ACTIONS = {"GET": "pull", "HEAD": "pull", "POST": "push", "PATCH": "push", "PUT": "push", "DELETE": "delete"}

Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclass
class RegistryConfig:
    data_dir: Path
    listen: str = "127.0.0.1:5000"
    htpasswd: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_anonymous_pull: bool = False

    @property
    def root(self) -> Path:
        return Path(self.data_dir) / "registry"


class RegistryApp:
    def __init__(self, config: RegistryConfig) -> None:
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        self.config = config
        self.storage = RegistryStorage(config.root)
        self.auth: Authenticator | None = None
        if config.htpasswd is not None:
            self.auth = Authenticator(Htpasswd(config.htpasswd), TokenAuthority(config.root / "token.key"),
                                      allow_anonymous_pull=config.allow_anonymous_pull)
        # One request at a time per upload session: chunks must be appended in order.
        self._upload_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # (endpoint, method) -> handler; the endpoint's path parameters are passed as keywords
        self._handlers: dict[tuple[str, str], Handler] = {
            ("blob", "GET"): self._get_blob, ("blob", "HEAD"): self._get_blob, ("blob", "DELETE"): self._delete_blob,
            ("uploads", "POST"): self._start_upload,
            ("upload", "GET"): self._upload_status, ("upload", "PATCH"): self._patch_upload,
            ("upload", "PUT"): self._finish_upload, ("upload", "DELETE"): self._cancel_upload,
            ("manifest", "GET"): self._get_manifest, ("manifest", "HEAD"): self._get_manifest,
            ("manifest", "PUT"): self._put_manifest, ("manifest", "DELETE"): self._delete_manifest,
            ("tags", "GET"): self._list_tags, ("referrers", "GET"): self._list_referrers,
        }

    def make_app(self) -> web.Application:
        app = web.Application()
        self.add_routes(app.router)
        return app

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Serve ``/v2`` from another application's router (a registry embedded in the API server)."""
        router.add_route("*", "/v2", self._dispatch)
        router.add_route("*", "/v2/{path:.*}", self._dispatch)

    # --- dispatch ------------------------------------------------------------------------------------

    _ENDPOINTS = (
        (re.compile(r"(?P<name>.+)/blobs/uploads/?"), "uploads"),
        (re.compile(r"(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)"), "upload"),
        (re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"), "blob"),
        (re.compile(r"(?P<name>.+)/manifests/(?P<reference>[^/]+)"), "manifest"),
        (re.compile(r"(?P<name>.+)/tags/list"), "tags"),
        (re.compile(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)"), "referrers"),
    )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        response = await self._route(request)
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("path", "")
        try:
            if path == "":
                await self._authorize(request, None)
                return web.json_response({})
            if path == "token":
                return await self._token(request)
            if path == "_catalog":
                return await self._catalog(request)
            for pattern, endpoint in self._ENDPOINTS:
                match = pattern.fullmatch(path)
                if match is None:
                    continue
                params = match.groupdict()
                name = validate_name(params.pop("name"))
                handler = self._handlers.get((endpoint, request.method))
                if handler is None:
                    raise DistributionError("UNSUPPORTED", f"{request.method} is not supported on {request.path}")
                await self._authorize(request, Access("repository", name, frozenset({_ACTIONS[request.method]})))
                return await handler(request, name, **params)
            raise web.HTTPNotFound()
        except DistributionError as err:
            response = web.Response(status=err.status, body=err.body(), content_type="application/json",
                                    headers=err.headers)
            if request.body_exists and not request.content.at_eof():
                response.force_close()  # refused before reading the body: no keep-alive after it
            return response

    async def _authorize(self, request: web.Request, needed: Access | None) -> None:
        if self.auth is not None:
            realm = f"{request.scheme}://{request.host}/v2/token"
            await self.auth.authorize(request.headers.get("Authorization"), needed, realm)

    async def _may_pull(self, request: web.Request, name: str) -> bool:
        try:
            await self._authorize(request, Access("repository", validate_name(name), frozenset({"pull"})))
        except DistributionError:
            return False
        return True

    # --- auth and listings ---------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        if self.auth is None:
            raise DistributionError("UNSUPPORTED", "this registry does not use token authentication")
        if request.method == "GET":
            scopes = parse_scopes(request.query.getall("scope", []))
            return web.json_response(await self.auth.issue_token(request.headers.get("Authorization"), scopes))
        if request.method == "POST":
            form = await request.post()
            if form.get("grant_type") != "password":
                raise DistributionError("UNSUPPORTED", f"unsupported grant_type {form.get('grant_type')!r}")
            scopes = parse_scopes([str(form.get("scope", ""))])
            body = await self.auth.issue_token_for_password(str(form.get("username", "")),
                                                            str(form.get("password", "")), scopes)
            return web.json_response(body)
        raise DistributionError("UNSUPPORTED", f"{request.method} is not supported on {request.path}")

    async def _catalog(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            raise DistributionError("UNSUPPORTED", f"{request.method} is not supported on {request.path}")
        await self._authorize(request, Access("registry", "catalog", frozenset({"*"})))
        page, link = _paginate(self.storage.repositories(), request, "/v2/_catalog")
        return web.json_response({"repositories": page}, headers=link)

    async def _list_tags(self, request: web.Request, name: str) -> web.Response:
        page, link = _paginate(self.storage.tags(name), request, f"/v2/{name}/tags/list")
        return web.json_response({"name": name, "tags": page}, headers=link)

    async def _list_referrers(self, request: web.Request, name: str, digest: str) -> web.Response:
        descriptors = self.storage.referrers(name, parse_digest(digest))
        headers = {}
        artifact_type = request.query.get("artifactType")
        if artifact_type:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
        return web.Response(body=json.dumps(index).encode(), headers={"Content-Type": mt.OCI_INDEX, **headers})

    # --- blobs ---------------------------------------------------------------------------------------

    async def _get_blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        path = self.storage.repository_blob(name, parse_digest(digest))
        if request.method == "HEAD":
            # A HEAD is how a pusher decides to skip an upload: refresh the blob so that garbage
            # collection's grace period also covers the manifest that will reference it.
            self.storage.touch_blob(digest)
        # FileResponse answers Range requests (206, or 416 when unsatisfiable) and HEAD itself.
        return web.FileResponse(path, headers={"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                                               "Accept-Ranges": "bytes"})

    async def _delete_blob(self, request: web.Request, name: str, digest: str) -> web.Response:
        self.storage.unlink_blob(name, parse_digest(digest))
        return web.Response(status=202, headers={"Docker-Content-Digest": digest})

    # --- uploads -------------------------------------------------------------------------------------

    async def _start_upload(self, request: web.Request, name: str) -> web.Response:
        mount, source = request.query.get("mount"), request.query.get("from")
        if mount:
            digest = parse_digest(mount)
            # Without pull access to the source (or without a source) the spec says: open a session instead.
            if source and await self._may_pull(request, source) and self.storage.mount_blob(name, digest, source):
                return _blob_created(name, digest)
        upload = self.storage.start_upload(name)
        digest = request.query.get("digest")
        if digest is None:
            return _upload_response(upload, 202)
        try:  # a monolithic upload: the session is this request's alone
            await self._receive(request, upload, None)
            self.storage.commit_upload(upload, digest)
        except BaseException:
            self.storage.cancel_upload(upload)
            raise
        return _blob_created(name, digest)

    async def _upload_status(self, request: web.Request, name: str, upload_id: str) -> web.Response:
        return _upload_response(self.storage.get_upload(name, upload_id), 204)

    async def _patch_upload(self, request: web.Request, name: str, upload_id: str) -> web.Response:
        async with self._upload_lock(upload_id):
            upload = self.storage.get_upload(name, upload_id)
            await self._receive(request, upload, request.headers.get("Content-Range"))
            return _upload_response(upload, 202)

    async def _finish_upload(self, request: web.Request, name: str, upload_id: str) -> web.Response:
        digest = request.query.get("digest")
        if not digest:
            raise DistributionError("DIGEST_INVALID", "the digest query parameter is required to finish an upload")
        async with self._upload_lock(upload_id):
            upload = self.storage.get_upload(name, upload_id)
            await self._receive(request, upload, request.headers.get("Content-Range"))
            self.storage.commit_upload(upload, digest)
        return _blob_created(name, digest)

    async def _cancel_upload(self, request: web.Request, name: str, upload_id: str) -> web.Response:
        async with self._upload_lock(upload_id):
            self.storage.cancel_upload(self.storage.get_upload(name, upload_id))
        return web.Response(status=204)

    def _upload_lock(self, upload_id: str) -> asyncio.Lock:
        lock = self._upload_locks.get(upload_id)
        if lock is None:
            lock = self._upload_locks[upload_id] = asyncio.Lock()
        return lock

    async def _receive(self, request: web.Request, upload: Upload, content_range: str | None) -> None:
        """Append the request body to an upload. With a Content-Range, the chunk must start where the
        upload ends (else 416) and be as long as the range says (else SIZE_INVALID)."""
        start = expected = None
        if content_range:
            match = _CONTENT_RANGE_RE.fullmatch(content_range.strip())
            if match is None or int(match[2]) < int(match[1]):
                raise DistributionError("BLOB_UPLOAD_INVALID", f"malformed Content-Range {content_range!r}")
            start, expected = int(match[1]), int(match[2]) - int(match[1]) + 1
            if request.content_length is not None and request.content_length != expected:
                raise DistributionError("SIZE_INVALID", f"Content-Length {request.content_length} does not match "
                                        f"Content-Range {content_range}")
        try:
            with self.storage.append(upload, start) as writer:
                async for chunk in request.content.iter_chunked(_RECEIVE_CHUNK):
                    writer.write(chunk)
        except DistributionError as err:
            if err.code == "RANGE":
                err.headers.update(_upload_headers(upload))
            raise
        except (aiohttp.ClientPayloadError, ConnectionError) as err:
            # The client went away mid-chunk; what arrived is kept, and it resumes from the upload status.
            raise DistributionError("BLOB_UPLOAD_INVALID", f"upload interrupted: {err}") from None
        if expected is not None and writer.written != expected:
            raise DistributionError("SIZE_INVALID", f"received {writer.written} bytes for Content-Range {content_range}",
                                    headers=_upload_headers(upload))

    # --- manifests -----------------------------------------------------------------------------------

    async def _get_manifest(self, request: web.Request, name: str, reference: str) -> web.Response:
        manifest = self._negotiate(name, reference, _accepted_types(request))
        headers = {"Content-Type": manifest.media_type, "Docker-Content-Digest": manifest.digest,
                   "ETag": f'"{manifest.digest}"'}
        return web.Response(body=manifest.data, headers=headers)

    def _negotiate(self, name: str, reference: str, accepted: set[str]) -> Manifest:
        """The manifest to serve for what the client accepts. A client that cannot read an index asking by
        tag gets this platform's manifest from it, as Docker's distribution does for old clients."""
        manifest = self.storage.get_manifest(name, reference)
        if not accepted or "*/*" in accepted or manifest.media_type in accepted:
            return manifest
        if mt.is_index(manifest.media_type) and is_tag(reference):
            try:
                child = select_manifest(json.loads(manifest.data), host_platform())
                candidate = self.storage.get_manifest(name, child["digest"])
            except (InvalidImage, DistributionError, ValueError, KeyError):
                candidate = None
            if candidate is not None and candidate.media_type in accepted:
                return candidate
        raise DistributionError("MANIFEST_UNKNOWN", f"the manifest is {manifest.media_type}, which the client does "
                                f"not accept", detail={"mediaType": manifest.media_type})

    async def _put_manifest(self, request: web.Request, name: str, reference: str) -> web.Response:
        data = bytearray()
        async for chunk in request.content.iter_chunked(_RECEIVE_CHUNK):
            data += chunk
            if len(data) > MAX_MANIFEST_SIZE:
                raise DistributionError("MANIFEST_INVALID", f"manifest is larger than {MAX_MANIFEST_SIZE} bytes")
        digest, subject = self.storage.put_manifest(name, reference, bytes(data), request.headers.get("Content-Type"))
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        if subject is not None:
            headers["OCI-Subject"] = subject
        return web.Response(status=201, headers=headers)

    async def _delete_manifest(self, request: web.Request, name: str, reference: str) -> web.Response:
        self.storage.delete_manifest(name, reference)
        return web.Response(status=202)


def _accepted_types(request: web.Request) -> set[str]:
    return {part.split(";")[0].strip() for header in request.headers.getall("Accept", [])
            for part in header.split(",") if part.strip()}


def _upload_headers(upload: Upload) -> dict[str, str]:
    # Range is inclusive; an empty upload is reported as 0-0, as Docker's distribution does.
    return {"Location": f"/v2/{upload.name}/blobs/uploads/{upload.uuid}", "Docker-Upload-UUID": upload.uuid,
            "Range": f"0-{max(upload.size - 1, 0)}"}


def _upload_response(upload: Upload, status: int) -> web.Response:
    return web.Response(status=status, headers={**_upload_headers(upload), "Content-Length": "0"})


def _blob_created(name: str, digest: str) -> web.Response:
    return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest,
                                             "Content-Length": "0"})


def _paginate(items: list[str], request: web.Request, path: str) -> tuple[list[str], dict[str, str]]:
    """``?n=`` and ``?last=`` over a sorted list, with a ``Link`` to the next page when there is one."""
    last = request.query.get("last")
    if last:
        items = [item for item in items if item > last]
    if "n" not in request.query:
        return items, {}
    try:
        n = int(request.query["n"])
    except ValueError:
        n = -1
    if not 0 <= n <= _MAX_PAGE:
        raise DistributionError("PAGINATION_NUMBER_INVALID", f"n must be between 0 and {_MAX_PAGE}")
    page = items[:n]
    if n == 0 or len(items) <= n:
        return page, {}
    return page, {"Link": f'<{path}?n={n}&last={page[-1]}>; rel="next"'}


# --- running standalone --------------------------------------------------------------------------------

def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every address)."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid --listen {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass
class RunningRegistry:
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_registry(config: RegistryConfig) -> RunningRegistry:
    """Serve the registry on ``config.listen`` (port 0 picks a free port; ``url`` tells which)."""
    app = RegistryApp(config).make_app()
    host, port = parse_listen(config.listen)
    ssl_context = None
    if config.tls_cert is not None and config.tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host or None, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else (host or "0.0.0.0")
    url = f"{'https' if ssl_context else 'http'}://{shown_host}:{bound_port}"
    log.info("registry listening on %s (data in %s%s)", url, config.root,
             ", users from " + str(config.htpasswd) if config.htpasswd else "")
    return RunningRegistry(runner, url)
