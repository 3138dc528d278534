"""Cache policy as a table: what never changes, what expires, and what to do with an old copy.

Pure: the service asks :func:`freshness` with the entry's age and acts on the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from entrepot.config import GoCache


class Kind(StrEnum):
    LIST = "list"
    INFO = "info"  # .info of a canonical version
    QUERY = "query"  # .info of a branch, tag, commit or other query
    LATEST = "latest"
    MOD = "mod"
    ZIP = "zip"


@dataclass(frozen=True)
class Policy:
    immutable: bool
    ttl: Literal["list_ttl", "latest_ttl", "query_ttl"] | None = None
    in_memory: bool = False  # small enough to keep in the memory cache


POLICY: dict[Kind, Policy] = {
    Kind.INFO: Policy(immutable=True, in_memory=True),
    Kind.MOD: Policy(immutable=True, in_memory=True),
    Kind.ZIP: Policy(immutable=True),
    Kind.LIST: Policy(immutable=False, ttl="list_ttl"),
    Kind.LATEST: Policy(immutable=False, ttl="latest_ttl"),
    Kind.QUERY: Policy(immutable=False, ttl="query_ttl"),
}

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"

Freshness = Literal["fresh", "revalidate", "refetch"]


def ttl_of(kind: Kind, cache: GoCache) -> float:
    policy = POLICY[kind]
    return float("inf") if policy.ttl is None else float(getattr(cache, policy.ttl))


def freshness(kind: Kind, age: float, cache: GoCache) -> Freshness:
    """``fresh``: serve it. ``revalidate``: serve it and refresh in the background.
    ``refetch``: fetch before answering (serve it only if the upstream fails, see can_serve_stale).
    """
    ttl = ttl_of(kind, cache)
    if age < ttl:
        return "fresh"
    if age < ttl + cache.stale_while_revalidate:
        return "revalidate"
    return "refetch"


def can_serve_stale(age: float, cache: GoCache) -> bool:
    """Stale-if-error: an old copy beats an error while it is younger than max_stale."""
    return age < cache.max_stale


def cache_control(kind: Kind, cache: GoCache) -> str:
    if POLICY[kind].immutable:
        return IMMUTABLE_CACHE_CONTROL
    return f"public, max-age={int(ttl_of(kind, cache))}"
