"""The mirror's Deployment: `entrepot serve` with its config, cache, credentials and probes
(the same for both kinds: what differs is in the config file)."""

from __future__ import annotations

import copy
from typing import Any

from entrepot_operator.api import MirrorSpec
from entrepot_operator.render.meta import (
    CACHE_DIR,
    CONFIG_HASH_ANNOTATION,
    CONFIG_PATH,
    PORT,
    SECRETS_DIR,
    Owner,
    cache_claim_name,
    config_name,
    metadata,
    selector_labels,
)

RUN_AS = 65532
PROGRESS_DEADLINE_SECONDS = 180
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}


def secret_volume(spec: MirrorSpec) -> dict[str, Any] | None:
    """One projected volume with every referenced Secret key at a fixed file name."""
    sources = [
        {"secret": {"name": f.ref.secret_name, "items": [{"key": f.ref.key, "path": f.file}]}}
        for f in spec.secret_files()
    ]
    if not sources:
        return None
    return {"name": "credentials", "projected": {"sources": sources, "defaultMode": 0o400}}


def render_deployment(
    spec: MirrorSpec,
    owner: Owner,
    *,
    image: str,
    config_hash: str,
    scrape_annotations: bool,
) -> dict[str, Any]:
    annotations = {CONFIG_HASH_ANNOTATION: config_hash}
    if scrape_annotations:
        annotations |= {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(PORT),
            "prometheus.io/path": "/metrics",
        }
    if spec.storage.empty_dir is not None:
        cache: dict[str, Any] = {"name": "cache", "emptyDir": {}}
        if spec.storage.empty_dir.size_limit:
            cache["emptyDir"]["sizeLimit"] = spec.storage.empty_dir.size_limit
    else:
        cache = {"name": "cache", "persistentVolumeClaim": {"claimName": cache_claim_name(owner)}}
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_name(owner)}},
        cache,
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_PATH, "subPath": "config.yaml", "readOnly": True},
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    secrets = secret_volume(spec)
    if secrets is not None:
        volumes.append(secrets)
        mounts.append({"name": "credentials", "mountPath": SECRETS_DIR, "readOnly": True})
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}
    container: dict[str, Any] = {
        "name": "mirror",
        "image": spec.image or image,
        "args": ["serve", "--config", CONFIG_PATH],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "livenessProbe": probe,
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}},
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    # Never BestEffort (refused in namespaces with a ResourceQuota, evicted first): the
    # measured resident size of a mirror is 175-182 MiB, and `direct` runs go and git. A spec's
    # own resources replace these whole (merged per key, a default limit could fall below the
    # user's request).
    container["resources"] = spec.resources or copy.deepcopy(DEFAULT_RESOURCES)
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        # The mirror never talks to the Kubernetes API: no token in its pods.
        "automountServiceAccountToken": False,
        "securityContext": {
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Let in-flight downloads finish (the server's own shutdown_timeout is 30 s).
        "terminationGracePeriodSeconds": 40,
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in spec.image_pull_secrets]
    for key, value in (
        ("nodeSelector", spec.node_selector),
        ("tolerations", spec.tolerations),
        ("affinity", spec.affinity),
        ("topologySpreadConstraints", spec.topology_spread_constraints),
    ):
        if value:
            pod[key] = value
    # A ReadWriteOnce volume can be attached to one node at a time: a rolling update whose new
    # pod lands elsewhere would wait forever, so such mirrors are replaced, not rolled.
    rwo = spec.storage.empty_dir is None and spec.storage.access_mode == "ReadWriteOnce"
    strategy = {"type": "Recreate"} if rwo else {"type": "RollingUpdate"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, owner.name),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(owner)},
            "strategy": strategy,
            # A mirror pod that is not ready in 3 minutes will not be by waiting (Kubernetes'
            # default is 10): the status says RolloutFailed sooner, with the cause.
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": selector_labels(owner), "annotations": annotations},
                "spec": pod,
            },
        },
    }
