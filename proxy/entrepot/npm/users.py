"""The registry's users and tokens: ``npm adduser``/``login``, ``whoami``, ``logout``,
``npm token create|list|revoke`` (being built: see issue 13)."""

from __future__ import annotations

from entrepot.config import NpmRegistry
from entrepot.npm.registry_auth import Authenticator
from entrepot.npm.registrystore import RegistryStore
from entrepot.web.http import AnyResponse, Request


class UserEndpoints:
    def __init__(self, store: RegistryStore, auth: Authenticator, settings: NpmRegistry) -> None:
        self.store = store
        self.auth = auth
        self.settings = settings

    async def endpoint(self, request: Request, rel: str) -> AnyResponse | None:
        return None

    async def write(self, request: Request, rel: str) -> AnyResponse | None:
        return None
