"""The kopf handlers and the periodic resync: every path ends in :func:`Reconciler.run`.

Both kinds (kinds.py: ModuleMirror, NpmMirror) get the same handlers, registered once per
kind; a child's or a pod's event finds its mirror's kind from its owner reference or its
component label. One reconcile at a time per mirror: the mirror's own events, its children's
and pods' events and the resync all go through one lock per mirror, and each re-reads the
mirror inside it, so an older spec is never applied after a newer one. Events that arrive
while one reconcile runs and another waits are folded into the waiting one. The status is
written with the resourceVersion that was read (a precondition), and only when it changed.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from entrepot_operator import GROUP, VERSION
from entrepot_operator.apply import Applier
from entrepot_operator.kinds import BY_COMPONENT, BY_KIND, KINDS, MODULE_MIRROR, MirrorKind
from entrepot_operator.metrics import OperatorMetrics
from entrepot_operator.policy import Policy
from entrepot_operator.reconcile import Outcome, api_message, reconcile
from entrepot_operator.upgrades import limit_from_env

MANAGED = {"app.kubernetes.io/managed-by": "entrepot-operator"}
CHILD_KIND = {  # plural -> kind, of the children whose events reconcile their owner
    "deployments": "Deployment",
    "services": "Service",
    "configmaps": "ConfigMap",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "ingresses": "Ingress",
}
CHILD_KINDS = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "persistentvolumeclaims"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "ingresses"),
)
COMPONENT = "app.kubernetes.io/component"


def _a_mirror_component(value: str | None, **_: Any) -> bool:
    return value in BY_COMPONENT


MIRROR_PODS: dict[str, Any] = {"app.kubernetes.io/name": "entrepot", COMPONENT: _a_mirror_component}
RETRY_SECONDS = 30.0
STATUS_ATTEMPTS = 3
log = logging.getLogger("entrepot_operator")


@dataclass
class Context:
    api: client.ApiClient
    applier: Applier
    image: str
    metrics: OperatorMetrics
    policy: Policy = field(default_factory=Policy)
    namespaces: tuple[str, ...] = ()  # watched; empty: every namespace
    resync_seconds: float = field(
        default_factory=lambda: float(os.environ.get("ENTREPOT_OPERATOR_RESYNC", "300"))
    )
    upgrade_limit: int = field(default_factory=limit_from_env)


class _Slot:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = 0


class Reconciler:
    """Serialises the reconciles of each mirror (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._guard = threading.Lock()
        self._slots: dict[tuple[str, str, str], _Slot] = {}
        self._queued: set[tuple[str, str, str]] = set()
        self.objects = client.CustomObjectsApi(ctx.api)

    def run(
        self, namespace: str, name: str, *, kind: MirrorKind = MODULE_MIRROR, fold: bool = False
    ) -> Outcome | None:
        """Reconcile the mirror as it is now. ``fold``: skip when another reconcile of it is
        already waiting (it will read the mirror after this event anyway). None: the mirror is
        gone, or the reconcile was folded."""
        key = (kind.kind, namespace, name)
        with self._guard:
            slot = self._slots.setdefault(key, _Slot())
            if fold and slot.waiting:
                return None
            slot.waiting += 1
        try:
            with slot.lock:
                with self._guard:
                    slot.waiting -= 1
                return self._locked(kind, namespace, name)
        finally:
            with self._guard:
                if not slot.waiting and not slot.lock.locked():
                    self._slots.pop(key, None)

    def _locked(self, kind: MirrorKind, namespace: str, name: str) -> Outcome | None:
        for _ in range(STATUS_ATTEMPTS):
            mirror = self._read(kind, namespace, name)
            if mirror is None or mirror["metadata"].get("deletionTimestamp"):
                return None
            outcome = self._reconcile(kind, mirror)
            if self._write_status(kind, mirror, outcome.status):
                _report(mirror, outcome)
                self._next_upgrades((kind.kind, namespace, name), outcome)
                return outcome
        log.warning("%s/%s: status not written: the %s kept changing", namespace, name, kind.kind)
        return outcome

    def _next_upgrades(self, key: tuple[str, str, str], outcome: Outcome) -> None:
        """A queued mirror waits for a rolling one (of either kind) to finish: when one has,
        the queued ones are reconciled again (in their own threads: each takes its own lock)."""
        with self._guard:
            if outcome.queued is not None:
                self._queued.add(key)
                return
            self._queued.discard(key)
            if not outcome.rolled_out or not self._queued:
                return
            waiting = sorted(self._queued)
        for kind, ns, mirror in waiting:
            context = contextvars.copy_context()  # kopf's Event posting needs its variables
            threading.Thread(
                target=context.run,
                args=(self._quietly, BY_KIND[kind], ns, mirror),
                daemon=True,
                name="upgrade",
            ).start()

    def _quietly(self, kind: MirrorKind, namespace: str, name: str) -> None:
        try:
            self.run(namespace, name, kind=kind, fold=True)
        except Exception as e:
            log.warning("%s/%s: %s", namespace, name, e)

    def _read(self, kind: MirrorKind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return cast(
                dict[str, Any],
                self.objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural, name
                ),
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def _reconcile(self, kind: MirrorKind, mirror: dict[str, Any]) -> Outcome:
        ctx = self.ctx
        try:
            return reconcile(
                mirror,
                kind=kind,
                applier=ctx.applier,
                image=ctx.image,
                metrics=ctx.metrics,
                policy=ctx.policy,
                upgrade_limit=ctx.upgrade_limit,
            )
        except ApiException as e:  # outside the children (discovery, CRD lookup): retried
            ctx.metrics.record("error", 0.0)
            raise kopf.TemporaryError(f"API error {api_message(e)}", delay=RETRY_SECONDS) from e

    def _write_status(
        self, kind: MirrorKind, mirror: dict[str, Any], status: dict[str, Any]
    ) -> bool:
        """Patch the status if it changed, only onto the version read; False: it moved."""
        if (mirror.get("status") or {}) == status:
            return True
        meta = mirror["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            self.objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], kind.plural, meta["name"], body
            )
        except ApiException as e:
            if e.status == 409:
                return False
            if e.status == 404:
                return True  # deleted meanwhile: nothing to report on
            raise
        return True


def _report(body: Any, outcome: Outcome) -> None:
    """One log line and one Event per real action or failure (nothing when nothing changed)."""
    where = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    if outcome.error:
        kopf.warn(body, reason="InvalidSpec", message=outcome.error)
        log.warning("%s: invalid spec: %s", where, outcome.error)
    for failure in outcome.failures:
        kopf.warn(body, reason=failure.reason, message=failure.text())
        log.warning("%s: %s: %s", where, failure.reason, failure.text())
    if outcome.applied or outcome.deleted:
        applied = ", ".join(outcome.applied) or "-"
        message = f"applied {applied}; deleted {', '.join(outcome.deleted) or '-'}"
        kopf.info(body, reason="Reconciled", message=message)
        log.info("%s: %s", where, message)


def _plain(body: Any) -> dict[str, Any]:
    """A kopf Body as plain dicts and lists (it is a read-only view of the event)."""
    return cast(dict[str, Any], json.loads(json.dumps(dict(body), default=dict)))


def _pod_state(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What status.not_ready_cause and readiness read from a pod."""
    status = pod.get("status") or {}
    conditions = tuple(
        (c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []
    )
    waiting = tuple(
        ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        for cs in status.get("containerStatuses") or []
    )
    return (status.get("phase"), conditions, waiting)


def _owner_of(body: dict[str, Any]) -> tuple[MirrorKind, str] | None:
    """The mirror (kind, name) that controls a child, if one does."""
    refs = body.get("metadata", {}).get("ownerReferences") or []
    return next(((BY_KIND[r["kind"]], r["name"]) for r in refs if r.get("kind") in BY_KIND), None)


def _resync_loop(reconciler: Reconciler, stop: threading.Event) -> None:
    """Every ctx.resync_seconds, reconcile every mirror of both kinds: what no event told us
    about (a child kind not watched, a CRD installed later, a missed event) is put right."""
    ctx = reconciler.ctx
    while not stop.wait(ctx.resync_seconds):
        for kind in KINDS:
            _resync(reconciler, kind)


def _resync(reconciler: Reconciler, kind: MirrorKind) -> None:
    ctx = reconciler.ctx
    try:
        items: list[dict[str, Any]] = []
        for namespace in ctx.namespaces or (None,):
            listing = cast(
                dict[str, Any],
                reconciler.objects.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural
                )
                if namespace
                else reconciler.objects.list_cluster_custom_object(GROUP, VERSION, kind.plural),
            )
            items.extend(listing.get("items") or [])
        for item in items:
            meta = item["metadata"]
            try:
                reconciler.run(meta["namespace"], meta["name"], kind=kind, fold=True)
            except (ApiException, kopf.TemporaryError) as e:
                log.warning("resync of %s %s/%s: %s", kind.kind, meta["namespace"], meta["name"], e)
    except ApiException as e:
        log.warning("resync: cannot list the %s: %s", kind.plural, api_message(e))


def _register_mirrors(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    """The mirrors' own handlers, for each kind."""

    def on_mirror(kind: MirrorKind) -> Callable[..., None]:
        def changed(body: kopf.Body, **_: Any) -> None:
            meta = body["metadata"]
            outcome = reconciler.run(meta["namespace"], meta["name"], kind=kind)
            if outcome is not None and outcome.failures:
                # Retried until it works; the status and a Warning Event say why meanwhile.
                raise kopf.TemporaryError(outcome.failures[0].text(), delay=RETRY_SECONDS)

        return changed

    for kind in KINDS:
        # The same handler id for both kinds: kopf keeps its progress per object.
        handler = on_mirror(kind)
        for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
            on(GROUP, VERSION, kind.plural, registry=registry, id="reconcile")(handler)


def build_registry(ctx: Context) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    ctx.metrics.count_requests(ctx.api)
    reconciler = Reconciler(ctx)
    stop = threading.Event()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The kubernetes client's own config (in-cluster, or the kubeconfig)."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress in annotations, not status: the status schema is ours and typed.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="entrepot.dev"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="entrepot.dev", key="last-handled-configuration"
        )
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        if ctx.resync_seconds > 0:
            # In this handler's context: kopf's event posting (kopf.warn) needs its variables.
            context = contextvars.copy_context()
            threading.Thread(
                target=context.run,
                args=(_resync_loop, reconciler, stop),
                daemon=True,
                name="resync",
            ).start()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        stop.set()

    _register_mirrors(registry, reconciler)

    def on_child(kind: str) -> Callable[..., None]:
        def child_changed(body: kopf.Body, type: str | None = None, **_: Any) -> None:
            """A child changed or was deleted (by hand, or by someone else): reconcile its
            owner, which puts back what it wants (drift)."""
            owner = _owner_of(dict(body))
            namespace = body["metadata"].get("namespace")
            if type == "DELETED":
                ctx.applier.forget(kind, namespace, body["metadata"]["name"])
            elif namespace is not None:
                ctx.applier.observe(kind, _plain(body))
            if owner is None or namespace is None:
                return
            reconciler.run(namespace, owner[1], kind=owner[0], fold=True)

        return child_changed

    for group, version, plural in CHILD_KINDS:
        kopf.on.event(
            group, version, plural, labels=MANAGED, registry=registry, id=f"child-{plural}"
        )(on_child(CHILD_KIND[plural]))

    pod_states: dict[str, tuple[Any, ...]] = {}

    @kopf.on.event("", "v1", "pods", labels=MIRROR_PODS, registry=registry, id="mirror-pods")
    def pod_changed(body: kopf.Body, type: str | None = None, **_: Any) -> None:
        """A mirror pod changed (scheduled, pulled, crashed, ready): the status says why. Only
        a change of what the status reads from pods reconciles (not each of their updates)."""
        meta = body["metadata"]
        uid = str(meta.get("uid"))
        if type == "DELETED":
            pod_states.pop(uid, None)
        else:
            state = _pod_state(_plain(body))
            if pod_states.get(uid) == state:
                return
            pod_states[uid] = state
        labels = meta.get("labels") or {}
        name = labels.get("app.kubernetes.io/instance")
        kind = BY_COMPONENT.get(labels.get(COMPONENT, ""))
        if name and kind and meta.get("namespace"):
            reconciler.run(meta["namespace"], name, kind=kind, fold=True)

    return registry
