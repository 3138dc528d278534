"""The ModuleMirror and NpmMirror APIs (entrepot.dev/v1alpha1), as pydantic models.

The protocol settings of a mirror are the server's own configuration models (entrepot.config:
Route, GoCache and the proxy chain for Go; NpmCache, NpmPolicy and the limits for npm), so the
CRD schema, the rendered config file and the server's parsing all come from one definition.
Kubernetes-only parts (storage, service, scheduling, credentials as Secret references) are
defined here once, in MirrorSpec, which both kinds extend. Fields for features that do not
exist yet are added with those features.

What the API server would refuse on a child (a Service named `my.mirror`, `cpu: lots` in a
pod, a PVC whose class changes) is refused on the mirror itself, at admission: each
rule is written once here and checked twice, by pydantic when the operator reads a spec and
as CEL by the API server (`Checked` for a field, the `*_RULES` lists for an object). Rules
that compare with the previous spec (`oldSelf`) exist only as CEL.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    JsonValue,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from entrepot.config import (
    PROXY_LIST_PATTERN,
    USERS_NEED_NAMES,
    Duration,
    GoCache,
    GoSettings,
    Limits,
    NpmCache,
    NpmPolicy,
    NpmRegistry,
    NpmSettings,
    Route,
    StatsSettings,
    SumdbSettings,
    _check_database,
    _check_key,
    _check_name_globs,
    _check_patterns,
    _check_proxy_list,
    _check_registry_url,
    check_distinct_names,
    check_no_sum,
)
from entrepot.config import Direct as ServerDirect
from entrepot.config import PublishRule as ServerPublishRule
from entrepot.config import SumDatabase as ServerSumDatabase

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # RFC 1035: what a Service may be named
HOST_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
# Kubernetes' own quantity syntax (resource.Quantity, as controller-gen writes it), without the
# sign: no resource takes a negative amount.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A volume size: digits, then a byte suffix, and not zero ('0', '0.0Gi' are refused).
SIZE_PATTERN = (
    r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]*\.[0-9]*[1-9][0-9]*)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
)


class _Spec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


# --- Checks both sides make -----------------------------------------------------------------
# The API server refuses a bad spec at admission (CEL, x-kubernetes-validations) and the
# operator refuses the same spec when it parses one (pydantic), with one message for both.


@dataclass(frozen=True)
class Checked:
    """A field rule: ``check`` here, ``rule`` (CEL on ``self``) in the CRD; one ``message``."""

    rule: str
    message: str
    check: Callable[[Any], bool]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        def validate(value: Any) -> Any:
            if not self.check(value):
                raise ValueError(self.message)
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.setdefault("x-kubernetes-validations", []).append(
            {"rule": self.rule, "message": self.message}
        )
        return out


def matching(pattern: str, message: str) -> Checked:
    """``pattern`` (RE2 and Python alike) as a CEL rule with a message, not a bare regex."""
    return Checked(
        rule=f"self.matches(r'{pattern}')",
        message=message,
        check=lambda value: re.fullmatch(pattern, value) is not None,
    )


def _subdomain(what: str) -> Checked:
    return matching(
        DNS_SUBDOMAIN_PATTERN,
        f"must be {what} name: lower case letters, digits, '-' and '.', starting and ending"
        " with a letter or digit (a DNS subdomain)",
    )


SecretName = Annotated[str, StringConstraints(max_length=253), _subdomain("a Secret")]
StorageClassName = Annotated[str, StringConstraints(max_length=253), _subdomain("a StorageClass")]
IngressClassName = Annotated[str, StringConstraints(max_length=253), _subdomain("an IngressClass")]
SecretKey = Annotated[
    str,
    StringConstraints(max_length=253),
    matching(SECRET_KEY_PATTERN, "must be a Secret key: letters, digits, '-', '_' and '.'"),
]
NOT_A_HOST = (
    "must be a DNS host name such as mirror.example.com, or *.example.com for a wildcard"
    " (lower case letters, digits, '-' and '.'; not an IP address)"
)
Host = Annotated[
    str,
    StringConstraints(max_length=253),
    Checked(
        rule=f"self.matches(r'{HOST_PATTERN}') && !self.matches(r'^[0-9.]+$')",
        message=NOT_A_HOST,
        check=lambda value: (
            re.fullmatch(HOST_PATTERN, value) is not None
            and re.fullmatch(r"^[0-9.]+$", value) is None
        ),
    ),
]
Size = Annotated[
    str,
    StringConstraints(max_length=64),
    matching(SIZE_PATTERN, "must be a positive size such as 10Gi, 500Mi or 1Ti"),
]
NOT_A_QUANTITY = "must be a quantity such as 500m, 2, 512Mi or 1Gi (not negative)"
# An int-or-string (crd.py writes x-kubernetes-int-or-string), as in a pod spec.
Quantity = Annotated[
    int | Annotated[str, StringConstraints(max_length=64)],
    Checked(
        rule=f"type(self) == int ? int(self) >= 0 : string(self).matches(r'{QUANTITY_PATTERN}')",
        message=NOT_A_QUANTITY,
        check=lambda value: (
            value >= 0
            if isinstance(value, int)
            else re.fullmatch(QUANTITY_PATTERN, value) is not None
        ),
    ),
]

_FACTORS = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(["k", "M", "G", "T", "P", "E"])},
    **{s: Decimal(1000) ** -(i + 1) for i, s in enumerate(["m", "u", "n"])},
    "": Decimal(1),
}


def quantity(value: int | str) -> Decimal:
    """The amount a valid Kubernetes quantity stands for (the CEL ``quantity()``)."""
    if isinstance(value, int):
        return Decimal(value)
    number = re.match(r"^\+?([0-9]*\.?[0-9]*)", value)
    assert number is not None
    digits, suffix = number.group(1), value[number.end() :]
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return Decimal(digits + suffix)
    return Decimal(digits) * _FACTORS[suffix]


@dataclass(frozen=True)
class AsDict:
    """A core/v1 object checked against its model and kept as the dict the user wrote (by its
    API names, only what was set), so render passes it into the pod spec unchanged."""

    model: type[BaseModel]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        def as_dict(value: BaseModel) -> dict[str, Any]:
            return value.model_dump(by_alias=True, exclude_unset=True, exclude_none=True)

        return core_schema.no_info_after_validator_function(
            as_dict,
            handler.generate_schema(self.model),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v),
        )


def _cel(*rules: dict[str, str]) -> ConfigDict:
    """Object rules the CRD carries for a model (its model_validator checks the same)."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": cast(JsonValue, list(rules))})


class SecretKeyRef(_Spec):
    """A key of a Secret in the mirror's namespace; mounted into the mirror's pods as a file."""

    secret_name: SecretName = Field(description="Name of the Secret.")
    key: SecretKey = Field(description="Key within the Secret.")


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
        default_factory=list,
        max_length=32,
        description="Bearer tokens for upstream proxies, per host.",
    )


def _same(
    model: type[BaseModel],
    name: str,
    *,
    description: str | None = None,
    schema: dict[str, JsonValue] | None = None,
) -> Any:
    """The server's own definition of a field (default, bounds, description): one source.

    ``description`` replaces the server's text where a field means the same but the CRD names
    its neighbours differently (a Secret reference instead of a file path); ``schema`` adds
    what the API server checks itself (a pattern the server's validator enforces too)."""
    field = copy.copy(model.model_fields[name])
    if description is not None:
        field.description = description
    if schema is not None:
        field.json_schema_extra = schema
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
        max_length=16,
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
    size_limit: Size | None = Field(default=None, description="Limit of the throwaway cache.")


class Storage(_Spec):
    """Where the cache lives: a PersistentVolumeClaim (default) or a throwaway emptyDir.

    The PVC's class and access mode cannot change once it exists, nor can it shrink: the API
    server refuses such changes to an existing mirror (STORAGE_RULES)."""

    size: Size = Field(
        default="10Gi", description="PVC size. May grow (if the class allows it), never shrink."
    )
    storage_class_name: StorageClassName | None = Field(
        default=None, description="PVC storage class. Fixed once the mirror exists."
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = Field(
        default="ReadWriteOnce",
        description=(
            "ReadWriteMany is required for more than one replica (a shared cache)."
            " Fixed once the mirror exists."
        ),
    )
    empty_dir: EmptyDir | None = Field(
        default=None,
        description=(
            "Use a throwaway emptyDir instead of a PVC (tests, demos). Cannot be added or"
            " removed once the mirror exists."
        ),
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description=(
            "What happens to the cache volume (PVC) when the mirror is deleted: Retain"
            " keeps it (a mirror created again with the same name and namespace adopts it);"
            " Delete removes it with the mirror."
        ),
    )


class Service(_Spec):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Service port.")


class Ingress(_Spec):
    host: Host = Field(description="Host name the Ingress answers for ('*.' for a wildcard).")
    class_name: IngressClassName | None = Field(default=None, description="IngressClass name.")
    tls_secret_name: SecretName | None = Field(default=None, description="TLS Secret for the host.")


# A database URL in the spec is readable by everyone who can read the mirror: its
# password must come from a Secret (passwordSecret), never from the URL.
DATABASE_URL_PATTERN = r"^[a-z][a-z0-9+]*://([^:@/]*@)?[^@]*$"
PASSWORD_IN_URL = (
    "stats.database must not hold a password (anyone who can read the mirror would see"
    " it): put it in a Secret and name it in stats.passwordSecret"
)


class Stats(_Spec):
    """Download statistics (the server's `stats` settings), the stats API and the SQL
    database they live in, which an NpmMirror's private registry shares (its users, tokens
    and published packages)."""

    enabled: bool = _same(StatsSettings, "enabled")
    database: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of a PostgreSQL database shared by the replicas, without a"
            " password: 'postgresql://entrepot@db.example.com:5432/entrepot'. It holds the"
            " download counts and, in an NpmMirror, the private registry (users, tokens,"
            " published packages' metadata). Unset: an SQLite file in the cache volume,"
            " which needs replicas: 1."
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


# --- Scheduling and resources: the pod spec's own types (core/v1) ---------------------------
# Typed as controller-gen writes them, plus the enums and cross-field rules the API server
# checks on a pod: a spec it would refuse in the Deployment is refused in the mirror,
# instead of being admitted and then stuck. Each is kept as the dict the user wrote (AsDict).


class ResourceClaim(_Spec):
    name: str = Field(description="Name of an entry in the pod's resourceClaims.", min_length=1)
    request: str | None = Field(default=None, description="A request within that claim.")


REQUEST_OVER_LIMIT = "resources: a request must not exceed the limit of the same resource"
RESOURCES_RULES = [
    {
        "rule": "!has(self.requests) || !has(self.limits) || self.requests.all(k,"
        " !(k in self.limits) || !isQuantity(string(self.requests[k]))"
        " || !isQuantity(string(self.limits[k]))"
        " || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
        "message": REQUEST_OVER_LIMIT,
    }
]


class ResourceRequirements(_Spec):
    """The container's requests and limits (cpu, memory, ephemeral-storage, ...)."""

    model_config = _cel(*RESOURCES_RULES)

    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=32, description="Most the container may use, per resource."
    )
    requests: dict[str, Quantity] | None = Field(
        default=None, max_length=32, description="What the scheduler reserves, per resource."
    )
    claims: list[ResourceClaim] | None = Field(
        default=None, max_length=16, description="Dynamic resource claims the container uses."
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for name, request in (self.requests or {}).items():
            limit = (self.limits or {}).get(name)
            if limit is not None and quantity(request) > quantity(limit):
                raise ValueError(REQUEST_OVER_LIMIT)
        return self


KEYLESS_TOLERATION = (
    "a toleration without a key must have operator: Exists (it tolerates every taint)"
)
EXISTS_WITH_VALUE = "a toleration with operator: Exists must not have a value"
SECONDS_WITHOUT_NO_EXECUTE = "tolerationSeconds needs effect: NoExecute"
TOLERATION_RULES = [
    {
        "rule": "(has(self.key) && self.key != '')"
        " || (has(self.operator) && self.operator == 'Exists')",
        "message": KEYLESS_TOLERATION,
    },
    {
        "rule": "!has(self.operator) || self.operator != 'Exists'"
        " || !has(self.value) || self.value == ''",
        "message": EXISTS_WITH_VALUE,
    },
    {
        "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        "message": SECONDS_WITHOUT_NO_EXECUTE,
    },
]


class Toleration(_Spec):
    """A taint the mirror's pods tolerate."""

    model_config = _cel(*TOLERATION_RULES)

    key: str | None = Field(default=None, description="Taint key; empty with Exists: every taint.")
    operator: Literal["Exists", "Equal", ""] | None = Field(
        default=None, description="Equal (default) compares the value; Exists matches any."
    )
    value: str | None = Field(default=None, description="Taint value, with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if not self.key and self.operator != "Exists":
            raise ValueError(KEYLESS_TOLERATION)
        if self.operator == "Exists" and self.value:
            raise ValueError(EXISTS_WITH_VALUE)
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(SECONDS_WITHOUT_NO_EXECUTE)
        return self


class LabelSelectorRequirement(_Spec):
    key: str = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key's value is matched."
    )
    values: list[str] | None = Field(default=None, description="Values for In and NotIn.")


class LabelSelector(_Spec):
    match_labels: dict[str, str] | None = Field(default=None, description="Labels to match.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, description="Requirements, all of which must match."
    )


class NodeSelectorRequirement(_Spec):
    key: str = Field(description="Node label (or field) key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="How the key's value is matched."
    )
    values: list[str] | None = Field(default=None, description="Values (one integer for Gt/Lt).")


class NodeSelectorTerm(_Spec):
    match_expressions: list[NodeSelectorRequirement] | None = Field(
        default=None, description="Requirements on node labels."
    )
    match_fields: list[NodeSelectorRequirement] | None = Field(
        default=None, description="Requirements on node fields."
    )


class NodeSelector(_Spec):
    node_selector_terms: list[NodeSelectorTerm] = Field(description="Terms, any of which match.")


class PreferredSchedulingTerm(_Spec):
    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    preference: NodeSelectorTerm = Field(description="The nodes preferred.")


class NodeAffinity(_Spec):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        Field(default=None, description="Nodes the pods prefer.")
    )


class PodAffinityTerm(_Spec):
    label_selector: LabelSelector | None = Field(default=None, description="Pods to match.")
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces of the pods to match."
    )
    namespaces: list[str] | None = Field(default=None, description="Namespaces, by name.")
    topology_key: str = Field(min_length=1, description="Node label that defines a domain.")
    match_label_keys: list[str] | None = Field(
        default=None, description="Label keys whose values (from this pod) must match."
    )
    mismatch_label_keys: list[str] | None = Field(
        default=None, description="Label keys whose values (from this pod) must not match."
    )


class WeightedPodAffinityTerm(_Spec):
    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(_Spec):
    """Pod affinity or anti-affinity (the same shape)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        default=None, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        Field(default=None, description="Terms preferred.")
    )


class Affinity(_Spec):
    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Pod anti-affinity.")


MIN_DOMAINS_NEED_DO_NOT_SCHEDULE = "minDomains needs whenUnsatisfiable: DoNotSchedule"
SPREAD_RULES = [
    {
        "rule": "!has(self.minDomains) || self.whenUnsatisfiable == 'DoNotSchedule'",
        "message": MIN_DOMAINS_NEED_DO_NOT_SCHEDULE,
    }
]


class TopologySpreadConstraint(_Spec):
    """How the mirror's pods spread across a topology (nodes, zones)."""

    model_config = _cel(*SPREAD_RULES)

    max_skew: int = Field(ge=1, description="Largest allowed difference in pod counts.")
    topology_key: str = Field(min_length=1, description="Node label that defines a domain.")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        description="What to do when the skew cannot be met."
    )
    label_selector: LabelSelector | None = Field(default=None, description="Pods counted.")
    min_domains: int | None = Field(
        default=None, ge=1, description="Minimum eligible domains (with DoNotSchedule)."
    )
    node_affinity_policy: Literal["Honor", "Ignore"] | None = Field(
        default=None, description="Whether node affinity limits the domains counted."
    )
    node_taints_policy: Literal["Honor", "Ignore"] | None = Field(
        default=None, description="Whether node taints limit the domains counted."
    )
    match_label_keys: list[str] | None = Field(
        default=None, description="Label keys whose values (from this pod) select the pods counted."
    )

    @model_validator(mode="after")
    def _min_domains(self) -> TopologySpreadConstraint:
        if self.min_domains is not None and self.when_unsatisfiable != "DoNotSchedule":
            raise ValueError(MIN_DOMAINS_NEED_DO_NOT_SCHEDULE)
        return self


@dataclass(frozen=True)
class SecretFile:
    """A Secret key a spec mounts into the mirror's pods: ``file`` under SECRETS_DIR (the
    name the rendered config points the server at), ``field`` where the spec names it."""

    field: str
    ref: SecretKeyRef
    file: str


class MirrorSpec(_Spec):
    """What every mirror has, whatever it serves: a Deployment of `entrepot serve`, its
    Service, cache volume, scheduling, monitoring and statistics. The kinds add their
    protocol's settings (ModuleMirrorSpec.go, NpmMirrorSpec.npm)."""

    replicas: int = Field(default=1, ge=1, le=50, description="Mirror pods.")
    image: str | None = Field(
        default=None, description="Image override (default: the operator's configured image)."
    )
    image_pull_secrets: list[SecretName] = Field(
        default_factory=list, max_length=32, description="Secrets to pull the image with (names)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The server's log level."
    )
    limits: Limits = Field(default_factory=Limits)
    storage: Storage = Field(default_factory=Storage)
    service: Service = Field(default_factory=Service)
    ingress: Ingress | None = Field(default=None, description="Expose through an Ingress.")
    monitoring: Monitoring = Field(default_factory=Monitoring)
    stats: Stats = Field(default_factory=Stats)
    # The pod spec's own types, kept as dicts (AsDict): render passes them through.
    resources: Annotated[dict[str, Any], AsDict(ResourceRequirements)] | None = Field(
        default=None, description="Container resources (requests/limits)."
    )
    node_selector: dict[str, str] | None = Field(default=None, description="Pod nodeSelector.")
    tolerations: list[Annotated[dict[str, Any], AsDict(Toleration)]] | None = Field(
        default=None, max_length=64, description="Pod tolerations."
    )
    affinity: Annotated[dict[str, Any], AsDict(Affinity)] | None = Field(
        default=None, description="Pod affinity."
    )
    topology_spread_constraints: (
        list[Annotated[dict[str, Any], AsDict(TopologySpreadConstraint)]] | None
    ) = Field(default=None, max_length=16, description="Pod topologySpreadConstraints.")

    @model_validator(mode="after")
    def _shared_cache(self) -> MirrorSpec:
        if (
            self.replicas > 1
            and self.storage.empty_dir is None
            and (self.storage.access_mode != "ReadWriteMany")
        ):
            raise ValueError(REPLICAS_NEED_SHARED_STORAGE)
        if self.replicas > 1 and self.stats.database is None:
            problem = self.unshared_database()
            if problem is not None:
                raise ValueError(problem)
        return self

    def unshared_database(self) -> str | None:
        """Why this spec needs stats.database once replicas > 1 (the CEL rule's message), or
        None: what would live in the SQLite file of the cache volume, which pods cannot
        share."""
        return REPLICAS_NEED_A_STATS_DATABASE if self.stats.enabled else None

    def protocol_secret_files(self) -> list[SecretFile]:
        """The Secret keys of the kind's own settings (credentials, keys)."""
        return []

    def secret_files(self) -> list[SecretFile]:
        """Every Secret key mounted into the pods, in a fixed order (the pod template's)."""
        files = self.protocol_secret_files()
        if self.stats.password_secret is not None:
            files.append(
                SecretFile(
                    "spec.stats.passwordSecret", self.stats.password_secret, "stats-password"
                )
            )
        return files

    def token_hosts(self) -> list[tuple[str, str]]:
        """(field, host): the hosts the mirror sends credentials from a Secret to."""
        return []


class ModuleMirrorSpec(MirrorSpec):
    """A Go module mirror: a Deployment of `entrepot serve`, its Service, cache and config."""

    go: GoSpec
    credentials: Credentials = Field(default_factory=Credentials)

    def protocol_secret_files(self) -> list[SecretFile]:
        creds = self.credentials
        files: list[SecretFile] = []
        for field, ref, file in (
            ("spec.credentials.netrc", creds.netrc, "netrc"),
            ("spec.credentials.gitConfig", creds.git_config, "gitconfig"),
            ("spec.credentials.gitCredentials", creds.git_credentials, "git-credentials"),
        ):
            if ref is not None:
                files.append(SecretFile(field, ref, file))
        for i, token in enumerate(creds.bearer_tokens):
            files.append(SecretFile(f"spec.credentials.bearerTokens[{i}]", token, f"token-{i}"))
        for i, db in enumerate(self.go.sumdb.databases or []):
            if db.key_secret is not None:
                field = f"spec.go.sumdb.databases[{i}].keySecret"
                files.append(SecretFile(field, db.key_secret, f"sumdb-key-{i}"))
        return files

    def token_hosts(self) -> list[tuple[str, str]]:
        return [
            (f"spec.credentials.bearerTokens[{i}].host", t.host)
            for i, t in enumerate(self.credentials.bearer_tokens)
        ]


REGISTRY_URL_PATTERN = r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"


class NpmCredentials(_Spec):
    """Upstream credentials from Secrets, mounted into the mirror's pods as files (the server's
    `npm.credentials`). The operator never reads their contents; the server never logs them."""

    token_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "A Secret key holding a bearer token sent to the upstream registry only (the"
            " server's npm.credentials.token_file)."
        ),
    )
    npmrc_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "A Secret key holding an .npmrc whose '//host/path/:_authToken' or ':_auth' line"
            " for the upstream is used (the server's npm.credentials.npmrc_file)."
        ),
    )


# npm's user name rule (npm-user-validate), as the server checks it (entrepot.npm.users): an
# administrator's name it would refuse at start is refused at admission instead.
NPM_USER_PATTERN = r"^[a-z0-9_-][a-z0-9._~-]{0,213}$"
NpmUserName = Annotated[
    str,
    StringConstraints(max_length=214),
    matching(
        NPM_USER_PATTERN,
        "must be an npm user name: lower-case letters, digits and . _ ~ - (not first: .), at"
        " most 214 characters",
    ),
]
PUBLISH_RULE_RULES = [
    {
        "rule": "!has(self.allow) || self.allow != 'users' || (has(self.users)"
        " && size(self.users) > 0)",
        "message": USERS_NEED_NAMES,
    }
]


class PublishRule(_Spec):
    """Who may publish (and then maintain) the packages whose names match packages (the
    server's rule); allow: users must name at least one user."""

    model_config = _cel(*PUBLISH_RULE_RULES)

    packages: list[str] = _same(ServerPublishRule, "packages")
    allow: Literal["authenticated", "users", "nobody"] = _same(ServerPublishRule, "allow")
    users: list[NpmUserName] = _same(ServerPublishRule, "users")

    _names = field_validator("packages")(classmethod(lambda cls, v: _check_name_globs(v)))

    @model_validator(mode="after")
    def _users_named(self) -> PublishRule:
        if self.allow == "users" and not self.users:
            raise ValueError(USERS_NEED_NAMES)
        return self


class NpmRegistrySpec(_Spec):
    """The private registry on top of the mirror (the server's `npm.registry`): users,
    tokens, publishing. Its users, tokens and published packages' metadata live in the
    database of spec.stats (an SQLite file in the cache volume unless stats.database names a
    PostgreSQL database); published tarballs in the cache volume."""

    enabled: bool = _same(NpmRegistry, "enabled")
    self_registration: bool = Field(
        default=False,
        description=(
            "`npm adduser` may create users. Off by default in a cluster (anyone who reaches"
            " the Service could sign up): users come from adminPasswordSecret and from"
            " `entrepot user add` run in a pod (docs/operator.md)."
        ),
    )
    admin_user: NpmUserName = _same(NpmRegistry, "admin_user")
    admin_password_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "A Secret key holding the administrator's password, mounted read-only into the"
            " mirror's pods (the server's admin_password_file): the user adminUser is created,"
            " or given this password, at start. Unset: no administrator is made."
        ),
    )
    publish: list[PublishRule] = Field(
        default_factory=lambda: [PublishRule(packages=["*"])],
        max_length=64,
        description=(
            "Who may publish what; the first rule whose pattern matches a name decides, and"
            " names no rule matches cannot be published. Unset: any user of this registry"
            " may publish any name."
        ),
    )
    trusted_proxies: list[str] = _same(NpmRegistry, "trusted_proxies")
    login_attempts: int = _same(NpmRegistry, "login_attempts")
    login_window: Duration = _same(NpmRegistry, "login_window")

    _networks = field_validator("trusted_proxies")(
        classmethod(lambda cls, v: NpmRegistry._networks(v))
    )


WILDCARD_NEEDS_PUBLIC_URL = (
    "an Ingress for a wildcard host cannot name the registry's URL: set npm.publicUrl"
    " (tarball URLs are written under it)"
)


class NpmSpec(_Spec):
    """The npm registry mirror: the same settings as the server's `npm` section, served at the
    mirror's root."""

    upstream: str = Field(
        description=(
            "The upstream registry URL (a '/' is added at the end if missing), e.g."
            " 'https://registry.example.com/'."
        ),
        json_schema_extra={"pattern": REGISTRY_URL_PATTERN},
    )
    public_url: str | None = _same(
        NpmSettings,
        "public_url",
        description=(
            "The registry URL clients use, under which tarball URLs are written. Unset: the"
            " Ingress URL when spec.ingress is set (https with tlsSecretName), else the"
            " Service URL http://NAME.NAMESPACE.svc:PORT/."
        ),
        schema={"pattern": REGISTRY_URL_PATTERN},
    )
    credentials: NpmCredentials = Field(default_factory=NpmCredentials)
    cache: NpmCache = Field(default_factory=NpmCache)
    policy: NpmPolicy = Field(default_factory=NpmPolicy)
    upstream_timeout: Duration = _same(NpmSettings, "upstream_timeout")
    tarball_deadline: Duration = _same(NpmSettings, "tarball_deadline")
    min_transfer_rate: int = _same(NpmSettings, "min_transfer_rate")
    max_packument_bytes: int = _same(NpmSettings, "max_packument_bytes")
    max_tarball_bytes: int = _same(NpmSettings, "max_tarball_bytes")
    registry: NpmRegistrySpec = Field(default_factory=NpmRegistrySpec)

    _urls = field_validator("upstream", "public_url")(
        classmethod(lambda cls, v: _check_registry_url(v))
    )


class NpmMirrorSpec(MirrorSpec):
    """An npm registry mirror: a Deployment of `entrepot serve` serving npm at its root."""

    npm: NpmSpec

    @model_validator(mode="after")
    def _public_url(self) -> NpmMirrorSpec:
        if (
            self.ingress is not None
            and self.ingress.host.startswith("*.")
            and self.npm.public_url is None
        ):
            raise ValueError(WILDCARD_NEEDS_PUBLIC_URL)
        return self

    def unshared_database(self) -> str | None:
        """The private registry's users and packages live in the same database as the
        download counts: stats.enabled: false is no way out while the registry is on."""
        if self.stats.enabled or self.npm.registry.enabled:
            return REPLICAS_NEED_A_REGISTRY_DATABASE
        return None

    def protocol_secret_files(self) -> list[SecretFile]:
        creds = self.npm.credentials
        files: list[SecretFile] = []
        if creds.token_secret is not None:
            files.append(
                SecretFile("spec.npm.credentials.tokenSecret", creds.token_secret, "npm-token")
            )
        if creds.npmrc_secret is not None:
            files.append(
                SecretFile("spec.npm.credentials.npmrcSecret", creds.npmrc_secret, "npmrc")
            )
        admin = self.npm.registry.admin_password_secret
        if admin is not None:
            files.append(
                SecretFile("spec.npm.registry.adminPasswordSecret", admin, "npm-admin-password")
            )
        return files

    def token_hosts(self) -> list[tuple[str, str]]:
        """With credentials, the upstream's host receives them (the token, or the .npmrc's
        line for it): where the spec's author points the upstream, the Secret goes."""
        creds = self.npm.credentials
        if creds.token_secret is None and creds.npmrc_secret is None:
            return []
        return [("spec.npm.upstream host", urlsplit(self.npm.upstream).hostname or "")]


REPLICAS_NEED_SHARED_STORAGE = (
    "replicas > 1 needs a shared cache: set storage.accessMode: ReadWriteMany"
    " (a ReadWriteOnce volume can be mounted by one node only), or use storage.emptyDir;"
    " on an existing mirror neither can change: create a new mirror"
)

REPLICAS_NEED_A_STATS_DATABASE = (
    "replicas > 1 counts downloads in one shared database: set stats.database (PostgreSQL),"
    " or stats.enabled: false (an SQLite file cannot be shared by pods)"
)

REPLICAS_NEED_A_REGISTRY_DATABASE = (
    "replicas > 1 keeps the private registry's users, tokens and published packages (and the"
    " download counts) in one shared database: set stats.database (PostgreSQL), or both"
    " npm.registry.enabled: false and stats.enabled: false (an SQLite file cannot be shared"
    " by pods)"
)

# Cross-field rules the API server checks itself (CEL), so a bad spec never reaches us:
# SPEC_RULES for both kinds, then each kind's own (the database rule differs: an NpmMirror's
# registry lives in the stats database too).
SPEC_RULES = [
    {
        "rule": "self.replicas <= 1 || has(self.storage.emptyDir)"
        " || self.storage.accessMode == 'ReadWriteMany'",
        "message": REPLICAS_NEED_SHARED_STORAGE,
        "fieldPath": ".storage.accessMode",
    },
]
MODULE_SPEC_RULES = [
    {
        "rule": "self.replicas <= 1 || (has(self.stats) && (has(self.stats.database)"
        " || (has(self.stats.enabled) && !self.stats.enabled)))",
        "message": REPLICAS_NEED_A_STATS_DATABASE,
        "fieldPath": ".stats.database",
    },
]
NPM_SPEC_RULES = [
    {
        "rule": "self.replicas <= 1 || (has(self.stats) && has(self.stats.database))"
        " || (has(self.stats) && has(self.stats.enabled) && !self.stats.enabled"
        " && has(self.npm.registry) && has(self.npm.registry.enabled)"
        " && !self.npm.registry.enabled)",
        "message": REPLICAS_NEED_A_REGISTRY_DATABASE,
        "fieldPath": ".stats.database",
    },
    {
        "rule": "!has(self.ingress) || !self.ingress.host.startsWith('*.')"
        " || has(self.npm.publicUrl)",
        "message": WILDCARD_NEEDS_PUBLIC_URL,
        "fieldPath": ".npm.publicUrl",
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


# The PVC's class and access mode are immutable and it cannot shrink: a change the API server
# would refuse on the PVC is refused here, at admission, with the way out. Transition rules
# (oldSelf) are CEL-only: the operator sees one spec at a time. The has() guards are for the
# API server's check of the `storage: {}` default, where the fields are not filled in yet.
def _storage_fixed(field: str, what: str, new: str) -> str:
    return (
        f"storage.{field} cannot change on an existing mirror ({what}): create a new"
        f" mirror with the new {new} and delete this one"
    )


ACCESS_MODE_FIXED = _storage_fixed("accessMode", "the PVC's access mode is immutable", "mode")
STORAGE_CLASS_FIXED = _storage_fixed("storageClassName", "the PVC's class is immutable", "class")
VOLUME_KIND_FIXED = _storage_fixed(
    "emptyDir", "a mirror keeps the kind of cache volume it was created with", "storage"
)
SIZE_SHRINKS = (
    "storage.size cannot decrease (a PVC cannot shrink): keep the size, or create a new"
    " mirror with the smaller size and delete this one"
)
_PVC_BOTH = "has(self.emptyDir) || has(oldSelf.emptyDir) || "
STORAGE_RULES = [
    {
        "rule": "has(self.emptyDir) == has(oldSelf.emptyDir)",
        "message": VOLUME_KIND_FIXED,
        "fieldPath": ".emptyDir",
    },
    {
        "rule": _PVC_BOTH + "!has(self.accessMode) || !has(oldSelf.accessMode)"
        " || self.accessMode == oldSelf.accessMode",
        "message": ACCESS_MODE_FIXED,
        "fieldPath": ".accessMode",
    },
    {
        "rule": _PVC_BOTH + "(has(self.storageClassName) ? has(oldSelf.storageClassName)"
        " && self.storageClassName == oldSelf.storageClassName"
        " : !has(oldSelf.storageClassName))",
        "message": STORAGE_CLASS_FIXED,
        "fieldPath": ".storageClassName",
    },
    {
        "rule": _PVC_BOTH + "!has(self.size) || !has(oldSelf.size)"
        " || !isQuantity(self.size) || !isQuantity(oldSelf.size)"
        " || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
        "message": SIZE_SHRINKS,
        "fieldPath": ".size",
    },
]

# The name becomes the Service's name and the value of the instance label.
BAD_NAME = (
    "a mirror's name is also its Service's name and a label value: at most 63"
    " characters, lower case letters, digits and '-', starting with a letter and ending with"
    " a letter or digit (a DNS-1035 label, no dots), such as 'go-mirror'"
)
NAME_RULES = [
    {
        "rule": "self.metadata.name.size() <= 63"
        f" && self.metadata.name.matches(r'{DNS_LABEL_PATTERN}')",
        "message": BAD_NAME,
        "fieldPath": ".metadata",  # .metadata.name is not in the schema
    }
]


def check_mirror_name(name: str) -> str:
    """The NAME_RULES check, for a mirror the operator reads."""
    if len(name) > 63 or re.fullmatch(DNS_LABEL_PATTERN, name) is None:
        raise ValueError(BAD_NAME)
    return name


ONE_KEY = "a checksum database needs exactly one of 'key' (inline) or 'keySecret' (a Secret key)"
DATABASE_RULES = [{"rule": "has(self.key) != has(self.keySecret)", "message": ONE_KEY}]


class Condition(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    type: Literal["Ready", "Progressing", "Degraded", "Drifted"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None


class MirrorStatus(BaseModel):
    """The status of either kind (the CRD gives url the kind's own description)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    url: str | None = Field(default=None, description="The mirror's URL.")
    config_hash: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


ModuleMirrorStatus = MirrorStatus
