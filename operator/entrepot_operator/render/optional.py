"""Children that exist only for some specs: cache claim, disruption budget, Ingress, monitor."""

from __future__ import annotations

import re
from typing import Any

from entrepot_operator.api import MirrorSpec
from entrepot_operator.render.meta import (
    MIRROR_ANNOTATION,
    MIRROR_KIND_ANNOTATION,
    Owner,
    cache_claim_name,
    labels,
    metadata,
    selector_labels,
)


def render_pvc(spec: MirrorSpec, owner: Owner) -> dict[str, Any] | None:
    if spec.storage.empty_dir is not None:
        return None
    pvc_spec: dict[str, Any] = {
        "accessModes": [spec.storage.access_mode],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name:
        pvc_spec["storageClassName"] = spec.storage.storage_class_name
    meta = metadata(owner, cache_claim_name(owner))
    meta["annotations"] = {
        MIRROR_ANNOTATION: f"{owner.namespace}/{owner.name}",
        MIRROR_KIND_ANNOTATION: owner.kind,
    }
    if spec.storage.deletion_policy == "Retain":
        # No owner: deleting the mirror leaves the cache (and its volume) in place. A server-side
        # apply without the reference also removes the one an earlier version put there.
        del meta["ownerReferences"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": pvc_spec,
    }


def render_pdb(spec: MirrorSpec, owner: Owner) -> dict[str, Any] | None:
    if spec.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, owner.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(owner)}},
    }


def render_ingress(spec: MirrorSpec, owner: Owner) -> dict[str, Any] | None:
    if spec.ingress is None:
        return None
    ingress_spec: dict[str, Any] = {
        "rules": [
            {
                "host": spec.ingress.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": owner.name, "port": {"name": "http"}}},
                        }
                    ]
                },
            }
        ]
    }
    if spec.ingress.class_name:
        ingress_spec["ingressClassName"] = spec.ingress.class_name
    if spec.ingress.tls_secret_name:
        ingress_spec["tls"] = [
            {"hosts": [spec.ingress.host], "secretName": spec.ingress.tls_secret_name}
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(owner, owner.name),
        "spec": ingress_spec,
    }


TARGET_LABELS = ("app.kubernetes.io/part-of", "app.kubernetes.io/component")


def target_labels(owner: Owner) -> dict[str, str]:
    """The labels the ServiceMonitor puts on the mirror's series (Prometheus' spelling)."""
    service = labels(owner)
    return {re.sub(r"[^a-zA-Z0-9_]", "_", name): service[name] for name in TARGET_LABELS}


def render_service_monitor(spec: MirrorSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(owner, owner.name),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner)},
            # Copied onto every series as app_kubernetes_io_part_of="entrepot" and
            # app_kubernetes_io_component="module-mirror" (or "npm-mirror"): what the chart's
            # alerts select on (as scrape configs that map Service labels produce them too).
            "targetLabels": list(TARGET_LABELS),
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": spec.monitoring.interval}
            ],
        },
    }
