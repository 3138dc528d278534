"""``entrepot-operator run``: configuration from the environment, leader election, kopf."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from entrepot_operator.apply import Applier
from entrepot_operator.handlers import Context, build_registry
from entrepot_operator.health import Health
from entrepot_operator.leader import LeaderElector
from entrepot_operator.metrics import OperatorMetrics

DEFAULT_IMAGE = "registry.example.com/entrepot/entrepot:0.1.0"


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
    )
    kopf.run(
        registry=build_registry(ctx),
        standalone=True,
        clusterwide=not watched,
        namespaces=watched,
        liveness_endpoint=kopf_liveness,
    )
    return 0
