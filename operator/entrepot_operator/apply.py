"""The one impure step: server-side apply what render returned, delete what it did not.

One field manager (entrepot-operator), with force: the operator owns these fields; a hand
edit of them is put back on the next reconcile.
"""

from __future__ import annotations

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


class Applier:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.dyn = dynamic.DynamicClient(api)
        self._unserved: dict[str, float] = {}
        self._seen: dict[tuple[str, str, str], str] = {}

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

    def apply(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Apply; also say whether anything changed (an unchanged object keeps its
        generation, or resourceVersion), so that logs and events speak only of real actions."""
        meta = body["metadata"]
        result = self._resource(body["kind"]).server_side_apply(
            body=body,
            namespace=meta["namespace"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        applied = dict(result.to_dict())
        key = (body["kind"], meta["namespace"], meta["name"])
        # generation moves only with the spec (status updates bump resourceVersion too).
        got = applied.get("metadata", {})
        version = str(got.get("generation") or got.get("resourceVersion", ""))
        changed = self._seen.get(key) != version
        self._seen[key] = version
        return applied, changed

    def delete_if_owned(self, kind: str, name: str, namespace: str, owner_uid: str) -> bool:
        """Delete a child the spec no longer wants, only if this ModuleMirror owns it."""
        try:
            resource = self._resource(kind)
        except ResourceNotFoundError:
            return False  # the kind is not served here (e.g. no ServiceMonitor CRD)
        try:
            current = resource.get(name=name, namespace=namespace)
        except NotFoundError:
            return False
        owners = current.metadata.get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            return False
        resource.delete(name=name, namespace=namespace)
        return True

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return dict(self._resource(kind).get(name=name, namespace=namespace).to_dict())
        except NotFoundError:
            return None

    def crd_exists(self, name: str) -> bool:
        try:
            client.ApiextensionsV1Api(self.api).read_custom_resource_definition(name)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True
