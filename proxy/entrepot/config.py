"""Configuration: one pydantic model, read once at start-up and passed down.

Sources, lowest priority first: the defaults below, a YAML/JSON config file, ``ENTREPOT_*``
environment variables (nested fields joined by ``__``, e.g. ``ENTREPOT_GO__PROXY``), and the
command-line flags. When nothing sets ``go.proxy`` the upstream chain comes from the user's own
Go configuration (``GOPROXY`` in the environment, else ``go env GOPROXY``), and private paths
(``GONOPROXY``/``GOPRIVATE``) are routed to ``direct`` as the go command itself would do.

The same models will generate the operator's CRD schema, so every field has a description, a
default and bounds; docs/configuration.md is generated from them (``entrepot config-reference``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from entrepot.errors import ConfigError
from entrepot.gomod.module import match_prefix_patterns
from entrepot.sumdb.note import parse_verifier_key

ENV_PREFIX = "ENTREPOT_"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"


def parse_duration(value: object) -> float:
    """Parse ``"90s"``, ``"5m"``, ``"1h30m"``, ``"7d"`` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string such as '30s', '5m', '1h' or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str) or not re.fullmatch(DURATION_PATTERN, value.strip()):
        raise ValueError(
            f"invalid duration {value!r}: use a number with a unit, e.g. '30s', '5m', '1h30m', '7d'"
        )
    return sum(
        float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(value.strip())
    )


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, e.g. ``5400.0`` → ``"1h30m"``."""
    if seconds == 0:
        return "0s"
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]


@dataclass(frozen=True)
class ProxyEntry:
    """One element of a GOPROXY-style list.

    ``fall_back_on_error`` is Go's rule: the separator *after* an entry decides whether any
    error (``|``) or only 404/410 (``,``) moves on to the next entry.
    """

    url: str  # an http(s):// or file:// base URL, or "direct" / "off"
    fall_back_on_error: bool

    @property
    def kind(self) -> Literal["proxy", "file", "direct", "off"]:
        if self.url in ("direct", "off"):
            return "direct" if self.url == "direct" else "off"
        return "file" if self.url.startswith("file://") else "proxy"


def parse_proxy_list(value: str) -> list[ProxyEntry]:
    """Parse a GOPROXY value (``a,b|c,direct``) as ``cmd/go/internal/modfetch`` does."""
    entries: list[ProxyEntry] = []
    rest = value.strip()
    while rest:
        i = min((p for p in (rest.find(","), rest.find("|")) if p >= 0), default=-1)
        item, sep = (rest, "") if i < 0 else (rest[:i], rest[i])
        rest = "" if i < 0 else rest[i + 1 :]
        item = item.strip()
        if not item:
            continue
        if item == "noproxy":
            raise ValueError("'noproxy' is not a valid upstream; use a route instead")
        if item not in ("direct", "off"):
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https", "file") or (
                parts.scheme != "file" and not parts.netloc
            ):
                raise ValueError(
                    f"invalid upstream {item!r}: use an http(s):// or file:// URL, "
                    "'direct' or 'off', separated by ',' or '|'"
                )
            item = item.rstrip("/")
        entries.append(ProxyEntry(url=item, fall_back_on_error=sep == "|"))
    if not entries:
        raise ValueError("the upstream list is empty; give at least one URL, 'direct' or 'off'")
    return entries


def _check_proxy_list(value: str | None) -> str | None:
    if value is not None:
        parse_proxy_list(value)
    return value


def _check_patterns(value: str) -> str:
    """Normalise to ``a,b`` (no blanks): ``"a, b"`` once made `` b`` a glob that matched
    nothing, so a denied private path went to the public upstream with its token."""
    globs = [g.strip() for g in value.split(",") if g.strip()]
    if not globs:
        raise ValueError("patterns must name at least one module path glob, e.g. 'example.com'")
    if any(len(g.split()) > 1 for g in globs):
        raise ValueError("a module path glob cannot contain white space; separate globs with ','")
    normal = ",".join(globs)
    match_prefix_patterns(normal, "example.com/probe")  # raises ValueError on a bad glob
    return normal


def pattern_warnings(value: str, *, where: str) -> list[str]:
    """Globs that are valid syntax but surely not what was meant: they can never match a
    valid module path, or they leave out the path they name."""
    out = []
    for glob in (g.strip() for g in value.split(",")):
        if not glob:
            continue
        first = glob.split("/", 1)[0]
        if "://" in glob or ":" in first:
            out.append(
                f"{where}: {glob!r} is a URL, and patterns match module paths: it matches"
                f" nothing; write e.g. {glob.split('://', 1)[-1].split(':', 1)[0]!r}"
            )
        elif not any(c in first for c in ".*?[\\"):
            out.append(
                f"{where}: {glob!r} can never match: the first element of a module path"
                " always holds a dot (e.g. 'git.example.com')"
            )
        elif glob.endswith("/*") and not any(c in glob[:-2] for c in "*?[\\"):
            out.append(
                f"{where}: {glob!r} does not cover {glob[:-2]!r} itself; patterns match path"
                f" prefixes, so {glob[:-2]!r} alone covers it and everything below it"
            )
    return out


def settings_warnings(settings: Settings) -> list[str]:
    """What a person should hear at start-up about a configuration that loads."""
    out = []
    for i, route in enumerate(settings.go.routes or []):
        out += pattern_warnings(route.patterns, where=f"go.routes[{i}].patterns")
    sumdb = settings.go.sumdb
    if sumdb.databases == []:
        out.append(
            "go.sumdb: no checksum database (GOSUMDB=off or databases: []): modules are"
            " checked by the zip rules only, and /sumdb/ answers 404"
        )
    if sumdb.no_sum:
        out += pattern_warnings(sumdb.no_sum, where="go.sumdb.no_sum")
    for i, db in enumerate(sumdb.databases or []):
        if db.patterns:
            out += pattern_warnings(db.patterns, where=f"go.sumdb.databases[{i}].patterns")
    if sumdb.unreachable == "serve_unverified":
        out.append(
            "go.sumdb.unreachable is serve_unverified: while a database is unreachable,"
            " modules are served and cached without their checksum being checked"
        )
    return out


# Syntax checks the Kubernetes API server can run too (they go into the CRD schema); the
# Python validators below are the full rules.
_UPSTREAM = r"(direct|off|(https?|file)://[^,|\s]+)"
PROXY_LIST_PATTERN = rf"^\s*{_UPSTREAM}(\s*[,|]\s*{_UPSTREAM})*\s*[,|]?\s*$"
_GLOB = r"([A-Za-z0-9._~*?/!^+-]|\[[^\]/]+\])+"
PATTERNS_PATTERN = rf"^\s*{_GLOB}(\s*,\s*{_GLOB})*\s*,?\s*$"


class _Model(BaseModel):
    """Keys are snake_case in config files and camelCase in the CRD; both are accepted."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        loc_by_alias=False,
    )


class Route(_Model):
    """Module paths matching ``patterns`` use their own upstream chain, or are refused."""

    patterns: str = Field(
        description=(
            "Comma-separated module path globs, as in GOPRIVATE: 'corp.example.com' covers"
            " that host's paths and everything below them."
        ),
        json_schema_extra={"pattern": PATTERNS_PATTERN},
    )
    proxy: str | None = Field(
        default=None,
        description="GOPROXY-style chain for these paths, e.g. 'direct'. One of proxy/deny.",
        json_schema_extra={"pattern": PROXY_LIST_PATTERN},
    )
    deny: str | None = Field(
        default=None,
        description="Refuse these paths with 403 and this explanation. Exactly one of proxy/deny.",
    )
    sumdb: bool = Field(
        default=True,
        description=(
            "false: modules on this route are never looked up in a checksum database (as if"
            " listed in go.sumdb.no_sum); the zip rules still apply."
        ),
    )

    _patterns = field_validator("patterns")(classmethod(lambda cls, v: _check_patterns(v)))
    _proxy = field_validator("proxy")(classmethod(lambda cls, v: _check_proxy_list(v)))

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        if (self.proxy is None) == (self.deny is None):
            raise ValueError("a route needs exactly one of 'proxy' (a chain) or 'deny' (a message)")
        return self


class GoCache(_Model):
    """How long mutable answers are trusted. Immutable artifacts are cached forever."""

    list_ttl: Duration = Field(
        default=300.0, description="Age after which a cached version list is refreshed."
    )
    latest_ttl: Duration = Field(
        default=300.0, description="Age after which a cached @latest answer is refreshed."
    )
    query_ttl: Duration = Field(
        default=300.0,
        description="Age after which a cached .info of a query (branch, tag, commit) is refreshed.",
    )
    stale_while_revalidate: Duration = Field(
        default=3600.0,
        description=(
            "After its TTL, a mutable answer younger than TTL + this is served at once while a"
            " background refresh runs; an older one is refreshed before answering."
        ),
    )
    max_stale: Duration = Field(
        default=604800.0,
        description="How long a mutable answer may still be served when every upstream fails.",
    )
    negative_ttl: Duration = Field(
        default=60.0, description="How long a 'not found' answer is remembered."
    )
    error_ttl: Duration = Field(
        default=5.0,
        description=(
            "How long an upstream failure (timeout, 5xx, refused bytes) of a fetch is remembered,"
            " so a storm of requests for a failing path does not become a storm upstream."
        ),
    )
    negative_memory_bytes: int = Field(
        default=8 << 20,
        ge=0,
        description="Memory for remembered 'not found' answers and failures (oldest dropped).",
    )
    memory_bytes: int = Field(
        default=64 << 20,
        ge=0,
        description="Memory for small immutable files (.info, .mod) served without a disk read.",
    )


class Credentials(_Model):
    """Secrets for upstreams and direct fetches, read from files; never from requests or logs."""

    netrc_file: Path | None = Field(
        default=None,
        description="A netrc file: basic auth for upstream proxies and for direct VCS fetches.",
    )
    git_config_file: Path | None = Field(
        default=None,
        description="Extra git config for direct fetches (url.*.insteadOf, credential helpers).",
    )
    git_credentials_file: Path | None = Field(
        default=None, description="A git-credentials store file used by direct fetches."
    )
    bearer_tokens: dict[str, Path] = Field(
        default_factory=dict,
        description="Upstream host → file holding a bearer token sent to that host.",
    )

    @field_validator("netrc_file", "git_config_file", "git_credentials_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Relative paths mean "from where the server was started"; the go command and git run
        # in other directories, so they are made absolute once, here.
        return None if path is None else path.absolute()

    @field_validator("bearer_tokens")
    @classmethod
    def _absolute_tokens(cls, tokens: dict[str, Path]) -> dict[str, Path]:
        return {host: path.absolute() for host, path in tokens.items()}


class Direct(_Model):
    """Fetching from version control with the go command, in an isolated GOPATH."""

    go_binary: str = Field(default="go", description="The go command used for 'direct'.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Direct fetches running at once.")
    timeout: Duration = Field(
        default=600.0,
        description=(
            "Total time limit of one direct fetch; the go command and every git process it"
            " started are killed when it passes."
        ),
    )
    queue: int = Field(
        default=32,
        ge=0,
        le=10_000,
        description=(
            "Direct fetches that may wait for a free slot; one more is answered 503 at once."
        ),
    )
    queue_timeout: Duration = Field(
        default=30.0,
        description="How long a direct fetch may wait for a free slot before it is answered 503.",
    )
    insecure: str = Field(
        default="", description="GOINSECURE globs: module paths that may be fetched over http."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for the go command (e.g. GOVCS, GIT_SSH_COMMAND).",
    )


SUMDB_NAME_PATTERN = r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$"
KEY_PATTERN = r"^[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$"


def _check_key(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_verifier_key(value.strip())
        except ConfigError as e:  # InvalidKeyError: say it as a field error, with the field
            raise ValueError(
                f"invalid verifier key ({e.message}): want '<name>+<8 hex digits>+<base64"
                " Ed25519 key>', the first field of GOSUMDB as the database's operator"
                " publishes it"
            ) from e
        return value.strip()
    return value


class SumDatabase(_Model):
    """A checksum database: served at ``/sumdb/<name>/`` and checked before a module is stored."""

    name: str = Field(
        description=(
            "The database's name, as in GOSUMDB and in its key (e.g. 'sum.example.com';"
            " a name may hold a path: 'db.example.com/sub')."
        ),
        min_length=1,
        max_length=253,
        json_schema_extra={"pattern": SUMDB_NAME_PATTERN},
    )
    key: str | None = Field(
        default=None,
        description=(
            "Verifier key '<name>+<hash>+<base64 Ed25519 key>' (GOSUMDB's first field)."
            " One of key/key_file."
        ),
        json_schema_extra={"pattern": KEY_PATTERN},
    )
    key_file: Path | None = Field(
        default=None,
        description="A file holding the verifier key (a mounted Secret). One of key/key_file.",
    )
    url: str | None = Field(
        default=None,
        description="Where 'direct' reaches the database. Unset: https://<name>.",
        json_schema_extra={"pattern": r"^https?://\S+$"},
    )
    proxy: str | None = Field(
        default=None,
        description=(
            "GOPROXY-style chain to reach the database through: each proxy's"
            " /sumdb/<name> is used once it answers /supported, 'direct' is the database's"
            " url, 'off' stops (only cached answers are served). Unset: go.proxy, as the go"
            " command does."
        ),
        json_schema_extra={"pattern": PROXY_LIST_PATTERN},
    )
    patterns: str | None = Field(
        default=None,
        description=(
            "Module path globs this database vouches for. Unset: every module not matched by"
            " no_sum or by an earlier database's patterns."
        ),
        json_schema_extra={"pattern": PATTERNS_PATTERN},
    )

    _key = field_validator("key")(classmethod(lambda cls, v: _check_key(v)))

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(SUMDB_NAME_PATTERN, value) or any(
            part in (".", "..") for part in value.split("/")
        ):
            raise ValueError(
                f"{value!r} is not a checksum database name: a host name, optionally with a"
                " path (e.g. 'sum.example.com' or 'db.example.com/sub')"
            )
        return value

    _proxy = field_validator("proxy")(classmethod(lambda cls, v: _check_proxy_list(v)))
    _patterns = field_validator("patterns")(
        classmethod(lambda cls, v: None if v is None else _check_patterns(v))
    )

    @field_validator("key_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.absolute() if path is not None else None

    @model_validator(mode="after")
    def _one_key(self) -> SumDatabase:
        if (self.key is None) == (self.key_file is None):
            raise ValueError("a checksum database needs exactly one of 'key' or 'key_file'")
        if self.key is not None and self.key.split("+", 1)[0] != self.name:
            raise ValueError(
                f"the key names database {self.key.split('+', 1)[0]!r}, not {self.name!r}"
            )
        return self

    @property
    def direct_url(self) -> str:
        return (self.url or f"https://{self.name}").rstrip("/")


class SumdbSettings(_Model):
    """Checksum databases: verify every module before it is cached, and serve /sumdb/."""

    databases: list[SumDatabase] | None = Field(
        default=None,
        description=(
            "The databases. Unset: the server's GOSUMDB (else `go env GOSUMDB`; for the go"
            " command's built-in default its key is read from the local toolchain);"
            " an empty list (or GOSUMDB=off) turns verification off, with a warning."
        ),
    )
    no_sum: str | None = Field(
        default=None,
        description=(
            "Module path globs never sent to a database (checked by the zip rules only)."
            " Unset: GONOSUMDB, else GOPRIVATE, of the server's Go environment."
        ),
        json_schema_extra={"pattern": rf"^({PATTERNS_PATTERN[1:-1]})?$"},
    )
    unreachable: Literal["refuse", "serve_unverified"] = Field(
        default="refuse",
        description=(
            "A module not yet verified while its database cannot be reached: 'refuse' (503,"
            " nothing stored) or 'serve_unverified' (served and marked in the access log and"
            " entrepot_sumdb_unverified_total; verified on a later serve)."
        ),
    )
    latest_ttl: Duration = Field(
        default=60.0,
        description=(
            "Age after which a database's signed tree head (/latest) is fetched again;"
            " go.cache.stale_while_revalidate and max_stale apply as for lists."
        ),
    )

    _no_sum = field_validator("no_sum")(classmethod(lambda cls, v: check_no_sum(v)))

    @model_validator(mode="after")
    def _distinct(self) -> SumdbSettings:
        check_distinct_names([d.name for d in self.databases or []])
        return self


def check_no_sum(value: str | None) -> str | None:
    """No-sum globs, normalised; empty stays empty (nothing exempt)."""
    if value is None or not value.strip(","):
        return value if value is None else ""
    return _check_patterns(value)


def check_distinct_names(names: list[str]) -> None:
    if len(names) != len(set(names)):
        raise ValueError(f"database names must be distinct: {names}")


class GoSettings(_Model):
    """The Go module proxy."""

    enabled: bool = Field(
        default=True,
        description="Serve the Go module proxy and checksum databases (false: an npm-only mirror).",
    )
    proxy: str | None = Field(
        default=None,
        description=(
            "Upstream chain in GOPROXY syntax ('https://a.example.com,https://b.example.com|direct')."
            " Unset: GOPROXY of the server's environment, else `go env GOPROXY`."
        ),
        json_schema_extra={"pattern": PROXY_LIST_PATTERN},
    )
    routes: list[Route] | None = Field(
        default=None,
        description=(
            "Per-path chains or refusals, first match wins. Unset: GONOPROXY/GOPRIVATE of the"
            " server's environment are routed to 'direct'."
        ),
    )
    cache: GoCache = Field(default_factory=GoCache)
    direct: Direct = Field(default_factory=Direct)
    credentials: Credentials = Field(default_factory=Credentials)
    sumdb: SumdbSettings = Field(default_factory=SumdbSettings)
    upstream_timeout: Duration = Field(
        default=60.0,
        description=(
            "Connect/read timeout for upstream proxies, and the total time limit of a small"
            " answer (list, .info, .mod, @latest)."
        ),
    )
    zip_deadline: Duration = Field(
        default=600.0, description="Total time limit of one zip download from an upstream proxy."
    )
    min_transfer_rate: int = Field(
        default=1024,
        ge=0,
        description=(
            "Bytes per second an upstream transfer (proxy or git) must average over"
            " min_rate_window, else it is aborted; 0 turns the check off."
        ),
    )
    min_rate_window: Duration = Field(
        default=30.0, description="The window over which min_transfer_rate is measured."
    )
    max_zip_bytes: int = Field(
        default=500 << 20,
        ge=1,
        le=500 << 20,
        description="Largest module zip accepted (the Go limit is 500 MiB).",
    )

    _proxy = field_validator("proxy")(classmethod(lambda cls, v: _check_proxy_list(v)))


class Limits(_Model):
    """Bounds that keep one server process answering under pressure (per worker)."""

    header_timeout: Duration = Field(
        default=10.0,
        description="Time a client has to send a request's line and headers; then it is dropped.",
    )
    keepalive_timeout: Duration = Field(
        default=15.0, description="An idle keep-alive connection is closed after this."
    )
    max_connections: int = Field(
        default=2000,
        ge=1,
        description=(
            "Open client connections per worker; past it a new connection gets 503 and is"
            " closed. Lowered at start-up to what the file-descriptor limit allows."
        ),
    )
    max_fetches: int = Field(
        default=512,
        ge=1,
        description=(
            "Distinct upstream fetches in flight per worker; past it a cold request gets 503"
            " (cached answers are still served)."
        ),
    )
    min_send_rate: int = Field(
        default=64 << 10,
        ge=0,
        description=(
            "Bytes per second a client must read a file answer (a zip) at: one that takes"
            " longer than its size at this rate plus header_timeout is dropped; 0 turns it off."
        ),
    )
    min_free_bytes: int = Field(
        default=256 << 20,
        ge=0,
        description=(
            "Free space the cache volume must keep: below it /readyz answers 503 and cold"
            " fetches are answered 503 (cached answers are still served)."
        ),
    )


class LogSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the server's own messages."
    )
    access: bool = Field(default=True, description="Write one JSON access-log line per request.")


_DATABASE_SCHEMES = ("sqlite", "sqlite+aiosqlite", "postgres", "postgresql", "postgresql+asyncpg")


def _check_database(value: str | None) -> str | None:
    if value is not None:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in _DATABASE_SCHEMES:
            raise ValueError(
                "want an SQLite file ('sqlite:////var/lib/entrepot/stats.db') or a PostgreSQL"
                " URL ('postgresql://db.example.com:5432/entrepot', user and password as usual)"
            )
    return value


# Validation context key: False when a config is rendered for a pod (entrepot-operator), where
# the files of mounted Secrets exist and this process must not (and cannot) read them.
READ_SECRETS = "read_secrets"


class StatsSettings(_Model):
    """Download statistics: counted in memory by each worker, flushed to a SQL database."""

    enabled: bool = Field(
        default=True,
        description="Count downloads, keep the cache inventory and serve /stats/.",
    )
    database: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the statistics database. Unset: the SQLite file"
            " entrepot.db in data_dir. Several replicas need a shared PostgreSQL:"
            " 'postgresql://user:password@db.example.com:5432/entrepot' (the password is"
            " never printed)."
        ),
    )
    flush_interval: Duration = Field(
        default=5.0,
        ge=1.0,
        le=60.0,
        description=(
            "Each worker writes its counts at least this often (1s-60s): at most this much"
            " counting is lost if a worker is killed without a graceful shutdown."
        ),
    )

    database_password_file: Path | None = Field(
        default=None,
        description=(
            "A file holding the password of the PostgreSQL database (a mounted Secret), read"
            " at start and set in stats.database, which then needs no password (one there is"
            " replaced). Surrounding whitespace is ignored; the password is never printed."
        ),
    )

    _database = field_validator("database")(classmethod(lambda cls, v: _check_database(v)))

    @field_validator("database_password_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.absolute() if path is not None else None

    @model_validator(mode="after")
    def _password_from_file(self, info: ValidationInfo) -> StatsSettings:
        path = self.database_password_file
        if path is None:
            return self
        if self.database is None or not self.database.startswith("postg"):
            raise ValueError("database_password_file needs a PostgreSQL URL in stats.database")
        if not (info.context or {}).get(READ_SECRETS, True):
            return self  # rendered for another machine (the operator): the file is there
        try:
            password = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ValueError(f"database_password_file: cannot read {path}: {reason}") from None
        if not password:
            raise ValueError(f"database_password_file: {path} is empty")
        from sqlalchemy.engine import make_url  # only with a password file
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.database).set(password=password)
        except ArgumentError:
            raise ValueError("stats.database is not a database URL") from None
        # Frozen model: set the combined URL once, while validating (re-validation of a dump
        # reads the file again and sets the same password).
        object.__setattr__(self, "database", url.render_as_string(hide_password=False))
        return self


# ---------------------------------------------------------------------------------------------
# npm


_NAME_GLOB = re.compile(r"^(@[a-z0-9*?~._-]+/)?[a-z0-9*?~._-]+$")
_BLOCK_ENTRY = re.compile(r"^(@[a-z0-9*?~._-]+/)?[a-z0-9*?~._-]+(@[0-9A-Za-z.+-]+)?$")


def _check_name_globs(values: list[str], *, versions: bool = False) -> list[str]:
    form = _BLOCK_ENTRY if versions else _NAME_GLOB
    for value in values:
        if not form.match(value):
            shape = "'name', '@scope/*' or 'name@1.2.3'" if versions else "'name' or '@scope/*'"
            raise ValueError(f"{value!r} is not a package name pattern: use {shape} (lower case)")
    return values


def _check_registry_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"{value!r} is not a registry URL: use http(s)://host[:port][/path/], e.g."
            " 'https://registry.example.com/'"
        )
    return value if value.endswith("/") else value + "/"


class NpmCache(_Model):
    """How long packuments are trusted. Tarballs are immutable and cached forever."""

    packument_ttl: Duration = Field(
        default=300.0,
        description="Age after which a cached packument is revalidated with the upstream.",
    )
    stale_while_revalidate: Duration = Field(
        default=86400.0,
        description=(
            "After its TTL, a packument younger than TTL + this is served at once while a"
            " background refresh runs; an older one is refreshed before answering."
        ),
    )
    max_stale: Duration = Field(
        default=2592000.0,
        description=(
            "How long a packument may still be served when the upstream fails (stale-if-error,"
            " marked with a Warning header)."
        ),
    )
    negative_ttl: Duration = Field(
        default=60.0, description="How long an upstream 'not found' is remembered."
    )
    error_ttl: Duration = Field(
        default=5.0,
        description="How long an upstream failure (timeout, 5xx, refused bytes) is remembered.",
    )
    memory_bytes: int = Field(
        default=128 << 20,
        ge=0,
        description="Memory for computed packuments served without a disk read (per worker).",
    )


class NpmPolicy(_Model):
    """What the mirror hides or refuses, whatever the upstream holds."""

    min_release_age: Duration = Field(
        default=0.0,
        description=(
            "Versions published less than this long ago (by the upstream's 'time') are hidden"
            " and dist-tags re-pointed to the newest older version; '0s' hides nothing."
        ),
    )
    min_release_age_exempt: list[str] = Field(
        default_factory=list,
        description="Name patterns ('@corp/*', 'left-pad') the minimum release age spares.",
    )
    blocked: list[str] = Field(
        default_factory=list,
        description=(
            "Refused with 403: whole packages ('name', '@scope/*') or single versions"
            " ('name@1.2.3', hidden from the packument)."
        ),
    )
    private: list[str] = Field(
        default_factory=list,
        description=(
            "Name patterns ('@corp/*') never looked up upstream (dependency-confusion"
            " protection): they answer 404 until this registry publishes them."
        ),
    )

    _names = field_validator("min_release_age_exempt", "private")(
        classmethod(lambda cls, v: _check_name_globs(v))
    )
    _blocked = field_validator("blocked")(
        classmethod(lambda cls, v: _check_name_globs(v, versions=True))
    )


class NpmCredentials(_Model):
    """Credentials for the upstream registry, read from files (mounted Secrets), never logged."""

    token_file: Path | None = Field(
        default=None, description="A file holding a bearer token sent to the upstream only."
    )
    npmrc_file: Path | None = Field(
        default=None,
        description=(
            "An .npmrc whose '//host/path/:_authToken' or ':_auth' line for the upstream is"
            " used (other lines are ignored)."
        ),
    )


USERS_NEED_NAMES = (
    "a publish rule with allow: users needs users: the names of those who may publish"
    " (allow: nobody refuses everyone)"
)


class PublishRule(_Model):
    """Who may publish (and then maintain) the packages whose names match ``packages``."""

    packages: list[str] = Field(
        description="Name patterns ('@corp/*', 'tool', '*'); the first rule that matches applies."
    )
    allow: Literal["authenticated", "users", "nobody"] = Field(
        default="authenticated",
        description=(
            "'authenticated': any user of this registry; 'users': only those listed in"
            " users; 'nobody': publishing is refused (403)."
        ),
    )
    users: list[str] = Field(default_factory=list, description="The users of allow: users.")

    _names = field_validator("packages")(classmethod(lambda cls, v: _check_name_globs(v)))

    @model_validator(mode="after")
    def _users_named(self) -> PublishRule:
        if self.allow == "users" and not self.users:
            raise ValueError(USERS_NEED_NAMES)
        return self


class NpmRegistry(_Model):
    """The private registry on top of the mirror: users, tokens, publishing."""

    enabled: bool = Field(
        default=True,
        description=(
            "Accept logins and publishes. Packages published here shadow the upstream: a name"
            " that exists locally is never fetched from the upstream."
        ),
    )
    self_registration: bool = Field(
        default=True,
        description="`npm adduser` may create users (off: only `entrepot user add` and admins).",
    )
    admin_user: str = Field(default="admin", description="The administrator's user name.")
    admin_password_file: Path | None = Field(
        default=None,
        description=(
            "A file holding the administrator's password (a mounted Secret); the user is"
            " created, or its password set, at start."
        ),
    )
    publish: list[PublishRule] = Field(
        default_factory=lambda: [PublishRule(packages=["*"])],
        description="Who may publish what; names no rule matches cannot be published.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses or CIDR ranges of proxies whose X-Forwarded-For is believed (for"
            " CIDR-limited tokens and login limits)."
        ),
    )
    login_attempts: int = Field(
        default=10, ge=1, description="Failed logins per user (and per address) per window."
    )
    login_window: Duration = Field(
        default=300.0, description="The window failed logins are counted over."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        import ipaddress

        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
        return values


class NpmSettings(_Model):
    """The npm registry mirror."""

    enabled: bool = Field(default=True, description="Serve the npm registry mirror.")
    prefix: str = Field(
        default="/npm/",
        description=(
            "Path under which npm is served next to Go ('/npm/': the registry URL is"
            " http://HOST:PORT/npm/); '/' serves npm alone at the root (an NpmMirror)."
        ),
        json_schema_extra={"pattern": r"^/([a-z0-9._-]+/)*$"},
    )
    upstream: str | None = Field(
        default=None,
        description=(
            "The upstream registry URL. Unset: npm_config_registry of the server's"
            " environment, else `npm config get registry`."
        ),
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "The registry URL clients use, under which tarball URLs are written. Unset:"
            " http://LISTEN + prefix (the operator sets the Service or Ingress URL)."
        ),
    )
    cache: NpmCache = Field(default_factory=NpmCache)
    policy: NpmPolicy = Field(default_factory=NpmPolicy)
    credentials: NpmCredentials = Field(default_factory=NpmCredentials)
    registry: NpmRegistry = Field(default_factory=NpmRegistry)
    upstream_timeout: Duration = Field(
        default=60.0,
        description="Connect/read timeout, and the total time limit of a packument fetch.",
    )
    tarball_deadline: Duration = Field(
        default=600.0, description="Total time limit of one tarball download from the upstream."
    )
    min_transfer_rate: int = Field(
        default=1024,
        ge=0,
        description=(
            "Bytes per second an upstream transfer must average over 30s, else it is aborted;"
            " 0 turns the check off."
        ),
    )
    max_packument_bytes: int = Field(
        default=256 << 20, ge=1024, description="Largest upstream packument accepted."
    )
    max_tarball_bytes: int = Field(
        default=512 << 20, ge=1024, description="Largest tarball accepted from the upstream."
    )

    _upstream = field_validator("upstream", "public_url")(
        classmethod(lambda cls, v: _check_registry_url(v))
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"/([a-z0-9._-]+/)*", value) or "/../" in value or "/./" in value:
            raise ValueError(
                f"{value!r}: the npm prefix is '/' or a path such as '/npm/' (lower case,"
                " leading and trailing '/')"
            )
        if value != "/" and "." in value.split("/")[1]:
            raise ValueError(
                f"{value!r}: a first path element with a dot could be a Go module path; use"
                " one without ('/npm/')"
            )
        return value


class Settings(_Model):
    """Everything `entrepot serve` reads."""

    listen: str = Field(
        default="127.0.0.1:8080",
        description="HOST:PORT to listen on ('[::1]:8080' for IPv6, '0.0.0.0:8080' in a pod).",
    )
    data_dir: Path = Field(default=Path("data"), description="Where the filesystem cache lives.")
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description=(
            "Server processes sharing the port. Unset: the CPUs this process may use"
            " (affinity and cgroup quota), at most 8."
        ),
    )
    shutdown_timeout: Duration = Field(
        default=30.0, description="How long in-flight requests may finish after SIGTERM."
    )
    limits: Limits = Field(default_factory=Limits)
    log: LogSettings = Field(default_factory=LogSettings)
    go: GoSettings = Field(default_factory=GoSettings)
    npm: NpmSettings = Field(default_factory=NpmSettings)
    stats: StatsSettings = Field(default_factory=StatsSettings)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_host_port(value)
        return value


def split_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` → ``("127.0.0.1", 8080)``; ``"[::1]:80"`` → ``("::1", 80)``."""
    m = re.fullmatch(r"\[(?P<h6>[0-9a-fA-F:.]+)\]:(?P<p6>\d+)|(?P<h>[^:\[\]]*):(?P<p>\d+)", value)
    if not m:
        raise ValueError(f"invalid listen address {value!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
    host = m["h6"] if m["h6"] is not None else m["h"]
    port = int(m["p6"] or m["p"])
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid port {port} in {value!r}: use 0-65535")
    return host, port


# ---------------------------------------------------------------------------------------------
# Loading


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" = {json.dumps(value, default=str)}"
        lines.append(f"  {where}{shown}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``ENTREPOT_GO__CACHE__LIST_TTL=10m`` → ``{"go": {"cache": {"list_ttl": "10m"}}}``."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        value: Any = raw
        if raw[:1] in ("[", "{"):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ConfigError(f"invalid configuration: {name} is not valid JSON: {e}") from e
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"invalid configuration: {name} conflicts with another variable")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def go_env(name: str, environ: Mapping[str, str], *, go_binary: str = "go") -> str:
    """A Go setting as the user's go command sees it: the environment, else ``go env``."""
    if environ.get(name):
        return environ[name]
    exe = shutil.which(go_binary, path=environ.get("PATH", ""))
    if exe is None:
        return ""
    try:
        done = subprocess.run(
            [exe, "env", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=dict(environ),
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def load_settings(
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from defaults < file < ENTREPOT_* env < overrides (CLI flags).

    Raises ConfigError with one line per bad field: where, the value, and what is allowed.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = read_file(config_file) if config_file else {}
    data = _merge(data, _env_overrides(env))
    data = _merge(data, overrides or {})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from e
    settings = _with_npm_defaults(settings, env)
    if settings.npm.enabled and settings.npm.prefix == "/" and settings.go.enabled:
        raise ConfigError(
            'invalid configuration:\n  npm.prefix = "/": npm can serve the root only alone;'
            " set go.enabled to false, or a prefix such as '/npm/'"
        )
    if not settings.go.enabled:
        return settings
    return _with_go_defaults(settings, env)


NPM_REGISTRY_ENV = ("npm_config_registry", "NPM_CONFIG_REGISTRY")


def npm_registry(environ: Mapping[str, str], *, npm_binary: str = "npm") -> str:
    """The registry the user's npm uses: the environment, else ``npm config get registry``
    ("" when neither answers)."""
    for name in NPM_REGISTRY_ENV:
        if environ.get(name):
            return environ[name]
    exe = shutil.which(npm_binary, path=environ.get("PATH", ""))
    if exe is None:
        return ""
    try:
        done = subprocess.run(
            [exe, "config", "get", "registry"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=dict(environ),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    value = done.stdout.strip() if done.returncode == 0 else ""
    return value if value.startswith(("http://", "https://")) else ""


def _with_npm_defaults(settings: Settings, env: Mapping[str, str]) -> Settings:
    npm = settings.npm
    if not npm.enabled or npm.upstream is not None:
        _refuse_npm_self_loop(settings)
        return settings
    registry = npm_registry(env)
    if not registry:
        return settings  # served as 503 with the reason; the server logs it at start
    merged = _merge(settings.model_dump(mode="json"), {"npm": {"upstream": registry}})
    try:
        result = Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(
            _describe(e) + "\n  (the npm upstream was taken from `npm config get registry`)"
        ) from e
    _refuse_npm_self_loop(result)
    return result


def _refuse_npm_self_loop(settings: Settings) -> None:
    upstream = settings.npm.upstream
    if upstream is None:
        return
    host, port = split_host_port(settings.listen)
    own = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    if port != 0 and urlsplit(upstream).netloc in own:
        raise ConfigError(
            f"npm.upstream {upstream!r} points at this server itself ({settings.listen}); set"
            " npm.upstream (ENTREPOT_NPM__UPSTREAM) to the real registry"
        )


def _with_go_defaults(settings: Settings, env: Mapping[str, str]) -> Settings:
    go = settings.go
    binary = go.direct.go_binary
    updates: dict[str, Any] = {}
    if go.proxy is None:
        proxy = go_env("GOPROXY", env, go_binary=binary)
        if not proxy:
            raise ConfigError(
                "no Go upstream configured: set go.proxy in the config file, ENTREPOT_GO__PROXY,"
                " or GOPROXY (e.g. GOPROXY=https://proxy.example.com,direct), or install the go"
                " command so `go env GOPROXY` answers"
            )
        updates["proxy"] = proxy
    if go.routes is None:
        private = go_env("GONOPROXY", env, go_binary=binary) or go_env(
            "GOPRIVATE", env, go_binary=binary
        )
        updates["routes"] = [{"patterns": private, "proxy": "direct"}] if private.strip() else []
    if go.sumdb.databases is None or go.sumdb.no_sum is None:
        updates["sumdb"] = _sumdb_from_go_env(go.sumdb, env, binary)
    if not go.direct.insecure:
        insecure = go_env("GOINSECURE", env, go_binary=binary)
        if insecure:
            updates["direct"] = {**go.direct.model_dump(), "insecure": insecure}
    if not updates:
        return settings
    merged = _merge(settings.model_dump(mode="json"), {"go": updates})
    try:
        result = Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(
            _describe(e) + "\n  (values taken from the Go environment: GOPROXY/GONOPROXY)"
        ) from e
    _refuse_self_loop(result)
    return result


_KNOWN_KEY = re.compile(r'"([^"\s]+)"\s*:\s*"([^"\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+)"')


_ALIAS = re.compile(r'gosumdb\s*==\s*"([^"\s]+)"\s*\{\s*gosumdb\s*=\s*"([^"]+)"')
MODFETCH = "src/cmd/go/internal/modfetch"


def toolchain_sumdb_keys(env: Mapping[str, str], *, go_binary: str = "go") -> dict[str, str]:
    """The GOSUMDB values the local go command knows by name: a database's key, or for an
    alias the ``key url`` it stands for.

    Read from the toolchain's own source (``$GOROOT/src/cmd/go/internal/modfetch/key.go`` and
    ``sumdb.go``), so no key or host is written into this project and a toolchain update
    carries a key rotation.
    """
    goroot = go_env("GOROOT", env, go_binary=go_binary)
    if not goroot:
        return {}
    try:
        keys = (Path(goroot) / MODFETCH / "key.go").read_text()
    except OSError:
        return {}
    known = {name: key for name, key in _KNOWN_KEY.findall(keys) if key.startswith(name + "+")}
    try:
        aliases = _ALIAS.findall((Path(goroot) / MODFETCH / "sumdb.go").read_text())
    except OSError:
        aliases = []
    for alias, target in aliases:
        fields = target.split()
        if len(fields) == 2 and fields[0] in known:
            known[alias] = f"{known[fields[0]]} {fields[1]}"
    return known


def parse_gosumdb(value: str, known: Mapping[str, str]) -> list[dict[str, Any]]:
    """GOSUMDB (``off``, ``name``, ``key`` or ``key url``) → database settings, as the go
    command reads it. A URL in GOSUMDB bypasses proxies, as it does for the go command."""
    fields = value.split()
    if not fields or fields == ["off"]:
        return []
    if len(fields) == 1 and fields[0] in known:
        fields = known[fields[0]].split()  # a name, or an alias that brings its URL
    if len(fields) > 2:
        raise ConfigError(f"GOSUMDB={value!r}: too many fields (want 'key' or 'key url')")
    key = known.get(fields[0], fields[0])
    if "+" not in key:
        raise ConfigError(
            f"GOSUMDB={value!r}: no key known for {fields[0]!r}. The keys of the go command's"
            f" built-in databases are read from its toolchain ($GOROOT/{MODFETCH}/key.go),"
            " which is missing or does not name it here; give the full verifier key"
            " ('name+hash+key') in GOSUMDB or in go.sumdb.databases"
        )
    db: dict[str, Any] = {"name": key.split("+", 1)[0], "key": key}
    if len(fields) == 2:
        db["url"] = fields[1]
        db["proxy"] = "direct"
    return [db]


def _sumdb_from_go_env(sumdb: SumdbSettings, env: Mapping[str, str], binary: str) -> dict[str, Any]:
    out = sumdb.model_dump(mode="json")
    if sumdb.databases is None:
        value = go_env("GOSUMDB", env, go_binary=binary)
        if not value:
            raise ConfigError(
                "no checksum database configured and `go env GOSUMDB` gave nothing: set"
                " go.sumdb.databases (or [] to turn verification off) or GOSUMDB"
            )
        known = toolchain_sumdb_keys(env, go_binary=binary) if "+" not in value else {}
        out["databases"] = parse_gosumdb(value, known)
    if sumdb.no_sum is None:
        out["no_sum"] = go_env("GONOSUMDB", env, go_binary=binary) or go_env(
            "GOPRIVATE", env, go_binary=binary
        )
    return out


def _refuse_self_loop(settings: Settings) -> None:
    chains = [settings.go.proxy or ""] + [r.proxy for r in settings.go.routes or [] if r.proxy]
    host, port = split_host_port(settings.listen)
    own = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    for chain in chains:
        for entry in parse_proxy_list(chain):
            netloc = urlsplit(entry.url).netloc
            if port != 0 and netloc in own:
                raise ConfigError(
                    f"the upstream chain {chain!r} points at this server itself"
                    f" ({settings.listen}); unset GOPROXY in the server's environment or set"
                    " go.proxy to the real upstream"
                )


# ---------------------------------------------------------------------------------------------
# Reference documentation, generated from the models


def _walk(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(_walk(ann, key + "."))
            continue
        if field.default_factory is not None:
            default: Any = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.default
        if field.is_required():
            shown, kind = "(required)", _type_name(ann)
        elif field.metadata and any(isinstance(m, PlainSerializer) for m in field.metadata):
            shown = format_duration(default)
            kind = "duration"
        else:
            if isinstance(default, list):
                default = [d.model_dump() if isinstance(d, BaseModel) else d for d in default]
            shown = json.dumps(default, default=str)
            kind = _type_name(ann)
        env = ENV_PREFIX + key.replace(".", "__").upper()
        meaning = (field.description or "").replace("|", "\\|")
        rows.append((f"`{key}`", kind, f"`{shown}`", f"{meaning} (`{env}`)"))
    return rows


def _type_name(ann: Any) -> str:
    text = str(ann).replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    return text.replace("entrepot.config.", "").replace("|", "\\|")


def reference_markdown() -> str:
    """The table in docs/configuration.md; a test fails when the doc and the models differ."""
    lines = ["| key | type | default | meaning (environment variable) |", "|---|---|---|---|"]
    for key, kind, default, meaning in _walk(Settings, ""):
        lines.append(f"| {key} | {kind} | {default} | {meaning} |")
    for title, model in (
        ("go.routes[]", Route),
        ("go.sumdb.databases[]", SumDatabase),
        ("npm.registry.publish[]", PublishRule),
    ):
        lines += [
            "",
            f"`{title}` items:",
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for key, kind, default, meaning in _walk(model, ""):
            lines.append(f"| {key} | {kind} | {default} | {meaning.rsplit(' (`', 1)[0]} |")
    return "\n".join(lines) + "\n"
