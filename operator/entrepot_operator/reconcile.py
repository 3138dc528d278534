"""Decide, then act: parse → render (pure) → claim → apply → observe → status (pure).

Each child is applied on its own: one that fails (an API error, or a name taken by an object
that is not this mirror's) is reported in the status and does not stop the others, except
that the Deployment waits for its ConfigMap (it would roll the pods onto a config hash whose
config is not there).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from entrepot_operator.api import Condition, MirrorSpec, check_mirror_name
from entrepot_operator.apply import Applier
from entrepot_operator.drift import drift_message, foreign_fields
from entrepot_operator.kinds import BY_KIND, MODULE_MIRROR, MirrorKind
from entrepot_operator.metrics import OperatorMetrics
from entrepot_operator.policy import Policy, violations
from entrepot_operator.render import Owner
from entrepot_operator.render.meta import (
    ADOPT_ANNOTATION,
    CONFIG_HASH_ANNOTATION,
    MIRROR_ANNOTATION,
    MIRROR_KIND_ANNOTATION,
    cache_claim_name,
    config_name,
    selector_labels,
)
from entrepot_operator.status import (
    compute_status,
    failed_status,
    invalid_spec_status,
    not_ready_cause,
    queued_status,
)
from entrepot_operator.upgrades import image_of, may_roll, rolling, with_image

log = logging.getLogger("entrepot_operator")
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"

Claim = Literal["ours", "adopt", "conflict"]
_STAGING = threading.Lock()  # upgrades: one count-and-apply at a time, across mirrors


@dataclass(frozen=True)
class Failure:
    """A child that could not be made as rendered."""

    kind: str
    name: str
    reason: Literal["ApplyFailed", "NameConflict", "PolicyViolation"]
    message: str

    def text(self) -> str:
        return f"{self.kind} {self.name}: {self.message}"


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    applied: list[str]
    deleted: list[str]
    error: str | None = None
    failures: list[Failure] = field(default_factory=list)
    queued: str | None = None  # why the Deployment keeps its image for now (upgrades.py)
    rolled_out: bool = False  # the Deployment has every replica updated and ready


def child_name(kind: str, owner: Owner) -> str:
    if kind == "ConfigMap":
        return config_name(owner)
    if kind == "PersistentVolumeClaim":
        return cache_claim_name(owner)
    return owner.name


def claim(current: dict[str, Any] | None, owner: Owner) -> Claim:
    """May this mirror apply over the object that has its child's name? Pure.

    Its own (a controller reference with its uid) or nothing there: yes. An object annotated
    ``entrepot.dev/adopt: <mirror name>`` by its owner, or a cache claim this mirror's name and
    kind left behind (``storage.deletionPolicy: Retain``, annotated ``entrepot.dev/mirror`` and
    ``entrepot.dev/mirror-kind``, absent on a ModuleMirror's older claims): adopted. Anything
    else (a user's object, a child of another mirror, including the mirror of the other kind
    with the same name, one being garbage collected): a conflict, never touched."""
    if current is None:
        return "ours"
    meta = current.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if any(r.get("uid") == owner.uid and r.get("controller") for r in refs):
        return "ours"
    if any(r.get("controller") for r in refs):
        return "conflict"
    annotations = meta.get("annotations") or {}
    if annotations.get(ADOPT_ANNOTATION) == owner.name:
        return "adopt"
    if (
        current.get("kind") == "PersistentVolumeClaim"
        and annotations.get(MIRROR_ANNOTATION) == f"{owner.namespace}/{owner.name}"
        and annotations.get(MIRROR_KIND_ANNOTATION, "ModuleMirror") == owner.kind
    ):
        return "adopt"
    return "conflict"


def conflict_message(kind: str, name: str, owner: Owner, current: dict[str, Any]) -> str:
    refs = (current.get("metadata") or {}).get("ownerReferences") or []
    held = next((r for r in refs if r.get("controller")), None)
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    made_for = annotations.get(MIRROR_ANNOTATION)
    other = held.get("kind") if held is not None else None
    if held is None and made_for == f"{owner.namespace}/{owner.name}":
        other = annotations.get(MIRROR_KIND_ANNOTATION, "ModuleMirror")
        whose = f"it is the cache a deleted {other} {owner.name} retained"
    elif held is not None:
        whose = f"it belongs to {held.get('kind')} {held.get('name')}"
    else:
        whose = "it was not made by this mirror"
    if other in BY_KIND and other != owner.kind:
        # A ModuleMirror and an NpmMirror of one name want the same children (kinds.py).
        return (
            f"a {kind} named {name} already exists and {whose}; nothing was changed in it."
            f" A ModuleMirror and an NpmMirror in one namespace need different names (their"
            f" children are named after them): rename this {owner.kind}"
        )
    return (
        f"a {kind} named {name} already exists and {whose}; nothing was changed in it."
        f" Rename the mirror, or rename or delete that {kind}, or hand it over with"
        f" `kubectl annotate {kind.lower()} {name} {ADOPT_ANNOTATION}={owner.name}`"
    )


def api_message(e: ApiException) -> str:
    detail = str(e.reason or "")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        detail = json.loads(e.body or "{}").get("message") or detail
    return f"{e.status} {detail}".strip()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile(
    body: dict[str, Any],
    *,
    kind: MirrorKind = MODULE_MIRROR,
    applier: Applier,
    image: str,
    metrics: OperatorMetrics,
    policy: Policy | None = None,
    upgrade_limit: int = 0,
) -> Outcome:
    started = time.perf_counter()
    owner = kind.owner(body)
    generation = int(body["metadata"].get("generation") or 0)
    previous = [
        Condition.model_validate(c)
        for c in (body.get("status") or {}).get("conditions", [])
        if c.get("type") in ("Ready", "Progressing", "Degraded", "Drifted")
    ]
    try:
        check_mirror_name(owner.name)
        spec = kind.parse(body.get("spec") or {})
    except ValueError as e:  # a ValidationError too
        message = (
            "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            if isinstance(e, ValidationError)
            else f"metadata.name: {e}"
        )
        metrics.record("invalid", time.perf_counter() - started)
        status = invalid_spec_status(
            generation=generation, message=message, previous=previous, now=_now()
        )
        return Outcome(status.model_dump(by_alias=True, exclude_none=True), [], [], message)
    refused = violations(spec, policy or Policy(), default_image=image, kind=kind.kind)
    if refused:
        refusals = [Failure(kind.kind, owner.name, "PolicyViolation", m) for m in refused]
        metrics.record("invalid", time.perf_counter() - started)
        status = failed_status(
            generation=generation,
            reason="PolicyViolation",
            message="; ".join(refused),
            previous=previous,
            now=_now(),
            base=None,
        )
        return Outcome(status.model_dump(by_alias=True, exclude_none=True), [], [], None, refusals)
    monitors = applier.crd_exists(SERVICE_MONITOR_CRD)
    children = kind.render(spec, owner, image=image, service_monitor_available=monitors)
    config_hash = _config_hash(children["Deployment"])
    queued = None
    if spec.image is None and children["Deployment"] is not None:
        children["Deployment"], queued = _stage(
            children["Deployment"], owner, applier=applier, limit=upgrade_limit
        )
    applied, deleted, failures, deployment = _apply_children(
        children, owner, applier=applier, monitors=monitors
    )
    status = compute_status(
        generation=generation,
        replicas=spec.replicas,
        url=kind.url(spec, owner),
        config_hash=config_hash,
        deployment=deployment,
        previous=previous,
        now=_now(),
        cause=_why_not_ready(spec, owner, applier, deployment),
        drift=_drift(owner, deployment),
    )
    if failures:
        first = next((f for f in failures if f.reason == "NameConflict"), failures[0])
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        status = failed_status(
            generation=generation,
            reason=first.reason,
            message=first.text() + more,
            previous=previous,
            now=_now(),
            base=status,
        )
    if queued is not None and not failures:
        status = queued_status(status, queued, generation=generation, previous=previous, now=_now())
    metrics.record("failed" if failures else "ok", time.perf_counter() - started)
    return Outcome(
        status.model_dump(by_alias=True, exclude_none=True),
        applied,
        deleted,
        None,
        failures,
        queued=queued,
        rolled_out=deployment is not None and not rolling(deployment),
    )


def _config_hash(deployment: dict[str, Any] | None) -> str:
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    return str(((template.get("metadata") or {}).get("annotations") or {})[CONFIG_HASH_ANNOTATION])


def _apply_children(
    children: dict[str, dict[str, Any] | None],
    owner: Owner,
    *,
    applier: Applier,
    monitors: bool,
) -> tuple[list[str], list[str], list[Failure], dict[str, Any] | None]:
    """Apply or delete each child on its own: (applied, deleted, failures, the Deployment)."""
    applied: list[str] = []
    deleted: list[str] = []
    failures: list[Failure] = []
    deployment: dict[str, Any] | None = None
    for kind, child in children.items():
        name = child_name(kind, owner)
        try:
            if child is None:
                if kind == "ServiceMonitor" and not monitors:
                    continue  # the kind does not exist here, so neither can such a child
                if applier.delete_if_owned(kind, name, owner.namespace, owner.uid):
                    deleted.append(kind)
                continue
            if kind == "Deployment" and any(f.kind == "ConfigMap" for f in failures):
                current = applier.get(kind, name, owner.namespace)
                if current is not None and claim(current, owner) == "conflict":
                    message = conflict_message(kind, name, owner, current)
                    failures.append(Failure(kind, name, "NameConflict", message))
                    continue  # another's: not this mirror's status either
                failures.append(
                    Failure(kind, name, "ApplyFailed", "not updated: its ConfigMap failed")
                )
                deployment = current
                continue
            same = applier.unchanged(child)
            if same is not None:  # nothing to do: no request
                if kind == "Deployment":
                    deployment = same
                continue
            if applier.known(kind, owner.namespace, name) is None or _held_by_another(
                applier.seen(kind, owner.namespace, name), owner
            ):
                current = applier.get(kind, name, owner.namespace)
                verdict = claim(current, owner)
                if verdict == "conflict" and current is not None:
                    message = conflict_message(kind, name, owner, current)
                    failures.append(Failure(kind, name, "NameConflict", message))
                    continue
                if current is not None:
                    if verdict == "adopt":
                        log.info("%s/%s: adopting %s %s", owner.namespace, owner.name, kind, name)
                    applier.remember(current)
            result, changed = applier.apply(child)
            if changed:
                applied.append(kind)
            if kind == "Deployment":
                deployment = result
        except ApiException as e:
            failures.append(Failure(kind, name, "ApplyFailed", api_message(e)))
    return applied, deleted, failures, deployment


def _held_by_another(seen: dict[str, Any] | None, owner: Owner) -> bool:
    """The Applier knows this child's name from another mirror's apply (the other kind's mirror
    of the same name, whose children have the same names): read and claim it again."""
    return seen is not None and claim(seen, owner) == "conflict"


MAX_PODS_ASKED = 3


def _why_not_ready(
    spec: MirrorSpec, owner: Owner, applier: Applier, deployment: dict[str, Any] | None
) -> tuple[str, str] | None:
    """Only when pods are missing: read the cache claim, the pods and their Events (a few API
    reads), and let status.not_ready_cause name the first real cause."""
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    if deployment is None or ready >= spec.replicas:
        return None
    try:
        claim_ = None
        events: list[dict[str, Any]] = []
        if spec.storage.empty_dir is None:
            name = cache_claim_name(owner)
            claim_ = applier.get("PersistentVolumeClaim", name, owner.namespace)
            if claim_ is not None and (claim_.get("status") or {}).get("phase") == "Pending":
                events += applier.events_about(owner.namespace, "PersistentVolumeClaim", name)
        pods = [
            p for p in applier.pods(owner.namespace, selector_labels(owner)) if not _pod_ready(p)
        ][:MAX_PODS_ASKED]
        for pod in pods:
            events += applier.events_about(owner.namespace, "Pod", pod["metadata"]["name"])
    except ApiException as e:
        log.warning(
            "%s/%s: cannot see why pods are not ready: %s",
            owner.namespace,
            owner.name,
            api_message(e),
        )
        return None
    return not_ready_cause(pods=pods, claim=claim_, events=events)


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _drift(owner: Owner, deployment: dict[str, Any] | None) -> str | None:
    found = foreign_fields(deployment or {})
    return drift_message("Deployment", owner.name, found, owner=owner.kind) if found else None


def _stage(
    desired: dict[str, Any], owner: Owner, *, applier: Applier, limit: int
) -> tuple[dict[str, Any], str | None]:
    """Keep the current image when only the operator's default image changed and ``limit``
    other mirrors are already rolling onto it (upgrades.py). The count and the apply of a
    Deployment that may roll happen under one lock across mirrors, so two mirrors never both
    take the last place; the apply leaves the Deployment in the Applier's cache as rolling."""
    if limit == 0:
        return desired, None
    with _STAGING:
        current = applier.seen("Deployment", owner.namespace, owner.name) or applier.get(
            "Deployment", owner.name, owner.namespace
        )
        old, new = image_of(current), image_of(desired)
        if current is None or old is None or new is None or old == new:
            return desired, None
        if claim(current, owner) == "conflict":
            return desired, None  # not ours: _apply_children says so
        others = [
            d
            for d in applier.seen_all("Deployment")
            if (d.get("metadata") or {}).get("namespace") != owner.namespace
            or (d.get("metadata") or {}).get("name") != owner.name
        ]
        allowed, busy = may_roll(image=new, others=others, limit=limit)
        if allowed:
            with contextlib.suppress(ApiException):  # applied again, and reported, below
                if applier.known("Deployment", owner.namespace, owner.name) is None:
                    applier.remember(current)
                applier.apply(desired)
            return desired, None
    message = (
        f"upgrade to {new} queued: {busy} other mirrors are rolling onto it"
        f" (at most {limit} at a time, ENTREPOT_OPERATOR_MAX_UPGRADES)"
    )
    return with_image(desired, old), message
