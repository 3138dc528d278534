"""The private registry's packages: publish, dist-tags, deprecate, unpublish, owners,
listings and search (being built: see issue 13)."""

from __future__ import annotations

from entrepot.config import NpmSettings
from entrepot.npm.registry_auth import Authenticator
from entrepot.npm.registrystore import RegistryStore
from entrepot.npm.service import NpmService
from entrepot.storage.base import Storage
from entrepot.web.http import AnyResponse, Request


class RegistryEndpoints:
    def __init__(
        self,
        store: RegistryStore,
        auth: Authenticator,
        service: NpmService,
        storage: Storage,
        settings: NpmSettings,
    ) -> None:
        self.store = store
        self.auth = auth
        self.service = service
        self.storage = storage
        self.settings = settings

    async def endpoint(self, request: Request, rel: str) -> AnyResponse | None:
        return None

    async def write(self, request: Request, rel: str) -> AnyResponse | None:
        return None
