"""The one impure step: server-side apply what render returned, delete what it did not.

One field manager (entrepot-operator), with force: the operator owns these fields; a hand
edit of them is put back on the next reconcile. Before the first apply of a child the object
at that name is read: one that is not this mirror's is never applied over (reconcile.claim).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from entrepot_operator import FIELD_MANAGER

log = logging.getLogger("entrepot_operator.apply")

API_VERSIONS = {
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "Ingress": "networking.k8s.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}


CRD_TTL = 60.0


class Applier:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.dyn = dynamic.DynamicClient(api)
        self._unserved: dict[str, float] = {}
        self._seen: dict[tuple[str, str, str], str] = {}
        self._crds: dict[str, tuple[bool, float]] = {}
        # What this process last applied to each child (a digest of the body, and the child's
        # version right after), and the child as last seen (by an apply or a watch event).
        self._applied: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._absent: set[tuple[str, str, str]] = set()

    def _resource(self, kind: str) -> Any:
        """The dynamic client re-runs the whole API discovery on every miss, so a kind found
        missing (no ServiceMonitor CRD) is remembered for a minute instead of asked again."""
        if time.monotonic() < self._unserved.get(kind, 0.0):
            raise ResourceNotFoundError(f"{kind} is not served by this cluster")
        try:
            return self.dyn.resources.get(api_version=API_VERSIONS[kind], kind=kind)
        except ResourceNotFoundError:
            self._unserved[kind] = time.monotonic() + 60
            raise

    def known(self, kind: str, namespace: str, name: str) -> str | None:
        """The version this process last applied or read of a child it owns (None: read it)."""
        return self._seen.get((kind, namespace, name))

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """The child was deleted (an event said so): read it again before the next apply."""
        key = (kind, namespace, name)
        self._seen.pop(key, None)
        self._applied.pop(key, None)
        self._objects.pop(key, None)

    def observe(self, kind: str, body: dict[str, Any]) -> None:
        """A watch event's copy of a child: the newest this process knows."""
        meta = body.get("metadata") or {}
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        known = self._objects.get(key)
        if known is not None and _older(meta, known.get("metadata") or {}):
            return  # a late event (kopf's workers can hand one over after our own apply)
        self._objects[key] = body
        self._absent.discard(key)

    def seen(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The child as last applied or seen in a watch event (no request)."""
        return self._objects.get((kind, namespace, name))

    def seen_all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for (k, _, _), obj in list(self._objects.items()) if k == kind]

    def unchanged(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The child as last seen, if applying ``body`` would change nothing: the same body
        was applied by this process, and the child has not moved since (its generation, or
        its resourceVersion where it has none, is the one that apply left). None: apply."""
        meta = body["metadata"]
        key = (body["kind"], meta["namespace"], meta["name"])
        applied = self._applied.get(key)
        current = self._objects.get(key)
        if applied is None or current is None or applied[0] != _digest(body):
            return None
        if _version(current.get("metadata") or {}) != applied[1]:
            return None
        return current

    def remember(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        self._seen[body["kind"], meta["namespace"], meta["name"]] = _version(meta)

    def apply(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Apply; also say whether anything changed (an unchanged object keeps its
        generation, or resourceVersion), so that logs and events speak only of real actions.
        The caller read the object (or knows it) first: see :meth:`known`."""
        meta = body["metadata"]
        result = self._resource(body["kind"]).server_side_apply(
            body=body,
            namespace=meta["namespace"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        applied = dict(result.to_dict())
        key = (body["kind"], meta["namespace"], meta["name"])
        version = _version(applied.get("metadata", {}))
        changed = self._seen.get(key) != version
        self._seen[key] = version
        self._applied[key] = (_digest(body), version)
        self._objects[key] = applied
        self._absent.discard(key)
        return applied, changed

    def delete_if_owned(self, kind: str, name: str, namespace: str, owner_uid: str) -> bool:
        """Delete a child the spec no longer wants, only if this mirror owns it. A child
        found absent is remembered so until a watch event shows one (no request per
        reconcile for each kind a mirror does not have)."""
        key = (kind, namespace, name)
        if key in self._absent:
            return False
        try:
            resource = self._resource(kind)
        except ResourceNotFoundError:
            return False  # the kind is not served here (e.g. no ServiceMonitor CRD)
        try:
            current = resource.get(name=name, namespace=namespace)
        except NotFoundError:
            self._absent.add(key)
            return False
        owners = current.metadata.get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            return False
        resource.delete(name=name, namespace=namespace)
        self.forget(kind, namespace, name)
        self._absent.add(key)
        return True

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return dict(self._resource(kind).get(name=name, namespace=namespace).to_dict())
        except NotFoundError:
            return None

    def pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The pods with those labels, as the API writes them (camelCase dicts)."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        found = client.CoreV1Api(self.api).list_namespaced_pod(namespace, label_selector=selector)
        return [self.api.sanitize_for_serialization(p) for p in found.items]

    def events_about(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """The Events about one object (the reasons a pod or a claim is stuck)."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        found = client.CoreV1Api(self.api).list_namespaced_event(
            namespace, field_selector=selector, limit=50
        )
        return [self.api.sanitize_for_serialization(e) for e in found.items]

    def crd_exists(self, name: str) -> bool:
        """Asked once a minute at most (each reconcile wants to know): a CRD installed later is
        seen by the next reconcile after that, at the latest by the periodic resync."""
        now = time.monotonic()
        cached = self._crds.get(name)
        if cached is not None and now < cached[1]:
            return cached[0]
        try:
            client.ApiextensionsV1Api(self.api).read_custom_resource_definition(name)
            exists = True
        except ApiException as e:
            if e.status != 404:
                raise
            exists = False
        self._crds[name] = (exists, now + CRD_TTL)
        if exists:
            self._unserved.clear()  # a kind remembered as missing may be served now
        return exists


def _version(meta: dict[str, Any]) -> str:
    """What moves when a child really changes: its generation where it has one (status updates
    bump resourceVersion too), else its resourceVersion. A server-side apply that changes
    nothing moves neither."""
    return str(meta.get("generation") or meta.get("resourceVersion", ""))


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _older(meta: dict[str, Any], than: dict[str, Any]) -> bool:
    """Is the object of ``meta`` an older state than that of ``than``? By generation, then by
    resourceVersion (etcd's revision: opaque by contract, but increasing in every API server
    there is; compared only when both are numbers), never by arrival."""
    if meta.get("uid") and than.get("uid") and meta["uid"] != than["uid"]:
        return False  # another object of that name (deleted and made again): the event's wins
    mine, theirs = int(meta.get("generation") or 0), int(than.get("generation") or 0)
    if mine != theirs:
        return mine < theirs
    a, b = str(meta.get("resourceVersion", "")), str(than.get("resourceVersion", ""))
    return a.isdigit() and b.isdigit() and int(a) < int(b)
