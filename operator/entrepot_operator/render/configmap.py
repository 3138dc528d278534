"""The mirror's config file: the spec's settings, validated by the server's own model.

What every mirror's file holds (listen address, cache folder, limits, log, statistics) is
written here once; each kind adds its protocol's sections (:func:`go_sections` for a
ModuleMirror, :func:`npm_sections` for an NpmMirror), chosen by its descriptor (kinds.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from entrepot.config import READ_SECRETS, Settings
from entrepot_operator.api import (
    MirrorSpec,
    ModuleMirrorSpec,
    NpmMirrorSpec,
    NpmRegistrySpec,
    Sumdb,
)
from entrepot_operator.render.meta import (
    CACHE_DIR,
    PORT,
    SECRETS_DIR,
    Owner,
    config_name,
    metadata,
)
from entrepot_operator.render.service import registry_url

Sections = dict[str, Any]


def secret_file(kind: str, index: int | None = None) -> str:
    """Where a credential is mounted in the pod (api.SecretFile.file; deployment.secret_volume)."""
    return f"{SECRETS_DIR}/{kind}" if index is None else f"{SECRETS_DIR}/{kind}-{index}"


def sumdb_settings(sumdb: Sumdb) -> dict[str, Any]:
    """The server's go.sumdb: a key from a Secret becomes the file it is mounted as. Unset
    fields stay unset, so the server falls back to its Go environment as documented."""
    databases = None
    if sumdb.databases is not None:
        databases = [
            {
                **db.model_dump(exclude={"key_secret"}, exclude_none=True),
                **({"key_file": secret_file("sumdb-key", i)} if db.key_secret else {}),
            }
            for i, db in enumerate(sumdb.databases)
        ]
    return {
        "databases": databases,
        "no_sum": sumdb.no_sum,
        "unreachable": sumdb.unreachable,
        "latest_ttl": sumdb.latest_ttl,
    }


def go_sections(spec: ModuleMirrorSpec, owner: Owner) -> Sections:
    """A ModuleMirror serves Go at the root, and no npm."""
    creds = spec.credentials
    go = spec.go
    credentials: dict[str, Any] = {
        "netrc_file": secret_file("netrc") if creds.netrc else None,
        "git_config_file": secret_file("gitconfig") if creds.git_config else None,
        "git_credentials_file": secret_file("git-credentials") if creds.git_credentials else None,
        "bearer_tokens": {
            t.host: secret_file("token", i) for i, t in enumerate(creds.bearer_tokens)
        },
    }
    return {
        "go": {
            "proxy": go.proxy,
            "routes": [r.model_dump(exclude_none=True) for r in go.routes],
            "cache": go.cache.model_dump(mode="json"),
            "direct": go.direct.model_dump(mode="json"),
            "upstream_timeout": go.upstream_timeout,
            "zip_deadline": go.zip_deadline,
            "min_transfer_rate": go.min_transfer_rate,
            "min_rate_window": go.min_rate_window,
            "credentials": credentials,
            "sumdb": sumdb_settings(go.sumdb),
        },
        "npm": {"enabled": False},
    }


def npm_sections(spec: NpmMirrorSpec, owner: Owner) -> Sections:
    """An NpmMirror serves npm alone, at its root, writing tarball URLs under the URL clients
    use (service.registry_url)."""
    npm = spec.npm
    creds = npm.credentials
    return {
        # No Go upstream either ("off"): nothing of Go is served or fetched, and a server
        # that builds its Go routes anyway (entrepot.app.build_router) finds a valid chain.
        "go": {"enabled": False, "proxy": "off"},
        "npm": {
            "enabled": True,
            "prefix": "/",
            "upstream": npm.upstream,
            "public_url": registry_url(spec, owner),
            "cache": npm.cache.model_dump(mode="json"),
            "policy": npm.policy.model_dump(mode="json"),
            "credentials": {
                "token_file": secret_file("npm-token") if creds.token_secret else None,
                "npmrc_file": secret_file("npmrc") if creds.npmrc_secret else None,
            },
            "upstream_timeout": npm.upstream_timeout,
            "tarball_deadline": npm.tarball_deadline,
            "min_transfer_rate": npm.min_transfer_rate,
            "max_packument_bytes": npm.max_packument_bytes,
            "max_tarball_bytes": npm.max_tarball_bytes,
            "registry": registry_settings(npm.registry),
        },
    }


def registry_settings(registry: NpmRegistrySpec) -> dict[str, Any]:
    """The server's npm.registry: the administrator's password from its Secret's file. Its
    users, tokens and packages go to the stats database (server_settings), as in the server."""
    return {
        "enabled": registry.enabled,
        "self_registration": registry.self_registration,
        "admin_user": registry.admin_user,
        "admin_password_file": (
            secret_file("npm-admin-password") if registry.admin_password_secret else None
        ),
        "publish": [rule.model_dump() for rule in registry.publish],
        "trusted_proxies": registry.trusted_proxies,
        "login_attempts": registry.login_attempts,
        "login_window": registry.login_window,
    }


def server_settings(spec: MirrorSpec, sections: Sections) -> Settings:
    """The `entrepot serve` configuration for this spec, checked by the server's model."""
    return Settings.model_validate(
        {
            "listen": f"0.0.0.0:{PORT}",
            "data_dir": CACHE_DIR,
            "log": {"level": spec.log_level},
            "limits": spec.limits.model_dump(mode="json"),
            **sections,
            "stats": {
                "enabled": spec.stats.enabled,
                "database": spec.stats.database,
                "database_password_file": (
                    secret_file("stats-password") if spec.stats.password_secret else None
                ),
                "flush_interval": spec.stats.flush_interval,
            },
        },
        context={READ_SECRETS: False},  # the Secrets' files exist in the pod, not here
    )


def config_text(spec: MirrorSpec, sections: Sections, *, kind: str) -> str:
    settings = server_settings(spec, sections).model_dump(mode="json", exclude_none=True)
    return f"# Rendered by entrepot-operator from the {kind}; edits are put back.\n" + (
        yaml.safe_dump(settings, sort_keys=True)
    )


def render_configmap(
    spec: MirrorSpec, owner: Owner, sections: Sections
) -> tuple[dict[str, Any], str]:
    """The ConfigMap and the hash of its content (a pod annotation: a change rolls the pods)."""
    text = config_text(spec, sections, kind=owner.kind)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, config_name(owner)),
        "data": {"config.yaml": text},
    }
    return body, digest
