"""What a mirror (ModuleMirror or NpmMirror) may ask for: the chart's policy, checked again by
the operator.

Whoever may create a mirror makes the operator create a Deployment, a Service, a PVC
and maybe an Ingress in that namespace, with the operator's own permissions. Without limits
that is pod creation with any image, a read of any Secret of the namespace (mounted into that
image, or sent as a bearer token or an npm upstream's credentials to a host of the author's
choice), a LoadBalancer, an Ingress for any host and pods that tolerate every taint. The
chart ships a ValidatingAdmissionPolicy
that refuses such specs at the API server (helm/entrepot/templates/policy.yaml); this module
holds the same rules for the operator, so a mirror created before the policy, or in a cluster
without it, is refused too (defence in depth).

The chart passes the policy as one JSON environment variable, ``ENTREPOT_POLICY``, whose keys
are those of its ``policy`` values (docs/helm.md); no variable means no policy (``Policy()``
allows everything, as the operator did before). A key left out of the JSON is unrestricted.
Patterns are RE2 (the API server's CEL) and Python ``re`` alike: keep to their common syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from entrepot_operator.api import MirrorSpec

ENV = "ENTREPOT_POLICY"
ANY_TOLERATION = "*"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
HOST_PATTERN = rf"^(\*\.)?{LABEL}(\.{LABEL})*$"


class PolicyError(ValueError):
    """``ENTREPOT_POLICY`` is not a policy: the operator refuses to start (exit 2)."""


def host_regex(pattern: str) -> str:
    """``*.example.com`` matches one more DNS label (``a.example.com``, not ``a.b.example.com``
    and not ``*.example.com`` itself), as an Ingress wildcard does; anything else matches
    itself. The chart writes the same regexes into the ValidatingAdmissionPolicy."""
    if pattern.startswith("*."):
        return "^" + LABEL + re.escape(pattern[1:]) + "$"
    return "^" + re.escape(pattern) + "$"


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    return any(re.search(host_regex(p), host.lower()) for p in patterns)


def image_allowed(image: str, allowed: Iterable[str]) -> bool:
    """An entry allows itself, any tag or digest of it (``repo`` allows ``repo:1`` and
    ``repo@sha256:…``), and, when it ends with ``/``, everything under it (a registry or a
    path in it). ``repo`` does not allow ``repo-other:1``."""
    return any(
        image == p
        or (p.endswith("/") and image.startswith(p))
        or image.startswith((p + ":", p + "@"))
        for p in allowed
    )


@dataclass(frozen=True)
class Policy:
    """Permissive by default: ``None`` (or an empty ``ingress_class_names``) is no limit.

    An empty tuple allows nothing: ``ingress_hosts=()`` refuses every Ingress,
    ``toleration_keys=()`` every toleration, ``bearer_token_hosts=()`` every bearer token.
    """

    # Images spec.image may name, besides the operator's default image (see image_allowed).
    allowed_images: tuple[str, ...] | None = None
    service_types: tuple[str, ...] | None = None
    # Host patterns an Ingress may answer for (see host_regex).
    ingress_hosts: tuple[str, ...] | None = None
    ingress_class_names: tuple[str, ...] = ()
    # Taint keys a toleration may name; "*" allows every toleration, keyless ones included.
    toleration_keys: tuple[str, ...] | None = None
    # Every Secret a spec names (credentials, checksum database keys, the stats password, an
    # NpmMirror's administrator password, the Ingress TLS Secret, image pull Secrets) must
    # match it (re.search, like CEL's matches).
    secret_name_pattern: str | None = None
    # Hosts a bearer token may be sent to (host patterns).
    bearer_token_hosts: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Policy:
        """The policy of ``ENTREPOT_POLICY`` (JSON); ``Policy()`` when unset or empty.

        Raises PolicyError, naming the key, for anything that is not a policy."""
        text = environ.get(ENV, "").strip()
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise PolicyError(f"{ENV} is not JSON: {e}") from e
        try:
            doc = _PolicyDocument.model_validate(raw)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                for err in e.errors()
            )
            raise PolicyError(f"{ENV}: {problems}") from e
        ingress = doc.ingress
        return cls(
            allowed_images=_tuple(doc.allowed_images),
            service_types=_tuple(doc.service_types),
            ingress_hosts=_tuple(ingress.hosts) if ingress else None,
            ingress_class_names=tuple(ingress.class_names) if ingress else (),
            toleration_keys=_tuple(doc.toleration_keys),
            secret_name_pattern=doc.secret_name_pattern,
            bearer_token_hosts=_tuple(doc.bearer_token_hosts),
        )


def _tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _host_patterns(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        if not re.match(HOST_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a host name or a '*.'-prefixed one (e.g. '*.example.com')"
            )
    return values


class _IngressDocument(_Strict):
    hosts: list[str] | None = None
    class_names: list[str] = Field(default_factory=list, alias="classNames")

    _hosts = field_validator("hosts")(classmethod(lambda cls, v: _host_patterns(v)))


class _PolicyDocument(_Strict):
    """The JSON of ENTREPOT_POLICY: the chart's ``policy`` values (less ``enabled``)."""

    allowed_images: list[str] | None = Field(default=None, alias="allowedImages")
    service_types: list[Literal["ClusterIP", "NodePort", "LoadBalancer"]] | None = Field(
        default=None, alias="serviceTypes", min_length=1
    )
    ingress: _IngressDocument | None = None
    toleration_keys: list[str] | None = Field(default=None, alias="tolerationKeys")
    secret_name_pattern: str | None = Field(default=None, alias="secretNamePattern", min_length=1)
    bearer_token_hosts: list[str] | None = Field(default=None, alias="bearerTokenHosts")

    _token_hosts = field_validator("bearer_token_hosts")(
        classmethod(lambda cls, v: _host_patterns(v))
    )

    @field_validator("allowed_images")
    @classmethod
    def _images(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            if not value or value != value.strip() or value.endswith((":", "@")):
                raise ValueError(
                    f"{value!r}: an image, a repository or a prefix ending in '/'"
                    " (e.g. 'registry.example.com/entrepot/entrepot' or 'registry.example.com/')"
                )
        return values

    @field_validator("secret_name_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"not a regular expression: {e}") from e
        return value


# --- the checks -------------------------------------------------------------------------------


def _plain(value: Any) -> dict[str, Any]:
    """A toleration (or a Secret reference) as a dict, whether a model or free-form."""
    if isinstance(value, BaseModel):
        dumped: dict[str, Any] = value.model_dump(by_alias=True, exclude_none=True)
        return dumped
    return dict(value) if isinstance(value, Mapping) else {}


def _name(value: Any) -> str:
    return value if isinstance(value, str) else str(_plain(value).get("name", ""))


def secret_references(spec: MirrorSpec) -> list[tuple[str, str]]:
    """Every Secret the spec names, as (field, name): all the operator would have the
    kubelet mount (or an Ingress controller serve, or the kubelet pull with)."""
    found = [(f"{f.field}.secretName", f.ref.secret_name) for f in spec.secret_files()]
    if spec.ingress is not None and spec.ingress.tls_secret_name:
        found.append(("spec.ingress.tlsSecretName", spec.ingress.tls_secret_name))
    for i, pull in enumerate(spec.image_pull_secrets):
        found.append((f"spec.imagePullSecrets[{i}]", _name(pull)))
    return found


def _a(kind: str) -> str:
    """'a ModuleMirror', 'an NpmMirror' (npm is said letter by letter)."""
    return f"an {kind}" if kind.startswith(("A", "E", "I", "O", "U", "Npm")) else f"a {kind}"


def _listed(values: Iterable[str]) -> str:
    return ", ".join(values) or "(none)"


def violations(
    spec: MirrorSpec, policy: Policy, *, default_image: str, kind: str = "ModuleMirror"
) -> list[str]:
    """Human messages, one per thing the spec asks for that the policy does not allow.

    Each says what was asked, what is allowed, and which chart value would allow more, in the
    words of the ValidatingAdmissionPolicy's messages (which name Secrets without their
    fields, and bearer tokens without their index)."""
    found: list[str] = []
    image = spec.image
    if (
        policy.allowed_images is not None
        and image is not None
        and image != default_image
        and not image_allowed(image, policy.allowed_images)
    ):
        found.append(
            f"spec.image {image} is not allowed: leave it unset for the operator's image"
            f" ({default_image}), or use an image under {_listed(policy.allowed_images)}"
            " (chart value policy.allowedImages)"
        )
    if policy.service_types is not None and spec.service.type not in policy.service_types:
        found.append(
            f"spec.service.type {spec.service.type} is not allowed: allowed are"
            f" {_listed(policy.service_types)} (chart value policy.serviceTypes)"
        )
    ingress = spec.ingress
    if ingress is not None and policy.ingress_hosts is not None:
        if not policy.ingress_hosts:
            found.append(
                "spec.ingress is not allowed: no Ingress hosts are allowed"
                " (chart value policy.ingress.hosts)"
            )
        elif not host_allowed(ingress.host, policy.ingress_hosts):
            found.append(
                f"spec.ingress.host {ingress.host} is not allowed: allowed are"
                f" {_listed(policy.ingress_hosts)} (chart value policy.ingress.hosts)"
            )
    if (
        ingress is not None
        and policy.ingress_class_names
        and ingress.class_name not in policy.ingress_class_names
    ):
        found.append(
            f"spec.ingress.className {ingress.class_name or '(unset)'} is not allowed:"
            f" allowed are {_listed(policy.ingress_class_names)}"
            " (chart value policy.ingress.classNames)"
        )
    keys = policy.toleration_keys
    if keys is not None and ANY_TOLERATION not in keys:
        refused = [
            t for t in (_plain(t) for t in spec.tolerations or []) if t.get("key", "") not in keys
        ]
        for t in refused:
            what = (
                f"key {t['key']}"
                if t.get("key")
                else "no key (it tolerates every taint: operator Exists)"
            )
            found.append(
                f"spec.tolerations: a toleration with {what} is not allowed: allowed keys are"
                f" {_listed(keys)} (chart value policy.tolerationKeys)"
            )
    pattern = policy.secret_name_pattern
    if pattern is not None:
        bad = [(f, n) for f, n in secret_references(spec) if not re.search(pattern, n)]
        if bad:
            named = ", ".join(f"{n} ({f})" for f, n in bad)
            found.append(
                f"Secrets {_a(kind)} names must match {pattern} (chart value"
                f" policy.secretNamePattern); not allowed: {named}"
            )
    hosts = policy.bearer_token_hosts
    if hosts is not None:
        for field, host in spec.token_hosts():
            if not host_allowed(host, hosts):
                found.append(
                    f"{field} {host} is not allowed: bearer tokens may go to {_listed(hosts)}"
                    " (chart value policy.bearerTokenHosts)"
                )
    return found
