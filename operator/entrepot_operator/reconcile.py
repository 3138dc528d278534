"""Decide, then act: parse → render (pure) → apply → observe → status (pure)."""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from entrepot_operator.api import Condition, ModuleMirrorSpec
from entrepot_operator.apply import Applier
from entrepot_operator.metrics import OperatorMetrics
from entrepot_operator.render import Owner, render_all
from entrepot_operator.render.configmap import render_configmap
from entrepot_operator.render.meta import cache_claim_name, config_name
from entrepot_operator.render.service import service_url
from entrepot_operator.status import compute_status, invalid_spec_status

log = logging.getLogger("entrepot_operator")
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    applied: list[str]
    deleted: list[str]
    error: str | None = None


def child_name(kind: str, owner: Owner) -> str:
    if kind == "ConfigMap":
        return config_name(owner)
    if kind == "PersistentVolumeClaim":
        return cache_claim_name(owner)
    return owner.name


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile(
    body: dict[str, Any], *, applier: Applier, image: str, metrics: OperatorMetrics
) -> Outcome:
    started = time.perf_counter()
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    generation = int(meta.get("generation") or 0)
    previous = [
        Condition.model_validate(c)
        for c in (body.get("status") or {}).get("conditions", [])
        if c.get("type") in ("Ready", "Progressing", "Degraded")
    ]
    try:
        spec = ModuleMirrorSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        message = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        metrics.record("invalid", time.perf_counter() - started)
        status = invalid_spec_status(
            generation=generation, message=message, previous=previous, now=_now()
        )
        return Outcome(status.model_dump(by_alias=True, exclude_none=True), [], [], message)
    monitors = applier.crd_exists(SERVICE_MONITOR_CRD)
    children = render_all(spec, owner, image=image, service_monitor_available=monitors)
    applied, deleted = [], []
    deployment: dict[str, Any] | None = None
    for kind, child in children.items():
        if child is None:
            if kind == "ServiceMonitor" and not monitors:
                continue  # the kind does not exist here, so neither can such a child
            if applier.delete_if_owned(kind, child_name(kind, owner), owner.namespace, owner.uid):
                deleted.append(kind)
            continue
        result, changed = applier.apply(child)
        if changed:
            applied.append(kind)
        if kind == "Deployment":
            deployment = result
    _, config_hash = render_configmap(spec, owner)
    status = compute_status(
        generation=generation,
        replicas=spec.replicas,
        url=service_url(spec, owner),
        config_hash=config_hash,
        deployment=deployment,
        previous=previous,
        now=_now(),
    )
    metrics.record("ok", time.perf_counter() - started)
    return Outcome(status.model_dump(by_alias=True, exclude_none=True), applied, deleted)
