"""Observed children → a mirror's status (either kind). Pure: the caller passes what it read
and the time."""

from __future__ import annotations

from typing import Any, Literal

from entrepot_operator.api import Condition, MirrorStatus

Kind = Literal["Ready", "Progressing", "Degraded", "Drifted"]
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
    cause: tuple[str, str] | None = None,
    drift: str | None = None,
) -> MirrorStatus:
    """``cause``: why pods are not ready (:func:`not_ready_cause`), put in Ready's reason.
    ``drift``: fields other managers set on the children (entrepot_operator.drift)."""

    def cond(kind: Kind, status: Status, reason: str, message: str) -> Condition:
        return _carry(previous, kind, status, reason, message, generation=generation, now=now)

    if deployment is None:
        conditions = [
            cond("Ready", "False", "Creating", "the mirror's Deployment does not exist yet"),
            cond("Progressing", "True", "Creating", "creating the mirror's children"),
            cond("Degraded", "False", "AsExpected", ""),
        ]
        return MirrorStatus(
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
    elif cause is not None:
        readiness = cond("Ready", "False", cause[0], f"{ready}/{replicas} pods ready; {cause[1]}")
    else:
        readiness = cond("Ready", "False", "Unavailable", f"{ready}/{replicas} pods ready")
    rolling = not current or updated < replicas or ready < replicas
    if stuck:
        progressing = cond(
            "Progressing", "False", "ProgressDeadlineExceeded", str(progress.get("message") or "")
        )
    elif rolling:
        progressing = cond(
            "Progressing", "True", "RollingOut", f"{updated}/{replicas} pods updated"
        )
    else:
        progressing = cond("Progressing", "False", "Stable", "")
    if stuck or failure.get("status") == "True":
        why = failure.get("message") or progress.get("message") or "the rollout is stuck"
        if cause is not None:
            why = f"{why}; {cause[1]}"
        degraded = cond("Degraded", "True", "RolloutFailed", str(why))
    else:
        degraded = cond("Degraded", "False", "AsExpected", "")
    drifted = (
        cond("Drifted", "True", "ForeignFields", drift)
        if drift
        else cond("Drifted", "False", "AsExpected", "")
    )
    return MirrorStatus(
        observed_generation=generation,
        replicas=replicas,
        ready_replicas=ready,
        url=url,
        config_hash=config_hash,
        conditions=[readiness, progressing, degraded, drifted],
    )


def invalid_spec_status(
    *, generation: int, message: str, previous: list[Condition], now: str
) -> MirrorStatus:
    """A spec that slipped past the schema: Ready=False with a reason, never a crash loop."""

    def cond(kind: Kind, status: Status, reason: str, text: str) -> Condition:
        return _carry(previous, kind, status, reason, text, generation=generation, now=now)

    return MirrorStatus(
        observed_generation=generation,
        conditions=[
            cond("Ready", "False", "InvalidSpec", message),
            cond("Progressing", "False", "InvalidSpec", "fix the spec; nothing was changed"),
            cond("Degraded", "True", "InvalidSpec", message),
        ],
    )


def failed_status(
    *,
    generation: int,
    reason: str,
    message: str,
    previous: list[Condition],
    now: str,
    base: MirrorStatus | None,
) -> MirrorStatus:
    """The spec could not be carried out (a child failed to apply, a name is taken, the policy
    refuses it): Ready=False and Degraded=True with the reason and the first failure, whatever
    the pods say, until a reconcile succeeds. ``base``: the status computed from what exists
    (replicas, URL), kept apart from the conditions."""

    def cond(kind: Kind, status: Status, why: str, text: str) -> Condition:
        return _carry(previous, kind, status, why, text, generation=generation, now=now)

    progressing = next(
        (c for c in (base.conditions if base else []) if c.type == "Progressing"), None
    )
    fields = base.model_dump(exclude={"conditions"}) if base is not None else {}
    return MirrorStatus(
        **{**fields, "observed_generation": generation},
        conditions=[
            cond("Ready", "False", reason, message),
            progressing
            if progressing is not None
            else cond("Progressing", "False", reason, "nothing was changed"),
            cond("Degraded", "True", reason, message),
            *(c for c in (base.conditions if base else []) if c.type == "Drifted"),
        ],
    )


# Why pods are not ready, most telling first: (reason, the container waiting reasons it covers).
_WAITING = {
    "ImagePullBackOff": "ImagePullBackOff",
    "ErrImagePull": "ImagePullBackOff",
    "InvalidImageName": "ImagePullBackOff",
    "CrashLoopBackOff": "CrashLoopBackOff",
    "CreateContainerConfigError": "ConfigError",
    "CreateContainerError": "ConfigError",
}


def _latest(events: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    """The newest Warning Event about that object."""
    mine = [
        e
        for e in events
        if e.get("type") == "Warning"
        and (e.get("involvedObject") or {}).get("kind") == kind
        and (e.get("involvedObject") or {}).get("name") == name
    ]
    stamp = lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")  # noqa: E731
    return max(mine, key=stamp) if mine else None


def _secret_missing(text: str) -> bool:
    return "secret" in text.lower() and "not found" in text.lower()


def not_ready_cause(
    *,
    pods: list[dict[str, Any]],
    claim: dict[str, Any] | None,
    events: list[dict[str, Any]],
) -> tuple[str, str] | None:
    """The first real reason the mirror's pods are not ready, as (reason, message): what the
    cache claim's, the pods' and their Events' own words say. Pure; None when nothing says.

    Reasons: StoragePending (the claim is not bound), Unschedulable, ImagePullBackOff,
    CrashLoopBackOff, SecretMissing (a mounted Secret or key does not exist), ConfigError,
    ReadinessFailing (running, but /readyz fails)."""
    if claim is not None and (claim.get("status") or {}).get("phase") == "Pending":
        name = claim["metadata"]["name"]
        event = _latest(events, "PersistentVolumeClaim", name)
        why = event.get("message") if event else "waiting for a volume to be bound"
        return "StoragePending", f"PersistentVolumeClaim {name} is Pending: {why}"
    for pod in pods:
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return "Unschedulable", f"pod {name}: {c.get('message') or c.get('reason')}"
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in _WAITING:
                text = waiting.get("message") or reason
                if _secret_missing(text):
                    return "SecretMissing", f"pod {name}: {text}"
                if reason == "CrashLoopBackOff":
                    last = (cs.get("lastState") or {}).get("terminated") or {}
                    if last:
                        text = f"{text}; last exit code {last.get('exitCode')}"
                        if last.get("message"):
                            text += f": {last['message']}"
                return _WAITING[str(reason)], f"pod {name}: {text}"
        event = _latest(events, "Pod", name)
        if event is not None:
            text = str(event.get("message") or "")
            if event.get("reason") == "FailedMount" and _secret_missing(text):
                return "SecretMissing", f"pod {name}: {text}"
            if event.get("reason") == "Unhealthy":
                return "ReadinessFailing", f"pod {name}: {text}"
    return None


def queued_status(
    base: MirrorStatus, message: str, *, generation: int, previous: list[Condition], now: str
) -> MirrorStatus:
    """The mirror waits for its turn to roll onto a new operator image (upgrades.py): it
    serves on the old one meanwhile, so Ready stays what it is; Progressing says so."""
    queued = _carry(
        previous, "Progressing", "True", "UpgradeQueued", message, generation=generation, now=now
    )
    conditions = [queued if c.type == "Progressing" else c for c in base.conditions]
    return base.model_copy(update={"conditions": conditions})
