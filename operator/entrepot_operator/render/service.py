"""The Service builds point GOPROXY or npm_config_registry at, and the URLs clients use."""

from __future__ import annotations

from typing import Any

from entrepot_operator.api import MirrorSpec, NpmMirrorSpec
from entrepot_operator.render.meta import Owner, metadata, selector_labels


def render_service(spec: MirrorSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, owner.name),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(owner),
            "ports": [
                {"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def service_url(spec: MirrorSpec, owner: Owner) -> str:
    """The in-cluster URL to put in GOPROXY."""
    return f"http://{owner.name}.{owner.namespace}.svc:{spec.service.port}"


def registry_url(spec: NpmMirrorSpec, owner: Owner) -> str:
    """The npm registry URL clients use, under which the mirror writes tarball URLs:
    spec.npm.publicUrl, else the Ingress's (https when it has a TLS Secret), else the
    Service's. A wildcard Ingress host names no URL: the spec must then set publicUrl (api)."""
    if spec.npm.public_url is not None:
        return spec.npm.public_url
    ingress = spec.ingress
    if ingress is not None and not ingress.host.startswith("*."):
        scheme = "https" if ingress.tls_secret_name else "http"
        return f"{scheme}://{ingress.host}/"
    return service_url(spec, owner) + "/"
