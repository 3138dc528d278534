"""The kopf handlers: each a few lines of parse → render → apply → status (reconcile.py)."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from entrepot_operator import GROUP, VERSION
from entrepot_operator.apply import Applier
from entrepot_operator.metrics import OperatorMetrics
from entrepot_operator.reconcile import Outcome, reconcile

PLURAL = "modulemirrors"
MANAGED = {"app.kubernetes.io/managed-by": "entrepot-operator"}
CHILD_KINDS = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "persistentvolumeclaims"),
)
log = logging.getLogger("entrepot_operator")


@dataclass
class Context:
    api: client.ApiClient
    applier: Applier
    image: str
    metrics: OperatorMetrics


def _run(ctx: Context, body: dict[str, Any]) -> Outcome:
    try:
        return reconcile(body, applier=ctx.applier, image=ctx.image, metrics=ctx.metrics)
    except ApiException as e:
        ctx.metrics.record("error", 0.0)
        detail = e.reason
        with contextlib.suppress(ValueError, TypeError):
            detail = json.loads(e.body or "{}").get("message", detail)
        raise kopf.TemporaryError(f"API error {e.status}: {detail}", delay=10) from e


def _report(body: Any, outcome: Outcome) -> None:
    """One log line and one Event per real action (nothing when a reconcile changed nothing)."""
    where = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    if outcome.error:
        kopf.warn(body, reason="InvalidSpec", message=outcome.error)
        log.warning("%s: invalid spec: %s", where, outcome.error)
    elif outcome.applied or outcome.deleted:
        applied = ", ".join(outcome.applied) or "-"
        message = f"applied {applied}; deleted {', '.join(outcome.deleted) or '-'}"
        kopf.info(body, reason="Reconciled", message=message)
        log.info("%s: %s", where, message)


def build_registry(ctx: Context) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

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

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    def changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        outcome = _run(ctx, dict(body))
        patch.status.update(outcome.status)
        _report(body, outcome)

    for group, version, plural in CHILD_KINDS:

        @kopf.on.event(group, version, plural, labels=MANAGED, registry=registry)
        def child_changed(body: kopf.Body, **_: Any) -> None:
            """A child changed (or was deleted by hand): reconcile its owner (drift)."""
            owner = next(
                (
                    o
                    for o in body.get("metadata", {}).get("ownerReferences", [])
                    if o.get("kind") == "ModuleMirror"
                ),
                None,
            )
            if owner is None:
                return
            namespace = body["metadata"]["namespace"]
            objects = client.CustomObjectsApi(ctx.api)
            try:
                mirror = cast(
                    dict[str, Any],
                    objects.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, owner["name"]
                    ),
                )
            except ApiException as e:
                if e.status == 404:
                    return  # the owner is gone; garbage collection takes the child
                raise
            outcome = _run(ctx, mirror)
            try:
                objects.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, owner["name"], {"status": outcome.status}
                )
            except ApiException as e:
                if e.status != 404:  # deleted meanwhile: nothing to report on
                    raise
                return
            _report(mirror, outcome)

    return registry
