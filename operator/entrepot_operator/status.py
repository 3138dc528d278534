"""Observed children → ModuleMirror status. Pure: the caller passes what it read and the time."""

from __future__ import annotations

from typing import Any, Literal

from entrepot_operator.api import Condition, ModuleMirrorStatus

Kind = Literal["Ready", "Progressing", "Degraded"]
Status = Literal["True", "False", "Unknown"]


def _deployment_condition(deployment: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in deployment.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def _carry(
    previous: list[Condition],
    kind: Kind,
    status: Status,
    reason: str,
    message: str,
    *,
    generation: int,
    now: str,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status changes."""
    old = next((c for c in previous if c.type == kind), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )


def compute_status(
    *,
    generation: int,
    replicas: int,
    url: str,
    config_hash: str,
    deployment: dict[str, Any] | None,
    previous: list[Condition],
    now: str,
) -> ModuleMirrorStatus:
    def cond(kind: Kind, status: Status, reason: str, message: str) -> Condition:
        return _carry(previous, kind, status, reason, message, generation=generation, now=now)

    if deployment is None:
        conditions = [
            cond("Ready", "False", "Creating", "the mirror's Deployment does not exist yet"),
            cond("Progressing", "True", "Creating", "creating the mirror's children"),
            cond("Degraded", "False", "AsExpected", ""),
        ]
        return ModuleMirrorStatus(
            observed_generation=generation,
            replicas=replicas,
            ready_replicas=0,
            url=url,
            config_hash=config_hash,
            conditions=conditions,
        )
    st = deployment.get("status", {}) or {}
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    observed = int(st.get("observedGeneration") or 0)
    current = observed >= int(deployment.get("metadata", {}).get("generation") or 0)
    available = _deployment_condition(deployment, "Available").get("status") == "True"
    progress = _deployment_condition(deployment, "Progressing")
    failure = _deployment_condition(deployment, "ReplicaFailure")
    stuck = progress.get("reason") == "ProgressDeadlineExceeded"
    if available and ready > 0:
        readiness = cond("Ready", "True", "Available", f"{ready}/{replicas} pods ready")
    else:
        readiness = cond("Ready", "False", "Unavailable", f"{ready}/{replicas} pods ready")
    rolling = not current or updated < replicas or ready < replicas
    progressing = (
        cond("Progressing", "True", "RollingOut", f"{updated}/{replicas} pods updated")
        if rolling and not stuck
        else cond("Progressing", "False", "Stable", "")
    )
    if stuck or failure.get("status") == "True":
        why = failure.get("message") or progress.get("message") or "the rollout is stuck"
        degraded = cond("Degraded", "True", "RolloutFailed", str(why))
    else:
        degraded = cond("Degraded", "False", "AsExpected", "")
    return ModuleMirrorStatus(
        observed_generation=generation,
        replicas=replicas,
        ready_replicas=ready,
        url=url,
        config_hash=config_hash,
        conditions=[readiness, progressing, degraded],
    )


def invalid_spec_status(
    *, generation: int, message: str, previous: list[Condition], now: str
) -> ModuleMirrorStatus:
    """A spec that slipped past the schema: Ready=False with a reason, never a crash loop."""

    def cond(kind: Kind, status: Status, reason: str, text: str) -> Condition:
        return _carry(previous, kind, status, reason, text, generation=generation, now=now)

    return ModuleMirrorStatus(
        observed_generation=generation,
        conditions=[
            cond("Ready", "False", "InvalidSpec", message),
            cond("Progressing", "False", "InvalidSpec", "fix the spec; nothing was changed"),
            cond("Degraded", "True", "InvalidSpec", message),
        ],
    )
