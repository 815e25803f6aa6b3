"""Pull and push images against any OCI Distribution registry, the way Docker does.

Transport follows Docker's rules: HTTPS, except for registries on loopback addresses or listed as insecure,
which are tried over HTTPS without certificate checks first and then over plain HTTP. Authentication
follows the registry's challenge: bearer tokens fetched from its realm (with Basic credentials from the
CredentialStore when there are any) and cached per scope, or plain Basic auth.

Everything fetched is verified against its digest before it enters the content store; only blobs the
store (or, pushing, the registry) lacks are transferred, a few at a time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from pocketkube.engine.images import mediatypes as mt
from pocketkube.engine.images.content import BlobBatch, DigestMismatch
from pocketkube.engine.images.reference import Reference, parse_reference
from pocketkube.engine.images.store import Image, ImageStore, InvalidImage, media_type_of, select_manifest
from pocketkube.engine.registry.credentials import Credentials, CredentialStore, normalize_registry
from pocketkube.engine.registry.errors import RegistryError
from pocketkube.engine.registry.hosts import Endpoint, RegistryHosts

MANIFEST_ACCEPT = ", ".join([mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST])
PARALLEL_TRANSFERS = 3
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024  # blobs up to this size go in one request, larger ones in chunks
CHUNK_RETRIES = 3
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
_READ_SIZE = 256 * 1024
_WRITE_SIZE = 1024 * 1024
_ERROR_BODY_LIMIT = 64 * 1024
_PROGRESS_STEP = 512 * 1024
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_RANGE_RE = re.compile(r"(?:bytes=)?0-(\d+)")
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


@dataclass(frozen=True)
class ProgressEvent:
    """One step of one layer: ``id`` is the short digest Docker shows, ``status`` one of "Waiting",
    "Downloading", "Pull complete", "Already exists" (pull) or "Preparing", "Waiting", "Pushing", "Pushed",
    "Layer already exists", "Mounted from <repo>" (push); ``current``/``total`` are bytes while moving."""
    id: str
    status: str
    current: int = 0
    total: int | None = None


Progress = Callable[[ProgressEvent], None]


def short_id(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _host_only(domain: str) -> str:
    if domain.startswith("["):
        return domain[1:].split("]", 1)[0]
    return domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain


def is_loopback(domain: str) -> bool:
    host = _host_only(domain)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_insecure(domain: str, insecure_registries: Iterable[str]) -> bool:
    """Docker's rule: loopback registries, and those listed by ``host[:port]`` or by CIDR, may use plain
    HTTP or unverified TLS."""
    if is_loopback(domain):
        return True
    host = _host_only(domain)
    for entry in insecure_registries:
        if entry in (domain, host):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): (m[2] if m[2] is not None else m[3]).replace('\\"', '"')
              for m in _CHALLENGE_PARAM_RE.finditer(rest)}
    return scheme.lower(), params


@dataclass
class _Document:
    """A manifest or index as fetched: exact bytes (the digest covers them), parsed form, media type."""
    digest: str
    media_type: str
    data: bytes
    body: dict


@dataclass
class _RegistryState:
    """What a client learned about one registry endpoint: where it answers and how it authenticates."""
    endpoint: Endpoint
    base: URL
    tls: ssl.SSLContext | bool | None  # aiohttp's ssl argument: None verifies with the system's CAs
    challenge: tuple[str, dict[str, str]] | None = None
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # scopes -> (token, expiry)


class _Connection:
    """Requests to one registry within one HTTP session, authenticated as its challenge asks."""

    def __init__(self, http: aiohttp.ClientSession, state: _RegistryState, credentials: Credentials | None) -> None:
        self.http = http
        self.state = state
        self.credentials = credentials

    @property
    def _ssl(self) -> ssl.SSLContext | bool | None:
        return self.state.tls

    def api(self, rest: str) -> str:
        """A path under the endpoint's API root (/v2 unless configured otherwise)."""
        return self.state.endpoint.location(rest)

    def url(self, location: str | URL) -> URL:
        location = URL(str(location))
        return location if location.is_absolute() else self.state.base.join(location)

    @asynccontextmanager
    async def request(self, method: str, location: str | URL, *, scopes: Sequence[str], what: str,
                      expected: tuple[int, ...] = (200,), headers: dict[str, str] | None = None,
                      data: bytes | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request, authenticating (once more) when the registry answers 401; a status other than
        ``expected`` raises RegistryError with the registry's error."""
        url = self.url(location)
        for attempt in range(2):
            request_headers = dict(headers or {})
            authorization = await self._authorization(scopes)
            if authorization:
                request_headers["Authorization"] = authorization
            try:
                response = await self.http.request(method, url, headers=request_headers, data=data, ssl=self._ssl)
            except (aiohttp.ClientError, ssl.SSLError, TimeoutError) as err:
                raise RegistryError(f"{what}: {err or type(err).__name__}") from err
            challenge = response.headers.get("WWW-Authenticate")
            if response.status == 401 and attempt == 0 and challenge:
                response.release()
                self._learn(challenge, scopes)
                continue
            try:
                if response.status not in expected:
                    body = await _read_at_most(response, _ERROR_BODY_LIMIT)
                    raise RegistryError.from_response(response.status, body, what)
                yield response
            finally:
                response.release()
            return

    def _learn(self, header: str, scopes: Sequence[str]) -> None:
        self.state.challenge = parse_challenge(header)
        self.state.tokens.pop(" ".join(scopes), None)

    async def _authorization(self, scopes: Sequence[str]) -> str | None:
        if self.state.challenge is None:
            return None
        scheme, params = self.state.challenge
        if scheme == "basic":
            return _basic(self.credentials) if self.credentials else None
        if scheme != "bearer" or "realm" not in params:
            return None
        key = " ".join(scopes)
        cached = self.state.tokens.get(key)
        if cached is None or cached[1] <= time.monotonic():
            cached = self.state.tokens[key] = await self._fetch_token(params, scopes)
        return f"Bearer {cached[0]}"

    async def _fetch_token(self, params: dict[str, str], scopes: Sequence[str]) -> tuple[str, float]:
        realm = URL(params["realm"])
        query = [("scope", scope) for scope in scopes]
        if params.get("service"):
            query.append(("service", params["service"]))
        headers = {"Authorization": _basic(self.credentials)} if self.credentials else {}
        same_host = realm.host == self.state.base.host
        try:
            async with self.http.get(realm.update_query(query), headers=headers,
                                     ssl=self._ssl if same_host else None) as response:
                body = await _read_at_most(response, _ERROR_BODY_LIMIT)
                if response.status == 401:
                    raise RegistryError("unauthorized: incorrect username or password" if self.credentials
                                        else "unauthorized: authentication required", code="UNAUTHORIZED", status=401)
                if response.status != 200:
                    raise RegistryError.from_response(response.status, body, f"token from {realm}")
        except (aiohttp.ClientError, ssl.SSLError, TimeoutError) as err:
            raise RegistryError(f"token from {realm}: {err}") from err
        try:
            document = json.loads(body)
            token = document.get("token") or document["access_token"]
            lifetime = float(document.get("expires_in") or 60)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RegistryError(f"token from {realm}: the response holds no token") from None
        return token, time.monotonic() + max(lifetime - 10, 1)


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first ``limit + 1`` bytes when it is longer (so that callers can tell)."""
    data = bytearray()
    async for chunk in response.content.iter_chunked(_READ_SIZE):
        data += chunk
        if len(data) > limit:
            break
    return bytes(data[:limit + 1])


def _basic(credentials: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()


async def _run_all(jobs: Iterable[Awaitable[None]]) -> None:
    """Run jobs concurrently; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job)
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None


class RegistryClient:
    def __init__(self, *, credentials: CredentialStore | None = None, insecure_registries: Iterable[str] = (),
                 progress: Progress | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 hosts: RegistryHosts | None = None) -> None:
        self.credentials = credentials
        self.hosts = hosts or RegistryHosts()
        self.insecure_registries = tuple(insecure_registries)
        self.progress = progress
        self.chunk_size = chunk_size
        self._registries: dict[str, _RegistryState] = {}

    def _emit(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    # --- connecting ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def _connect(self, endpoint: Endpoint, credentials: Credentials | None = None,
                       fresh: bool = False) -> AsyncIterator[_Connection]:
        if credentials is None and self.credentials is not None:
            credentials = self.credentials.get(endpoint.host)
        credentials = credentials or endpoint.credentials
        async with aiohttp.ClientSession(timeout=_TIMEOUT, auto_decompress=False,
                                         skip_auto_headers=("Accept-Encoding",)) as http:
            state = None if fresh else self._registries.get(endpoint.key)
            if state is None:
                state = self._registries[endpoint.key] = await self._ping(http, endpoint)
            yield _Connection(http, state, credentials)

    async def _ping(self, http: aiohttp.ClientSession, endpoint: Endpoint) -> _RegistryState:
        """Find how a registry answers (scheme, TLS checks) and how it wants clients to authenticate."""
        insecure = endpoint.skip_verify or is_insecure(endpoint.host, self.insecure_registries)
        if endpoint.scheme:
            schemes: tuple[str, ...] = (endpoint.scheme,)
        else:
            schemes = ("https", "http") if insecure else ("https",)
        tls: ssl.SSLContext | bool | None = False if insecure else endpoint.ssl_context
        failures = []
        for scheme in schemes:
            base = URL(f"{scheme}://{endpoint.host}")
            try:
                async with http.get(base.join(URL(endpoint.location(""))), ssl=tls) as response:
                    challenge = response.headers.get("WWW-Authenticate")
                    if response.status not in (200, 401):
                        body = await _read_at_most(response, _ERROR_BODY_LIMIT)
                        raise RegistryError.from_response(response.status, body, f"registry {endpoint.host}")
            except (aiohttp.ClientConnectionError, ssl.SSLError, TimeoutError) as err:
                failures.append(f"{scheme}: {err or type(err).__name__}")
                continue
            state = _RegistryState(endpoint=endpoint, base=base, tls=tls)
            if response.status == 401 and challenge:
                state.challenge = parse_challenge(challenge)
            return state
        raise RegistryError(f"cannot reach registry {endpoint.host}: {'; '.join(failures)}")

    # --- login ---------------------------------------------------------------------------------------

    async def login(self, registry: str, username: str, password: str) -> None:
        """Check the credentials against the registry (its token flow when it has one) and, with a
        CredentialStore, save them. RegistryError (``UNAUTHORIZED``) when the registry refuses them."""
        domain = normalize_registry(registry)
        credentials = Credentials(username, password)
        endpoint = self.hosts.default_endpoint(domain)
        async with self._connect(endpoint, credentials, fresh=True) as connection:
            if connection.state.challenge is not None:
                # A token without a scope proves the password; then /v2/ must accept the result.
                async with connection.request("GET", connection.api(""), scopes=(), what=f"login to {domain}"):
                    pass
        self._registries.pop(endpoint.key, None)  # forget tokens issued to whoever was used before
        if self.credentials is not None:
            self.credentials.save(domain, username, password)

    # --- pull ----------------------------------------------------------------------------------------

    async def pull(self, store: ImageStore, reference: str, *,
                   platform: Sequence[str] = ("linux", "amd64")) -> Image:
        """Fetch an image (tag or digest; from an index, the manifest for ``platform``) with the blobs the
        content store lacks, register it under the reference and return it. The registry's mirrors are
        tried first, in order, and the registry itself last."""
        ref = parse_reference(reference)
        endpoints = self.hosts.endpoints(ref.domain)
        failures: list[str] = []
        for endpoint in endpoints:
            try:
                return await self._pull_from(endpoint, store, ref, platform)
            except RegistryError as err:
                if endpoint is endpoints[-1]:
                    if failures:
                        raise RegistryError(f"{err} (mirrors: {'; '.join(failures)})", code=err.code,
                                            status=err.status) from None
                    raise
                failures.append(f"{endpoint.host}: {err}")
        raise AssertionError("unreachable: the default endpoint is always last")

    async def _pull_from(self, endpoint: Endpoint, store: ImageStore, ref: Reference,
                         platform: Sequence[str]) -> Image:
        repository = endpoint.repository(ref.path)
        scopes = (f"repository:{repository}:pull",)
        async with self._connect(endpoint) as connection:
            top = await self._get_manifest(connection, repository, ref.digest or ref.tag or "latest", scopes)
            if ref.digest is not None and top.digest != ref.digest:
                raise RegistryError(f"manifest for {ref.familiar()} has digest {top.digest}")
            manifest, index = top, None
            if mt.is_index(top.media_type):
                index = top
                try:
                    descriptor = select_manifest(top.body, platform)
                except InvalidImage as err:
                    raise RegistryError(f"{ref.familiar()}: {err}") from None
                manifest = await self._get_manifest(connection, repository, descriptor["digest"], scopes)
            if not mt.is_manifest(manifest.media_type):
                raise RegistryError(f"{ref.familiar()}: unsupported manifest media type {manifest.media_type!r}")
            config, layers = _image_blobs(manifest)
            unique_layers = list({layer["digest"]: layer for layer in layers}.values())
            for layer in unique_layers:
                status = "Already exists" if store.content.exists(layer["digest"]) else "Waiting"
                self._emit(ProgressEvent(short_id(layer["digest"]), status))
            limit = asyncio.Semaphore(PARALLEL_TRANSFERS)
            # The blobs are synced to disk together, once all have arrived, before the image names them.
            batch = store.content.batch()
            try:
                await _run_all([self._download(connection, batch, store, repository, config, scopes, limit,
                                               report=False),
                                *(self._download(connection, batch, store, repository, layer, scopes, limit)
                                  for layer in unique_layers)])
                await asyncio.to_thread(batch.publish)
            finally:
                batch.discard()
        return self._register(store, ref, manifest, index)

    async def _get_manifest(self, connection: _Connection, repository: str, reference: str,
                            scopes: Sequence[str]) -> _Document:
        what = f"manifest {repository}:{reference}" if ":" not in reference else f"manifest {repository}@{reference}"
        async with connection.request("GET", connection.api(f"{repository}/manifests/{reference}"), scopes=scopes, what=what,
                                      headers={"Accept": MANIFEST_ACCEPT}) as response:
            data = await _read_at_most(response, MAX_MANIFEST_SIZE)
            header_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = response.headers.get("Docker-Content-Digest")
        if len(data) > MAX_MANIFEST_SIZE:
            raise RegistryError(f"{what}: larger than {MAX_MANIFEST_SIZE} bytes")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ":" in reference and reference != digest:
            raise RegistryError(f"{what}: content has digest {digest}", code="DIGEST_INVALID")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise RegistryError(f"{what}: content has digest {digest}, the registry says {header_digest}",
                                code="DIGEST_INVALID")
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RegistryError(f"{what}: not a JSON document")
        return _Document(digest, body.get("mediaType") or header_type or media_type_of(body), data, body)

    async def _download(self, connection: _Connection, batch: BlobBatch, store: ImageStore, repository: str,
                        descriptor: dict, scopes: Sequence[str], limit: asyncio.Semaphore,
                        report: bool = True) -> None:
        digest, size = descriptor["digest"], descriptor["size"]
        if store.content.exists(digest):
            return
        event_id = short_id(digest)
        async with limit:
            if report:
                self._emit(ProgressEvent(event_id, "Downloading", 0, size))
            received = reported = 0
            what = f"blob {digest}"
            async with connection.request("GET", connection.api(f"{repository}/blobs/{digest}"), scopes=scopes,
                                          what=what) as response:
                try:
                    with batch.writer(expected=digest) as writer:
                        # Hashing and writing happen in a thread, a megabyte at a time: both release the GIL,
                        # so parallel layer downloads use every core instead of queueing on the event loop.
                        pending = bytearray()
                        async for chunk in response.content.iter_chunked(_READ_SIZE):
                            received += len(chunk)
                            if received > size:
                                raise RegistryError(f"{what}: more than the {size} bytes the manifest says")
                            pending += chunk
                            if len(pending) >= _WRITE_SIZE:
                                await asyncio.to_thread(writer.write, pending)
                                pending = bytearray()
                            if report and (received - reported >= _PROGRESS_STEP or received == size):
                                reported = received
                                self._emit(ProgressEvent(event_id, "Downloading", received, size))
                        if pending:
                            await asyncio.to_thread(writer.write, pending)
                        if received != size:
                            raise RegistryError(f"{what}: got {received} bytes, the manifest says {size}")
                except DigestMismatch as err:
                    raise RegistryError(f"{what}: {err}", code="DIGEST_INVALID") from None
                except (aiohttp.ClientError, TimeoutError) as err:
                    raise RegistryError(f"{what}: {err or type(err).__name__}") from err
            if report:
                self._emit(ProgressEvent(event_id, "Pull complete", size, size))

    @staticmethod
    def _register(store: ImageStore, ref: Reference, manifest: _Document, index: _Document | None) -> Image:
        """Store the documents and name the image. The index is registered (so its digest is the repo
        digest, as Docker shows) when the manifest pulled is the one it holds for this machine."""
        top = manifest
        if index is not None:
            try:
                if select_manifest(index.body)["digest"] == manifest.digest:
                    top = index
            except InvalidImage:
                pass
        name = ref.tag if ref.digest is None else None
        refs = [str(ref)] if name or ref.digest == top.digest else [f"{ref.name}@{top.digest}"]
        with store.locked():
            if index is not None:
                store.content.write_bytes(index.data, expected=index.digest)
            store.content.write_bytes(manifest.data, expected=manifest.digest)
            return store.add(top.data, refs)

    # --- push ----------------------------------------------------------------------------------------

    async def push(self, store: ImageStore, reference: str, *, target: str | None = None) -> str:
        """Upload a local image (``reference``) to ``target`` (default: the same reference): the blobs the
        registry lacks, then the manifest. Returns the manifest digest."""
        image = store.resolve(reference)
        dest = parse_reference(target or reference)
        if dest.digest is not None:
            raise RegistryError(f"cannot push to a digest reference ({dest.familiar()}): push to a tag")
        data = store.content.read_bytes(image.manifest_digest)
        media_type = media_type_of(image.manifest)
        config, layers = _image_blobs(_Document(image.manifest_digest, media_type, data, image.manifest))
        # Repositories of the same registry that already hold this image: blobs can be mounted from them.
        sources = sorted({r.path for r in map(parse_reference, [*image.repo_tags, *image.repo_digests])
                          if r.domain == dest.domain and r.path != dest.path})
        scopes = (f"repository:{dest.path}:pull,push", *(f"repository:{source}:pull" for source in sources))
        unique_layers = list({layer["digest"]: layer for layer in layers}.values())
        for layer in unique_layers:
            self._emit(ProgressEvent(short_id(layer["digest"]), "Preparing"))
        blobs = [(layer, True) for layer in unique_layers]
        if config["digest"] not in {layer["digest"] for layer in unique_layers}:
            blobs.insert(0, (config, False))  # Docker shows layers only
        async with self._connect(self.hosts.default_endpoint(dest.domain)) as connection:
            limit = asyncio.Semaphore(PARALLEL_TRANSFERS)
            await _run_all([self._upload(connection, store, dest.path, blob, sources, scopes, limit, report)
                            for blob, report in blobs])
            tag = dest.tag or "latest"
            async with connection.request("PUT", connection.api(f"{dest.path}/manifests/{tag}"), scopes=scopes, expected=(201,),
                                          what=f"manifest {dest.familiar()}", data=data,
                                          headers={"Content-Type": media_type}) as response:
                digest = response.headers.get("Docker-Content-Digest") or image.manifest_digest
        if digest != image.manifest_digest:
            raise RegistryError(f"the registry stored manifest {image.manifest_digest} as {digest}")
        return digest

    async def _upload(self, connection: _Connection, store: ImageStore, repository: str, descriptor: dict,
                      sources: Sequence[str], scopes: Sequence[str], limit: asyncio.Semaphore, report: bool) -> None:
        digest, size = descriptor["digest"], descriptor["size"]
        event_id = short_id(digest)

        def emit(status: str, current: int = 0) -> None:
            if report:
                self._emit(ProgressEvent(event_id, status, current, size))

        emit("Waiting")
        async with limit:
            blob_url = connection.api(f"{repository}/blobs/{digest}")
            async with connection.request("HEAD", blob_url, scopes=scopes, expected=(200, 404),
                                          what=f"blob {digest}") as response:
                if response.status == 200:
                    emit("Layer already exists", size)
                    return
            location = None
            for number, source in enumerate(sources):
                mount = URL(connection.api(f"{repository}/blobs/uploads/")).with_query({"mount": digest, "from": source})
                async with connection.request("POST", mount, scopes=scopes, expected=(201, 202), data=b"",
                                              what=f"mount of {digest} from {source}") as response:
                    mounted = response.status == 201
                    location = response.headers.get("Location")
                if mounted:
                    emit(f"Mounted from {source}", size)
                    return
                if number < len(sources) - 1 and location:
                    await self._cancel_upload(connection, location, scopes)
                    location = None
            if location is None:
                location = await self._start_upload(connection, repository, scopes)
            emit("Pushing", 0)
            if size <= self.chunk_size:
                location_url = connection.url(location).update_query(digest=digest)
                async with connection.request("PUT", location_url, scopes=scopes, expected=(201,),
                                              what=f"upload of {digest}", data=store.content.read_bytes(digest),
                                              headers={"Content-Type": "application/octet-stream"}):
                    pass
            else:
                await self._upload_chunks(connection, store, digest, size, location, scopes, emit)
            emit("Pushed", size)

    async def _start_upload(self, connection: _Connection, repository: str, scopes: Sequence[str]) -> str:
        async with connection.request("POST", connection.api(f"{repository}/blobs/uploads/"), scopes=scopes, expected=(202,),
                                      what=f"upload to {repository}", data=b"") as response:
            location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"upload to {repository}: the registry sent no Location")
        return location

    async def _cancel_upload(self, connection: _Connection, location: str, scopes: Sequence[str]) -> None:
        async with connection.request("DELETE", location, scopes=scopes, expected=(204, 404), what="upload cancel"):
            pass

    async def _upload_chunks(self, connection: _Connection, store: ImageStore, digest: str, size: int,
                             location: str, scopes: Sequence[str], emit: Callable[[str, int], None]) -> None:
        """PATCH the blob in chunks with Content-Range; after a failed chunk ask the registry how much it
        has (the upload status) and go on from there."""
        offset = 0
        failures = 0
        with store.content.open(digest) as blob:
            while offset < size:
                blob.seek(offset)
                chunk = blob.read(self.chunk_size)
                headers = {"Content-Type": "application/octet-stream",
                           "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
                try:
                    async with connection.request("PATCH", location, scopes=scopes, expected=(202,), data=chunk,
                                                  headers=headers, what=f"upload of {digest}") as response:
                        location = response.headers.get("Location") or location
                    offset += len(chunk)
                    emit("Pushing", offset)
                except RegistryError as err:
                    failures += 1
                    if failures > CHUNK_RETRIES or not _resumable(err):
                        raise
                    location, offset = await self._upload_status(connection, location, scopes)
        final = connection.url(location).update_query(digest=digest)
        async with connection.request("PUT", final, scopes=scopes, expected=(201,), what=f"upload of {digest}",
                                      data=b""):
            pass

    async def _upload_status(self, connection: _Connection, location: str, scopes: Sequence[str]) -> tuple[str, int]:
        async with connection.request("GET", location, scopes=scopes, expected=(204,),
                                      what="upload status") as response:
            match = _RANGE_RE.fullmatch(response.headers.get("Range", ""))
            new_location = response.headers.get("Location") or location
        # "0-0" is what registries say for an empty upload (the inclusive range cannot express it).
        end = int(match[1]) if match else -1
        return new_location, end + 1 if end > 0 else 0


def _resumable(err: RegistryError) -> bool:
    """A chunk that failed in transit (or was cut short) rather than one the registry refuses outright."""
    return err.status == 0 or err.status >= 500 or err.status == 416 or err.code in ("SIZE_INVALID", "BLOB_UPLOAD_INVALID")


def _image_blobs(manifest: _Document) -> tuple[dict, list[dict]]:
    body = manifest.body
    config = body.get("config")
    layers = body.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise RegistryError(f"manifest {manifest.digest} has no config or layers")
    for descriptor in [config, *layers]:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str) \
                or not isinstance(descriptor.get("size"), int):
            raise RegistryError(f"manifest {manifest.digest} has a malformed descriptor")
    return config, layers
