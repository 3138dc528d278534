"""Wiring: settings in, a running server out. The only place that builds clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from entrepot import __version__
from entrepot.accesslog import AccessLog
from entrepot.config import Limits, Settings, SumDatabase, parse_proxy_list, split_host_port
from entrepot.errors import ConfigError, redact
from entrepot.gomod.direct import DirectUpstream
from entrepot.gomod.handlers import GoHandlers
from entrepot.gomod.module import match_prefix_patterns
from entrepot.gomod.paths import endpoint_of
from entrepot.gomod.service import GoService, Router, Rule
from entrepot.gomod.upstream import Chain, ProxyUpstream, Upstream, build_chain, read_netrc
from entrepot.metrics import CONTENT_TYPE, Endpoint, Metrics
from entrepot.npm.handlers import Endpoints, NpmHandlers
from entrepot.npm.service import NpmService
from entrepot.npm.upstream import NpmUpstream, read_npmrc_auth
from entrepot.stats.handlers import StatsHandlers
from entrepot.stats.inventory import InventoryUpdates
from entrepot.stats.npm_downloads import NpmDownloadsHandlers
from entrepot.stats.recorder import GoDownloads, Recorder
from entrepot.stats.store import StatsStore
from entrepot.storage.filesystem import FilesystemStorage, unique_owner
from entrepot.sumdb.handlers import SumdbHandlers
from entrepot.sumdb.note import VerifierList, parse_verifier_key
from entrepot.sumdb.service import DatabaseConfig, Hop, SumdbService
from entrepot.web.http import TEXT, Request, Response
from entrepot.web.observe import Observed
from entrepot.web.routes import EVERY, Handler, RouteTable
from entrepot.web.server import (
    HttpServer,
    connection_budget,
    fd_limit,
    fetch_budget,
    raise_fd_limit,
)

if TYPE_CHECKING:
    from entrepot.npm.registrystore import RegistryStore

log = logging.getLogger("entrepot")


def _read_tokens(settings: Settings) -> dict[str, str]:
    tokens = {}
    for host, path in settings.go.credentials.bearer_tokens.items():
        try:
            tokens[host] = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"go.credentials.bearer_tokens[{host}]: cannot read {path}") from e
    return tokens


def upstream_client(settings: Settings, *, connections: int) -> httpx.AsyncClient:
    """An HTTP client for upstreams: redirects followed by hand (ProxyUpstream), proxies
    from the environment, a bounded pool."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.go.upstream_timeout),
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections // 4
        ),
        follow_redirects=False,
        headers={"User-Agent": f"entrepot/{__version__}"},
        trust_env=True,
    )


def proxy_factory(settings: Settings, client: httpx.AsyncClient) -> Callable[[str], ProxyUpstream]:
    """Upstream proxies (and checksum databases) with the configured credentials and limits."""
    go = settings.go
    tokens = _read_tokens(settings)
    netrc = read_netrc(go.credentials.netrc_file) if go.credentials.netrc_file else {}

    def make(url: str) -> ProxyUpstream:
        return ProxyUpstream(
            url,
            client=client,
            tokens=tokens,
            netrc=netrc,
            small_deadline=go.upstream_timeout,
            zip_deadline=go.zip_deadline,
            min_rate=go.min_transfer_rate,
            rate_window=go.min_rate_window,
        )

    return make


def build_router(
    settings: Settings, *, client: httpx.AsyncClient, data_dir: Path
) -> tuple[Router, list[Upstream]]:
    """Parse every chain of the configuration into upstream objects (shared per URL)."""
    go = settings.go
    new_proxy = proxy_factory(settings, client)
    proxies: dict[str, Upstream] = {}
    direct: DirectUpstream | None = None

    def make_proxy(url: str) -> Upstream:
        if url not in proxies:
            proxies[url] = new_proxy(url)
        return proxies[url]

    chains = [go.proxy or "off"] + [r.proxy for r in go.routes or [] if r.proxy]
    if any(e.kind == "direct" for c in chains for e in parse_proxy_list(c)):
        direct = DirectUpstream(
            home=data_dir / ".direct",
            settings=go.direct,
            credentials=go.credentials,
            min_transfer_rate=go.min_transfer_rate,
            min_rate_window=go.min_rate_window,
        )

    def chain(text: str) -> Chain:
        return build_chain(parse_proxy_list(text), make_proxy=make_proxy, direct=direct)

    rules = [
        Rule(r.patterns, chain=chain(r.proxy) if r.proxy else None, deny=r.deny)
        for r in go.routes or []
    ]
    upstreams: list[Upstream] = list(proxies.values()) + ([direct] if direct else [])
    return Router(rules, chain(go.proxy or "off")), upstreams


def read_sumdb_key(db: SumDatabase) -> str:
    if db.key is not None:
        return db.key
    assert db.key_file is not None
    try:
        key = db.key_file.read_text().strip()
    except OSError as e:
        raise ConfigError(
            f"go.sumdb.databases[{db.name}].key_file: cannot read {db.key_file}: {e.strerror}"
        ) from e
    if key.split("+", 1)[0] != db.name:
        raise ConfigError(
            f"go.sumdb.databases[{db.name}].key_file: {db.key_file} holds a key for"
            f" {key.split('+', 1)[0]!r}, not {db.name!r}"
        )
    return key


def build_sumdb(
    settings: Settings,
    *,
    client: httpx.AsyncClient,
    storage: FilesystemStorage,
    metrics: Metrics,
    max_fetches: int = 128,
) -> SumdbService:
    """Each database with its key and its hops: proxies (asked /supported first), itself."""
    go = settings.go
    fetcher = proxy_factory(settings, client)

    configs = []
    for db in go.sumdb.databases or []:
        verifier = parse_verifier_key(read_sumdb_key(db))
        hops = []
        for entry in parse_proxy_list(db.proxy or go.proxy or "direct"):
            if entry.kind == "proxy":
                base = f"{entry.url.rstrip('/')}/sumdb/{db.name}"
                hops.append(Hop(fetcher(base), True, entry.fall_back_on_error))
            elif entry.kind == "direct":
                hops.append(Hop(fetcher(db.direct_url), False, entry.fall_back_on_error))
            elif entry.kind == "off":
                hops.append(Hop(None, False, False))
        if not hops:  # only file:// entries: the go command would go to the database itself
            hops.append(Hop(fetcher(db.direct_url), False, False))
        configs.append(DatabaseConfig(db.name, VerifierList(verifier), hops, db.patterns))
    return SumdbService(
        configs,
        storage=storage,
        metrics=metrics,
        cache=go.cache,
        latest_ttl=go.sumdb.latest_ttl,
        no_sum=go.sumdb.no_sum or "",
        exempt=sum_exempt(settings),
        unreachable=go.sumdb.unreachable,
        max_fetches=max_fetches,
    )


def sum_exempt(settings: Settings) -> Callable[[str], bool]:
    """Whether the first route matching a module turns the checksum databases off for it."""
    routes = [(r.patterns, not r.sumdb) for r in settings.go.routes or []]

    def exempt(module: str) -> bool:
        for patterns, off in routes:
            if match_prefix_patterns(patterns, module):
                return off
        return False

    return exempt


NO_NPM_UPSTREAM = (
    "the npm mirror has no upstream registry: set npm.upstream (ENTREPOT_NPM__UPSTREAM) or"
    " npm_config_registry, or install npm so `npm config get registry` answers"
)


def npm_base_url(settings: Settings, host: str | None = None, port: int | None = None) -> str:
    """The public registry URL: npm.public_url, else the listen address and the prefix."""
    if settings.npm.public_url is not None:
        return settings.npm.public_url
    listen_host, listen_port = split_host_port(settings.listen)
    host = host if host is not None else listen_host
    port = port if port is not None else listen_port
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{settings.npm.prefix}"


def _npm_authorization(settings: Settings) -> str | None:
    creds = settings.npm.credentials
    if creds.token_file is not None:
        try:
            token = creds.token_file.read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"npm.credentials.token_file: cannot read {creds.token_file}: {e.strerror}"
            ) from e
        return f"Bearer {token}"
    if creds.npmrc_file is not None and settings.npm.upstream is not None:
        try:
            text = creds.npmrc_file.read_text()
        except OSError as e:
            raise ConfigError(
                f"npm.credentials.npmrc_file: cannot read {creds.npmrc_file}: {e.strerror}"
            ) from e
        return read_npmrc_auth(text, settings.npm.upstream)
    return None


def build_npm(
    settings: Settings,
    *,
    storage: FilesystemStorage,
    metrics: Metrics,
    limits: Limits,
    published: Callable[[str, str, int], None] | None,
) -> tuple[NpmService, httpx.AsyncClient]:
    npm = settings.npm
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(npm.upstream_timeout),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        follow_redirects=False,
        headers={"User-Agent": f"entrepot/{__version__}"},
        trust_env=True,
    )
    upstream = None
    if npm.upstream is not None:
        upstream = NpmUpstream(
            npm.upstream,
            client=client,
            authorization=_npm_authorization(settings),
            small_deadline=npm.upstream_timeout,
            tarball_deadline=npm.tarball_deadline,
            min_rate=npm.min_transfer_rate,
        )
    service = NpmService(
        storage=storage,
        upstream=upstream,
        settings=npm,
        base_url=npm_base_url(settings),
        metrics=metrics,
        limits=limits,
        published=published,
        missing_upstream=NO_NPM_UPSTREAM,
    )
    return service, client


@dataclass
class Registry:
    """The private npm registry of one process: its store and its API's parts."""

    store: RegistryStore
    endpoints: tuple[Endpoints, ...]


def build_registry(
    settings: Settings,
    *,
    storage: FilesystemStorage,
    service: NpmService,
    store: RegistryStore | None = None,
) -> Registry:
    """Users, tokens and package writes on the database of ``stats.database`` (the same
    SQLite file by default); ``store``: a test's instead (connects lazily: nothing opened)."""
    from entrepot.npm.registry import RegistryEndpoints  # SQLAlchemy, only with a registry
    from entrepot.npm.registry_auth import Authenticator
    from entrepot.npm.registrystore import open_registry_store
    from entrepot.npm.users import UserEndpoints

    if store is None:
        store = open_registry_store(settings.stats.database, settings.data_dir)
    auth = Authenticator(store, settings.npm.registry)
    return Registry(
        store,
        (
            UserEndpoints(store, auth, settings.npm.registry),
            RegistryEndpoints(store, auth, service, storage, settings.npm),
        ),
    )


@dataclass
class Mirror:
    """Everything one server process runs: the request handler and what it must close."""

    app: Observed
    service: GoService
    sumdb: SumdbService
    metrics: Metrics
    accesslog: AccessLog
    client: httpx.AsyncClient
    sumdb_client: httpx.AsyncClient
    storage: FilesystemStorage
    shutdown_timeout: float
    stats: Stats | None = None
    npm: NpmService | None = None
    npm_client: httpx.AsyncClient | None = None
    registry: Registry | None = None
    _flusher: asyncio.Task[None] | None = None

    def bound(self, settings: Settings, host: str, port: int) -> None:
        """The server listens: tarball URLs of an unset npm.public_url use the real port."""
        if self.npm is not None and settings.npm.public_url is None:
            self.npm.set_base_url(npm_base_url(settings, host, port))

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_every_second())

    def start_stats(self, *, reconcile: bool) -> None:
        """Once the server listens: the recorder's flushes, and in one process of the
        instance (``reconcile``) the walk that corrects the cache inventory."""
        if self.stats is None:
            return
        self.stats.recorder.start()
        if reconcile:
            self.stats.inventory.reconcile_soon(self.storage.root)

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1)
            self.accesslog.flush()
            memory = self.service.memory
            self.metrics.record_memory_cache(len(memory), memory.used)
            self.metrics.record_free_bytes(self.storage.free_bytes())
            self.metrics.flush()

    async def close(self) -> None:
        """After the listener stopped: let fetches finish, flush logs, drop partial writes."""
        await self.service.flights.drain(self.shutdown_timeout)
        await self.sumdb.flights.drain(self.shutdown_timeout)  # lookups stored in the background
        if self.npm is not None:
            await self.npm.close(self.shutdown_timeout)
        if self._flusher is not None:
            self._flusher.cancel()
        if self.stats is not None:  # after the listener stopped: every download is counted
            await self.stats.close()
        self.accesslog.flush()
        self.metrics.flush()
        await self.client.aclose()
        await self.sumdb_client.aclose()
        if self.npm_client is not None:
            await self.npm_client.aclose()
        if self.registry is not None:
            await self.registry.store.close()
        self.storage.close()


@dataclass
class Stats:
    """Download statistics of one process: its store, its recorder, its inventory updates."""

    store: StatsStore
    recorder: Recorder
    inventory: InventoryUpdates

    async def close(self) -> None:
        await self.inventory.close()
        await self.recorder.close()
        await self.store.close()


def build_stats(
    settings: Settings, *, metrics: Metrics, store: StatsStore | None = None
) -> Stats | None:
    """None when ``stats.enabled`` is off. ``store``: a test's store instead of the SQL one
    (which connects lazily: nothing is opened here)."""
    if not settings.stats.enabled:
        return None
    if store is None:
        from entrepot.stats.sqlstore import open_store  # SQLAlchemy, only when counting

        store = open_store(settings.stats.database, settings.data_dir)
    recorder = Recorder(store, metrics, flush_interval=settings.stats.flush_interval)
    return Stats(store, recorder, InventoryUpdates(store, metrics))


def build_mirror(
    settings: Settings,
    *,
    access_log: AccessLog | None = None,
    owner: str = "main",
    max_fetches: int | None = None,
    stats_store: StatsStore | None = None,
    registry_store: RegistryStore | None = None,
) -> Mirror:
    metrics = Metrics()
    stats = build_stats(settings, metrics=metrics, store=stats_store)
    storage = FilesystemStorage(settings.data_dir, owner=unique_owner(owner))
    accesslog = access_log or AccessLog(enabled=settings.log.access)
    client = upstream_client(settings, connections=64)
    router, _ = build_router(settings, client=client, data_dir=storage.root)
    # The checksum databases get their own connection pool: a flood of lookups for made-up
    # modules must not take the connections module fetches need.
    sumdb_client = upstream_client(settings, connections=32)
    sumdb = build_sumdb(
        settings,
        client=sumdb_client,
        storage=storage,
        metrics=metrics,
        max_fetches=max(16, (max_fetches or settings.limits.max_fetches) // 4),
    )
    service = GoService(
        storage=storage,
        router=router,
        cache=settings.go.cache,
        metrics=metrics,
        max_zip_bytes=settings.go.max_zip_bytes,
        limits=settings.limits
        if max_fetches is None
        else settings.limits.model_copy(update={"max_fetches": max_fetches}),
        sums=sumdb if sumdb.databases else None,
        published=stats.inventory.published if stats is not None else None,
        removed=stats.inventory.removed if stats is not None else None,
    )
    handlers = GoHandlers(service, settings.go.cache)

    async def healthz(request: Request) -> Response:
        request.endpoint = "health"
        return Response(text="ok\n")

    async def readyz(request: Request) -> Response:
        request.endpoint = "health"
        if not storage.writable():
            return Response(503, text=f"storage not writable: {storage.root}\n")
        failed = await sumdb.status()
        if failed:
            return Response(503, text="".join(f"{line}\n" for line in failed))
        free, keep = storage.free_bytes(), settings.limits.min_free_bytes
        if free < keep:
            return Response(
                503,
                text=(
                    f"cache volume nearly full: {free >> 20} MiB free on {storage.root},"
                    f" limits.min_free_bytes keeps {keep >> 20} MiB\n"
                ),
            )
        return Response(text="ready\n")

    async def metrics_page(request: Request) -> Response:
        request.endpoint = "metrics"
        return Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def index(request: Request) -> Response:
        scheme = request.headers.get("x-forwarded-proto", "http").split(",")[0].strip()
        host = request.host or "HOST"
        lines = [f"Entrepôt {__version__}: a Go module and npm registry mirror.\n"]
        if settings.go.enabled:
            lines.append(f"Go: GOPROXY={scheme}://{host}\n")
        if settings.npm.enabled:
            lines.append(f"npm: npm config set registry {scheme}://{host}{settings.npm.prefix}\n")
        return Response(
            text="".join(lines),
            headers={"Content-Type": TEXT},
        )

    npm_service, npm_client = (
        build_npm(
            settings,
            storage=storage,
            metrics=metrics,
            limits=settings.limits,
            published=stats.inventory.npm_published if stats is not None else None,
        )
        if settings.npm.enabled
        else (None, None)
    )
    registry = (
        build_registry(settings, storage=storage, service=npm_service, store=registry_store)
        if npm_service is not None and settings.npm.registry.enabled
        else None
    )
    routes = _route_table(
        settings,
        handlers.handle if settings.go.enabled else _go_disabled,
        npm_service,
        stats.store if stats is not None else None,
        registry.endpoints if registry is not None else (),
    )
    routes.add("/healthz", healthz)
    routes.add("/readyz", readyz)
    routes.add("/metrics", metrics_page)
    if settings.npm.prefix != "/" or not settings.npm.enabled:
        routes.add("/", index)
    if settings.go.enabled:
        routes.add_prefix(
            "/sumdb/", SumdbHandlers(sumdb, latest_ttl=settings.go.sumdb.latest_ttl).handle
        )
    if stats is not None:
        routes.add_prefix("/stats/", StatsHandlers(stats.store).handle)
    else:
        routes.add_prefix("/stats/", _stats_disabled)
    app = Observed(
        routes.dispatch,
        metrics=metrics,
        accesslog=accesslog,
        classify=_endpoint,
        downloads=GoDownloads(stats.recorder, metrics) if stats is not None else None,
    )
    return Mirror(
        app=app,
        service=service,
        sumdb=sumdb,
        metrics=metrics,
        accesslog=accesslog,
        client=client,
        sumdb_client=sumdb_client,
        storage=storage,
        shutdown_timeout=settings.shutdown_timeout,
        stats=stats,
        npm=npm_service,
        npm_client=npm_client,
        registry=registry,
    )


def _route_table(
    settings: Settings,
    go: Handler,
    npm: NpmService | None,
    stats: StatsStore | None,
    registry: Sequence[Endpoints],
) -> RouteTable:
    """Go at the root; npm under its prefix (or at the root, alone), with npm's downloads
    API at ``<prefix>downloads/point/`` and ``/range/`` (which a package named "downloads"
    cannot use for a version or tag: neither "point" nor "range" is a version)."""
    if npm is None:
        return RouteTable(fallback=go)
    prefix = settings.npm.prefix
    npm_handle = NpmHandlers(npm, prefix=prefix, registry=registry).handle
    if prefix == "/":
        routes = RouteTable(fallback=npm_handle, methods=EVERY)
    else:
        routes = RouteTable(fallback=go)
        routes.add_prefix(prefix, npm_handle, methods=EVERY)
    downloads = (
        NpmDownloadsHandlers(stats, prefix=prefix).handle if stats is not None else _stats_disabled
    )
    routes.add_prefix(f"{prefix}downloads/point/", downloads)
    routes.add_prefix(f"{prefix}downloads/range/", downloads)
    return routes


async def _go_disabled(request: Request) -> Response:
    return Response(
        404,
        text="this mirror serves npm only (go.enabled is false)\n",
        headers={"Cache-Control": "no-store"},
    )


async def _stats_disabled(request: Request) -> Response:
    request.endpoint = "stats"
    return Response(
        404,
        text="download statistics are disabled on this mirror (stats.enabled)\n",
        headers={"Cache-Control": "no-store"},
    )


def _endpoint(path: str) -> Endpoint:
    found = endpoint_of(path)
    return found if found is not None else "other"


async def serve(
    settings: Settings,
    *,
    sock: socket.socket | None = None,
    worker: int | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; then finish in-flight requests and discard partial writes.

    Alone (``sock`` None) it binds the listen address and announces it; as a worker it serves
    the socket it was given and reports readiness through ``on_ready``.
    """
    owner = "main" if worker is None else f"w{worker}"
    limits = settings.limits
    fds = raise_fd_limit() if worker is None else fd_limit()
    max_connections = connection_budget(limits.max_connections, fds=fds)
    max_fetches = fetch_budget(limits.max_fetches, fds=fds)
    if (max_connections, max_fetches) != (limits.max_connections, limits.max_fetches):
        log.warning(
            "file-descriptor limit %d: serving at most %d connections and %d fetches per"
            " worker (limits.max_connections %d, limits.max_fetches %d); raise `ulimit -n`"
            " for more",
            fds,
            max_connections,
            max_fetches,
            limits.max_connections,
            limits.max_fetches,
        )
    mirror = build_mirror(settings, owner=owner, max_fetches=max_fetches)
    server = HttpServer(
        mirror.app,
        header_timeout=limits.header_timeout,
        keepalive_timeout=limits.keepalive_timeout,
        max_connections=max_connections,
        min_send_rate=limits.min_send_rate,
        send_grace=limits.header_timeout,
        on_refused=mirror.metrics.record_refused_connection,
    )
    mirror.start()
    if sock is not None:
        await server.listen(sock=sock)
        address = sock.getsockname()
        mirror.bound(settings, address[0], address[1])
    else:
        host, port = split_host_port(settings.listen)
        bound = await server.listen(host=host, port=port)
        mirror.bound(settings, bound[0][0], bound[0][1])
        announce(settings, bound[0][0], bound[0][1], workers=1)
    # One process per instance walks the cache for the inventory: alone, or worker 0.
    mirror.start_stats(reconcile=worker in (None, 0))
    if on_ready is not None:
        on_ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing in-flight requests")
        await server.shutdown(settings.shutdown_timeout)
        await mirror.close()


def announce(settings: Settings, host: str, port: int, *, workers: int) -> None:
    """The one line that says where the mirror is (tests and humans wait for it)."""
    shown = f"[{host}]" if ":" in host else host
    if settings.go.enabled:
        log.info(
            "serving Go modules on http://%s:%s (%d worker%s, upstream %s, data %s)",
            shown,
            port,
            workers,
            "" if workers == 1 else "s",
            redact(str(settings.go.proxy)),
            settings.data_dir.absolute(),
        )
    if settings.npm.enabled:
        if settings.npm.upstream is None:
            log.warning("npm: %s", NO_NPM_UPSTREAM)
        log.info(
            "serving npm on http://%s:%s%s (upstream %s, public URL %s)",
            shown,
            port,
            settings.npm.prefix,
            redact(str(settings.npm.upstream)),
            npm_base_url(settings, host, port),
        )
