"""The ModuleMirror API (entrepot.dev/v1alpha1), as pydantic models.

The Go settings of a mirror are the server's own configuration models (entrepot.config:
Route, GoCache, the proxy chain), so the CRD schema, the rendered config file and the
server's parsing all come from one definition. Kubernetes-only parts (storage, service,
scheduling, credentials as Secret references) are defined here. Fields for features that do
not exist yet are added with those features.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from entrepot.config import (
    PROXY_LIST_PATTERN,
    Duration,
    GoCache,
    GoSettings,
    Limits,
    Route,
    StatsSettings,
    SumdbSettings,
    _check_database,
    _check_key,
    _check_patterns,
    _check_proxy_list,
    check_distinct_names,
    check_no_sum,
)
from entrepot.config import Direct as ServerDirect
from entrepot.config import SumDatabase as ServerSumDatabase

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class _Spec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class SecretKeyRef(_Spec):
    """A key of a Secret in the mirror's namespace; mounted into the mirror's pods as a file."""

    secret_name: str = Field(
        description="Name of the Secret.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253
    )
    key: str = Field(description="Key within the Secret.", min_length=1, max_length=253)


class BearerToken(SecretKeyRef):
    host: str = Field(description="Upstream host name that receives this token.", min_length=1)


class Credentials(_Spec):
    """Secrets for upstreams and direct fetches. The operator never reads their contents."""

    netrc: SecretKeyRef | None = Field(
        default=None, description="netrc file: basic auth for upstream proxies and git over https."
    )
    git_config: SecretKeyRef | None = Field(
        default=None, description="Extra git config for direct fetches (insteadOf, helpers)."
    )
    git_credentials: SecretKeyRef | None = Field(
        default=None, description="git-credentials store file for direct fetches."
    )
    bearer_tokens: list[BearerToken] = Field(
        default_factory=list, description="Bearer tokens for upstream proxies, per host."
    )


def _same(model: type[BaseModel], name: str, *, description: str | None = None) -> Any:
    """The server's own definition of a field (default, bounds, description): one source.

    ``description`` replaces the server's text where a field means the same but the CRD names
    its neighbours differently (a Secret reference instead of a file path)."""
    field = copy.copy(model.model_fields[name])
    if description is not None:
        field.description = description
    return field


class Direct(_Spec):
    """Fetching from version control (the 'direct' upstream) inside the mirror's pods."""

    concurrency: int = _same(ServerDirect, "concurrency")
    timeout: Duration = _same(ServerDirect, "timeout")
    queue: int = _same(ServerDirect, "queue")
    queue_timeout: Duration = _same(ServerDirect, "queue_timeout")
    insecure: str = _same(ServerDirect, "insecure")


def _verifier_key(value: str | None) -> str | None:
    """The server's key check: a validation error that says what a key looks like."""
    return _check_key(value)


class SumDatabase(_Spec):
    """A checksum database (the server's go.sumdb.databases[]); its key inline or a Secret's."""

    name: str = _same(ServerSumDatabase, "name")
    key: str | None = _same(
        ServerSumDatabase,
        "key",
        description=(
            "Verifier key '<name>+<hash>+<base64 Ed25519 key>' (GOSUMDB's first field)."
            " Exactly one of key/keySecret."
        ),
    )
    key_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "A Secret key holding the verifier key, mounted read-only into the mirror's pods."
            " Exactly one of key/keySecret."
        ),
    )
    url: str | None = _same(ServerSumDatabase, "url")
    proxy: str | None = _same(ServerSumDatabase, "proxy")
    patterns: str | None = _same(ServerSumDatabase, "patterns")

    _key = field_validator("key")(classmethod(lambda cls, v: _verifier_key(v)))
    _proxy = field_validator("proxy")(classmethod(lambda cls, v: _check_proxy_list(v)))
    _patterns = field_validator("patterns")(
        classmethod(lambda cls, v: None if v is None else _check_patterns(v))
    )

    @model_validator(mode="after")
    def _one_key(self) -> SumDatabase:
        if (self.key is None) == (self.key_secret is None):
            raise ValueError(ONE_KEY)
        if self.key is not None and self.key.split("+", 1)[0] != self.name:
            raise ValueError(
                f"the key names database {self.key.split('+', 1)[0]!r}, not {self.name!r}"
            )
        return self


class Sumdb(_Spec):
    """Checksum databases: the server's `go.sumdb` settings."""

    databases: list[SumDatabase] | None = Field(
        default=None,
        description=(
            "The databases. Unset: the pod's GOSUMDB, i.e. the go toolchain's default in the"
            " image (its key is read from the toolchain); an empty list turns verification"
            " off, with a warning."
        ),
    )
    no_sum: str | None = _same(SumdbSettings, "no_sum")
    unreachable: Literal["refuse", "serve_unverified"] = _same(SumdbSettings, "unreachable")
    latest_ttl: Duration = _same(SumdbSettings, "latest_ttl")

    _no_sum = field_validator("no_sum")(classmethod(lambda cls, v: check_no_sum(v)))

    @model_validator(mode="after")
    def _distinct(self) -> Sumdb:
        check_distinct_names([d.name for d in self.databases or []])
        return self


class GoSpec(_Spec):
    """The Go module proxy: the same settings as the server's `go` section."""

    proxy: str = Field(
        description="Upstream chain in GOPROXY syntax, e.g. 'https://proxy.example.com,direct'.",
        json_schema_extra={"pattern": PROXY_LIST_PATTERN},
    )
    routes: list[Route] = Field(
        default_factory=list, description="Per-path chains or refusals; first match wins."
    )
    cache: GoCache = Field(default_factory=GoCache)
    direct: Direct = Field(default_factory=Direct)
    sumdb: Sumdb = Field(default_factory=Sumdb)
    upstream_timeout: Duration = _same(GoSettings, "upstream_timeout")
    zip_deadline: Duration = _same(GoSettings, "zip_deadline")
    min_transfer_rate: int = _same(GoSettings, "min_transfer_rate")
    min_rate_window: Duration = _same(GoSettings, "min_rate_window")

    @model_validator(mode="after")
    def _proxy_syntax(self) -> GoSpec:
        _check_proxy_list(self.proxy)
        return self


class EmptyDir(_Spec):
    size_limit: str | None = Field(
        default=None, description="Limit of the throwaway cache.", pattern=QUANTITY_PATTERN
    )


class Storage(_Spec):
    """Where the cache lives: a PersistentVolumeClaim (default) or a throwaway emptyDir."""

    size: str = Field(default="10Gi", description="PVC size.", pattern=QUANTITY_PATTERN)
    storage_class_name: str | None = Field(default=None, description="PVC storage class.")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = Field(
        default="ReadWriteOnce",
        description="ReadWriteMany is required for more than one replica (a shared cache).",
    )
    empty_dir: EmptyDir | None = Field(
        default=None, description="Use a throwaway emptyDir instead of a PVC (tests, demos)."
    )


class Service(_Spec):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Service port.")


class Ingress(_Spec):
    host: str = Field(description="Host name the Ingress answers for.", min_length=1)
    class_name: str | None = Field(default=None, description="IngressClass name.")
    tls_secret_name: str | None = Field(default=None, description="TLS Secret for the host.")


# A database URL in the spec is readable by everyone who can read the ModuleMirror: its
# password must come from a Secret (passwordSecret), never from the URL.
DATABASE_URL_PATTERN = r"^[a-z][a-z0-9+]*://([^:@/]*@)?[^@]*$"
PASSWORD_IN_URL = (
    "stats.database must not hold a password (anyone who can read the ModuleMirror would see"
    " it): put it in a Secret and name it in stats.passwordSecret"
)


class Stats(_Spec):
    """Download statistics (the server's `stats` settings), the stats API and its database."""

    enabled: bool = _same(StatsSettings, "enabled")
    database: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of a PostgreSQL database shared by the replicas, without a"
            " password: 'postgresql://entrepot@db.example.com:5432/entrepot'. Unset: an"
            " SQLite file in the cache volume, which needs replicas: 1."
        ),
        json_schema_extra={"pattern": DATABASE_URL_PATTERN},
    )
    password_secret: SecretKeyRef | None = Field(
        default=None,
        description="A Secret key holding the database password, mounted into the pods.",
    )
    flush_interval: Duration = _same(StatsSettings, "flush_interval")

    @field_validator("database")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        _check_database(value)
        if value is not None and not re.match(DATABASE_URL_PATTERN, value):
            raise ValueError(PASSWORD_IN_URL)
        return value

    @model_validator(mode="after")
    def _password_needs_database(self) -> Stats:
        if self.password_secret is not None and not (self.database or "").startswith("postgresql"):
            raise ValueError(PASSWORD_NEEDS_POSTGRES)
        return self


PASSWORD_NEEDS_POSTGRES = "stats.passwordSecret needs stats.database: a PostgreSQL URL"


class Monitoring(_Spec):
    service_monitor: bool = Field(
        default=True,
        description="Create a ServiceMonitor when its CRD exists (else: scrape annotations).",
    )
    interval: str = Field(default="30s", description="Scrape interval.", pattern=r"^[0-9]+(s|m)$")


def _free_form(description: str) -> Any:
    return Field(
        default=None,
        description=description,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class ModuleMirrorSpec(_Spec):
    """A Go module mirror: a Deployment of `entrepot serve`, its Service, cache and config."""

    replicas: int = Field(default=1, ge=1, le=50, description="Mirror pods.")
    image: str | None = Field(
        default=None, description="Image override (default: the operator's configured image)."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets to pull the image with (names)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The server's log level."
    )
    go: GoSpec
    limits: Limits = Field(default_factory=Limits)
    credentials: Credentials = Field(default_factory=Credentials)
    storage: Storage = Field(default_factory=Storage)
    service: Service = Field(default_factory=Service)
    ingress: Ingress | None = Field(default=None, description="Expose through an Ingress.")
    monitoring: Monitoring = Field(default_factory=Monitoring)
    stats: Stats = Field(default_factory=Stats)
    resources: dict[str, Any] | None = _free_form("Container resources (requests/limits).")
    node_selector: dict[str, str] | None = Field(default=None, description="Pod nodeSelector.")
    tolerations: list[dict[str, Any]] | None = _free_form("Pod tolerations.")
    affinity: dict[str, Any] | None = _free_form("Pod affinity.")
    topology_spread_constraints: list[dict[str, Any]] | None = _free_form(
        "Pod topologySpreadConstraints."
    )

    @model_validator(mode="after")
    def _shared_cache(self) -> ModuleMirrorSpec:
        if (
            self.replicas > 1
            and self.storage.empty_dir is None
            and (self.storage.access_mode != "ReadWriteMany")
        ):
            raise ValueError(REPLICAS_NEED_SHARED_STORAGE)
        if self.replicas > 1 and self.stats.enabled and self.stats.database is None:
            raise ValueError(REPLICAS_NEED_A_STATS_DATABASE)
        return self


REPLICAS_NEED_SHARED_STORAGE = (
    "replicas > 1 needs a shared cache: set storage.accessMode: ReadWriteMany"
    " (a ReadWriteOnce volume can be mounted by one node only), or use storage.emptyDir"
)

REPLICAS_NEED_A_STATS_DATABASE = (
    "replicas > 1 counts downloads in one shared database: set stats.database (PostgreSQL),"
    " or stats.enabled: false (an SQLite file cannot be shared by pods)"
)

# Cross-field rules the API server checks itself (CEL), so a bad spec never reaches us.
SPEC_RULES = [
    {
        "rule": "self.replicas <= 1 || has(self.storage.emptyDir)"
        " || self.storage.accessMode == 'ReadWriteMany'",
        "message": REPLICAS_NEED_SHARED_STORAGE,
        "fieldPath": ".storage.accessMode",
    },
    {
        "rule": "self.replicas <= 1 || (has(self.stats) && (has(self.stats.database)"
        " || (has(self.stats.enabled) && !self.stats.enabled)))",
        "message": REPLICAS_NEED_A_STATS_DATABASE,
        "fieldPath": ".stats.database",
    },
]
STATS_RULES = [
    {
        "rule": "!has(self.passwordSecret) || (has(self.database)"
        " && self.database.startsWith('postgresql'))",
        "message": PASSWORD_NEEDS_POSTGRES,
    }
]
ROUTE_RULES = [
    {
        "rule": "has(self.proxy) != has(self.deny)",
        "message": "a route needs exactly one of 'proxy' (a chain) or 'deny' (a message)",
    }
]
ONE_KEY = "a checksum database needs exactly one of 'key' (inline) or 'keySecret' (a Secret key)"
DATABASE_RULES = [{"rule": "has(self.key) != has(self.keySecret)", "message": ONE_KEY}]


class Condition(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    type: Literal["Ready", "Progressing", "Degraded"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None


class ModuleMirrorStatus(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    url: str | None = Field(default=None, description="Put this in GOPROXY.")
    config_hash: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
