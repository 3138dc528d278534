"""The Service builds point GOPROXY at."""

from __future__ import annotations

from typing import Any

from entrepot_operator.api import ModuleMirrorSpec
from entrepot_operator.render.meta import Owner, metadata, selector_labels


def render_service(spec: ModuleMirrorSpec, owner: Owner) -> dict[str, Any]:
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


def service_url(spec: ModuleMirrorSpec, owner: Owner) -> str:
    """The in-cluster URL to put in GOPROXY."""
    return f"http://{owner.name}.{owner.namespace}.svc:{spec.service.port}"
