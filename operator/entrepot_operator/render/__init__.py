"""Pure rendering: a mirror's spec in, the children it needs out (None = must not exist).

No API calls, no clock, no environment: every input is an argument, so every builder is
unit-tested without a cluster (as cloudnative-pg's pkg/specs). Both kinds render the same
children; their config files differ by the protocol ``sections`` their descriptor renders
(kinds.py; configmap.go_sections / npm_sections).
"""

from __future__ import annotations

from typing import Any

from entrepot_operator.api import MirrorSpec
from entrepot_operator.render.configmap import Sections, render_configmap
from entrepot_operator.render.deployment import render_deployment
from entrepot_operator.render.meta import Owner
from entrepot_operator.render.optional import (
    render_ingress,
    render_pdb,
    render_pvc,
    render_service_monitor,
)
from entrepot_operator.render.service import render_service

Child = dict[str, Any]


def render_all(
    spec: MirrorSpec,
    owner: Owner,
    *,
    sections: Sections,
    image: str,
    service_monitor_available: bool,
) -> dict[str, Child | None]:
    """Every child by kind; ``None`` means: delete it if it exists."""
    configmap, config_hash = render_configmap(spec, owner, sections)
    use_monitor = service_monitor_available and spec.monitoring.service_monitor
    return {
        "ConfigMap": configmap,
        "PersistentVolumeClaim": render_pvc(spec, owner),
        "Deployment": render_deployment(
            spec, owner, image=image, config_hash=config_hash, scrape_annotations=not use_monitor
        ),
        "Service": render_service(spec, owner),
        "PodDisruptionBudget": render_pdb(spec, owner),
        "Ingress": render_ingress(spec, owner),
        "ServiceMonitor": render_service_monitor(spec, owner) if use_monitor else None,
    }


__all__ = ["Child", "Owner", "Sections", "render_all"]
