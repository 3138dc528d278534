"""``entrepot-operator run``: configuration from the environment, checks, leader election, kopf.

Two checks before anything runs, each a clear message and exit status 2: the policy
(``ENTREPOT_POLICY``, policy.py) must parse, and the CRD of each kind (ModuleMirror,
NpmMirror) in the cluster must know every field this operator's own CRD has (an operator
upgraded before its CRD would have the API server prune fields it relies on, or refuse status
it writes).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from typing import Any

import kopf
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from entrepot_operator import VERSION
from entrepot_operator.apply import Applier
from entrepot_operator.crd import crd, crd_name
from entrepot_operator.handlers import Context, build_registry
from entrepot_operator.health import Health
from entrepot_operator.kinds import KINDS, MODULE_MIRROR, MirrorKind
from entrepot_operator.leader import LeaderElector
from entrepot_operator.metrics import OperatorMetrics
from entrepot_operator.policy import Policy, PolicyError

DEFAULT_IMAGE = "registry.example.com/entrepot/entrepot:0.1.0"
UPGRADE_CRD = (
    "apply this operator's CRD first: kubectl apply --server-side --force-conflicts"
    " -f helm/entrepot/crds/ (docs/helm.md, Upgrading)"
)
SHOWN = 8

log = logging.getLogger("entrepot_operator")


def _missing(wanted: dict[str, Any], installed: dict[str, Any], path: str) -> list[str]:
    """Fields of ``wanted`` (an OpenAPI schema) that ``installed`` lacks, as dotted paths
    (``[]`` for list items, ``{}`` for map values). Below an
    x-kubernetes-preserve-unknown-fields node everything is kept, so nothing is missing."""
    if installed.get("x-kubernetes-preserve-unknown-fields"):
        return []
    missing: list[str] = []
    have = installed.get("properties") or {}
    for name, sub in (wanted.get("properties") or {}).items():
        where = f"{path}.{name}" if path else name
        if name not in have:
            missing.append(where)
        else:
            missing += _missing(sub, have[name], where)
    for key, mark in (("items", "[]"), ("additionalProperties", "{}")):
        sub = wanted.get(key)
        if isinstance(sub, dict):
            got = installed.get(key)
            if isinstance(got, dict):
                missing += _missing(sub, got, path + mark)
            else:
                missing.append(path + mark)
    return missing


def crd_problems(
    installed: dict[str, Any] | None,
    wanted: dict[str, Any] | None = None,
    *,
    kind: MirrorKind = MODULE_MIRROR,
) -> list[str]:
    """Why the CRD of ``kind`` in the cluster (as the API returns it, camelCase) cannot serve
    this operator, compared with the operator's own CRD (crd.crd()); empty when it can."""
    wanted = wanted or crd(kind)
    name = crd_name(kind)
    if installed is None:
        return [f"the CustomResourceDefinition {name} is not installed: {UPGRADE_CRD}"]
    versions = {v.get("name"): v for v in (installed.get("spec") or {}).get("versions") or []}
    version = versions.get(VERSION)
    if version is None or not version.get("served"):
        served = ", ".join(sorted(n for n, v in versions.items() if v.get("served"))) or "none"
        return [
            f"the CustomResourceDefinition {name} does not serve {VERSION} (it serves"
            f" {served}): {UPGRADE_CRD}"
        ]
    problems = []
    if "status" not in (version.get("subresources") or {}):
        problems.append(f"{name} {VERSION} has no status subresource")
    (own,) = [v for v in wanted["spec"]["versions"] if v["name"] == VERSION]
    lacking = _missing(
        own["schema"]["openAPIV3Schema"],
        (version.get("schema") or {}).get("openAPIV3Schema") or {},
        "",
    )
    if lacking:
        more = f" and {len(lacking) - SHOWN} more" if len(lacking) > SHOWN else ""
        problems.append(
            f"the CustomResourceDefinition {name} in the cluster is older than this"
            f" operator: it lacks {', '.join(lacking[:SHOWN])}{more}"
        )
    if problems:
        problems[-1] += f"; {UPGRADE_CRD}"
    return problems


def _installed_crd(api: client.ApiClient, name: str) -> dict[str, Any] | None:
    """The CRD as the API serves it (raw JSON: the client's models are not needed here)."""
    try:
        response: Any = client.ApiextensionsV1Api(api).read_custom_resource_definition(
            name, _preload_content=False
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    found: dict[str, Any] = json.loads(response.data)
    return found


def _fail(message: str) -> int:
    log.error("%s", message)
    print(f"entrepot-operator: {message}", file=sys.stderr)
    return 2


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "0.0.0.0", int(port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_operator(*, namespaces: list[str] | None) -> int:
    logging.basicConfig(
        level=os.environ.get("ENTREPOT_LOG_LEVEL", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if os.environ.get("ENTREPOT_LOG_LEVEL", "info").lower() != "debug":
        # kopf says "Handler ... succeeded" for every event; our own line per action suffices.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    watched = namespaces or [
        n.strip() for n in os.environ.get("ENTREPOT_WATCH_NAMESPACES", "").split(",") if n.strip()
    ]
    try:
        policy = Policy.from_env(os.environ)
    except PolicyError as e:
        return _fail(f"{e} (the chart's `policy` values)")
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as e:
            print(
                f"entrepot-operator: no cluster to talk to: not in a pod, and no usable kubeconfig"
                f" ({e}); set KUBECONFIG or run inside the cluster",
                file=sys.stderr,
            )
            return 2
    api = client.ApiClient()
    problems: list[str] = []
    for kind in KINDS:
        name = crd_name(kind)
        try:
            problems += crd_problems(_installed_crd(api, name), kind=kind)
        except ApiException as e:
            return _fail(f"cannot read the CustomResourceDefinition {name}: {e.status} {e.reason}")
        except urllib3.exceptions.HTTPError as e:
            return _fail(f"cannot reach the API server to read {name}: {e}")
    if problems:
        return _fail("; ".join(problems))
    names = ", ".join(crd_name(k) for k in KINDS)
    log.info("CRDs %s: each fits this operator; policy: %s", names, policy)
    metrics = OperatorMetrics()
    metrics_at = os.environ.get("ENTREPOT_OPERATOR_METRICS", "0.0.0.0:9090")
    if metrics_at != "off":
        host, port = _address(metrics_at)
        start_http_server(port, addr=host, registry=metrics.registry)
    health_host, health_port = _address(os.environ.get("ENTREPOT_OPERATOR_HEALTH", "0.0.0.0:8080"))
    kopf_liveness = f"http://127.0.0.1:{_free_port()}/healthz"
    health = Health(health_host, health_port, kopf_url=kopf_liveness)
    health.start()
    namespace = os.environ.get("POD_NAMESPACE")
    if namespace:  # in a cluster: only the holder of the Lease reconciles
        elector = LeaderElector(
            api, namespace=namespace, identity=os.environ.get("POD_NAME") or os.uname().nodename
        )
        elector.acquire()
        threading.Thread(target=elector.keep, daemon=True, name="lease").start()
    health.leading = True
    ctx = Context(
        api=api,
        applier=Applier(api),
        image=os.environ.get("ENTREPOT_OPERATOR_IMAGE") or DEFAULT_IMAGE,
        metrics=metrics,
        policy=policy,
        namespaces=tuple(watched),
    )
    kopf.run(
        registry=build_registry(ctx),
        standalone=True,
        clusterwide=not watched,
        namespaces=watched,
        liveness_endpoint=kopf_liveness,
    )
    return 0
