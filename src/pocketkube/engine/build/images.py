"""The images a build starts FROM or copies from: looked up in the store, or pulled first with --pull
(from a registry that is reachable; none is from this machine unless one runs on it)."""

from __future__ import annotations

import asyncio

from pocketkube.engine.build.errors import BuildError
from pocketkube.engine.build.progress import Progress
from pocketkube.engine.images.reference import InvalidReference, parse_reference
from pocketkube.engine.images.store import Image, ImageNotFound, ImageStore


class ImageResolver:
    def __init__(self, store: ImageStore, progress: Progress, *, pull: bool, platform: tuple[str, ...],
                 insecure_registries: list[str]) -> None:
        self.store = store
        self.progress = progress
        self.pull = pull
        self.platform = platform
        self.insecure_registries = insecure_registries
        self._found: dict[str, Image] = {}
        self._lock = asyncio.Lock()

    async def resolve(self, reference: str) -> Image:
        """The image ``reference`` names, looked up (or pulled) once per build."""
        try:
            ref = parse_reference(reference)
        except InvalidReference as err:
            raise BuildError(f'failed to parse stage name "{reference}": {err}') from None
        async with self._lock:
            if str(ref) not in self._found:
                vertex = self.progress.vertex(f"[internal] load metadata for {ref}")
                try:
                    self._found[str(ref)] = await self._fetch(str(ref), ref.familiar())
                except BuildError as err:
                    vertex.error(err.message)
                    raise
                vertex.done()
            return self._found[str(ref)]

    async def _fetch(self, name: str, familiar: str) -> Image:
        if self.pull:
            from pocketkube.engine.registry.client import RegistryClient  # only --pull needs aiohttp
            from pocketkube.engine.registry.credentials import CredentialStore

            client = RegistryClient(credentials=CredentialStore(), insecure_registries=self.insecure_registries)
            try:
                return await client.pull(self.store, name, platform=self.platform)
            except Exception as err:  # the registry client raises several kinds; all mean "not pulled"
                raise BuildError(f"failed to resolve source metadata for {name}: {err}") from None
        try:
            return self.store.resolve(name)
        except ImageNotFound:
            raise BuildError(f"failed to resolve source metadata for {name}: pull access denied, repository does "
                             f"not exist or may require authorization (No such image: {familiar}; no registry "
                             "is reachable: load or import it, or build with --pull from a registry that "
                             "holds it)") from None
