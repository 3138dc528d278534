"""The cluster is real: rollouts, schema and CEL validation, garbage collection, volumes, Helm.

Runs against any cluster given by a kubeconfig; by default the local control plane.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

FIELD_MANAGER = "entrepot-e2e"


@pytest.fixture(scope="session")
def api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="session")
def dyn(api: client.ApiClient) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(api)


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    # The service account controller must have made "default" before pods can be created.
    wait_for(lambda: core.read_namespaced_service_account("default", name), 30, "default SA")
    yield name
    core.delete_namespace(name)


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except ApiException as e:
            last = e
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout}s (last error: {last})")


def apply(dyn: dynamic.DynamicClient, body: dict[str, Any], namespace: str | None = None) -> Any:
    resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    return resource.server_side_apply(body=body, namespace=namespace, field_manager=FIELD_MANAGER)


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
            },
        },
    }


def available(apps: client.AppsV1Api, name: str, namespace: str) -> bool:
    d = apps.read_namespaced_deployment(name, namespace)
    return any(c.type == "Available" and c.status == "True" for c in d.status.conditions or [])


def test_server_side_apply_rolls_a_deployment_out_to_ready_pods(
    api: client.ApiClient, dyn: dynamic.DynamicClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    started = time.monotonic()
    apply(dyn, deployment("web", replicas=3), namespace)
    wait_for(lambda: available(apps, "web", namespace), 30, "Deployment Available")
    rollout_seconds = time.monotonic() - started
    replica_sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(replica_sets) == 1
    assert replica_sets[0].metadata.owner_references[0].name == "web"
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.spec.node_name  # the real scheduler placed it
        assert pod.status.phase == "Running"
        assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    print(f"apply → Deployment Available: {rollout_seconds:.1f}s")


def test_scaling_and_fields_owned_by_the_manager(
    api: client.ApiClient, dyn: dynamic.DynamicClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api)
    apply(dyn, deployment("scaled", replicas=1), namespace)
    wait_for(lambda: available(apps, "scaled", namespace), 30, "Deployment Available")
    apply(dyn, deployment("scaled", replicas=4), namespace)
    wait_for(
        lambda: apps.read_namespaced_deployment("scaled", namespace).status.ready_replicas == 4,
        30,
        "4 ready replicas",
    )
    d = apps.read_namespaced_deployment("scaled", namespace)
    managers = {m.manager for m in d.metadata.managed_fields}
    assert FIELD_MANAGER in managers


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.e2e.entrepot.dev"},
    "spec": {
        "group": "e2e.entrepot.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "string", "enum": ["small", "large"]},
                                    "replicas": {"type": "integer", "minimum": 1},
                                    "shared": {"type": "boolean"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.replicas <= 1 || self.shared",
                                        "message": "replicas > 1 needs shared storage",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="session")
def widget_crd(api: client.ApiClient, dyn: dynamic.DynamicClient) -> Iterator[None]:
    apply(dyn, CRD)
    ext = client.ApiextensionsV1Api(api)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(CRD["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
        )

    wait_for(established, 30, "CRD Established")
    dyn.resources.invalidate_cache()
    yield
    ext.delete_custom_resource_definition(CRD["metadata"]["name"])


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "e2e.entrepot.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.mark.usefixtures("widget_crd")
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"size": "huge", "replicas": 1}, 'Unsupported value: "huge"'),
        ({"size": "small", "replicas": 0}, "should be greater than or equal to 1"),
        ({"size": "small", "replicas": 3, "shared": False}, "replicas > 1 needs shared storage"),
    ],
)
def test_the_api_server_refuses_bad_custom_resources_with_its_message(
    dyn: dynamic.DynamicClient, namespace: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as caught:
        apply(dyn, widget("bad", **spec), namespace)
    assert caught.value.status == 422
    assert message in json.loads(caught.value.body)["message"]


@pytest.mark.usefixtures("widget_crd")
def test_a_valid_custom_resource_is_stored(dyn: dynamic.DynamicClient, namespace: str) -> None:
    created = apply(dyn, widget("good", size="large", replicas=3, shared=True), namespace)
    assert created.spec.replicas == 3


def test_deleting_an_owner_garbage_collects_its_dependents(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for i in range(3):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"dependent-{i}", "ownerReferences": [ref]}}
        )
    core.delete_namespaced_config_map("owner", namespace)

    def collected() -> bool:
        names = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
        return not any(n.startswith("dependent-") for n in names)

    wait_for(collected, 30, "dependents garbage-collected")


def test_a_pod_with_a_claim_binds_a_volume_and_runs(
    api: client.ApiClient, dyn: dynamic.DynamicClient, namespace: str
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    apply(
        dyn,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "cache"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        namespace,
    )
    wait_for(
        lambda: (
            core.read_namespaced_persistent_volume_claim("cache", namespace).status.phase == "Bound"
        ),
        30,
        "PVC Bound",
    )
    body = deployment("with-volume", replicas=1)
    pod_spec = body["spec"]["template"]["spec"]
    pod_spec["volumes"] = [{"name": "cache", "persistentVolumeClaim": {"claimName": "cache"}}]
    pod_spec["containers"][0]["volumeMounts"] = [{"name": "cache", "mountPath": "/cache"}]
    apply(dyn, body, namespace)
    wait_for(lambda: available(apps, "with-volume", namespace), 30, "Deployment Available")


CHART = {
    "Chart.yaml": "apiVersion: v2\nname: throwaway\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n",
    "values.yaml": "replicas: 2\n",
    "templates/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app: {{ .Release.Name }}}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      containers: [{name: app, image: example.com/app:1}]
""",
    "templates/service.yaml": """apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: 80}]
""",
}


def test_helm_lint_template_and_install_wait(
    tmp_path: Path, kubeconfig: str, bins: Path, namespace: str, api: client.ApiClient
) -> None:
    chart = tmp_path / "throwaway"
    for name, text in CHART.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)
    helm = str(bins / "helm") if (bins / "helm").exists() else "helm"
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "HELM_CACHE_HOME": str(tmp_path / "hc"),
        "HELM_CONFIG_HOME": str(tmp_path / "hconf"),
        "HELM_DATA_HOME": str(tmp_path / "hd"),
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [helm, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "1 chart(s) linted, 0 chart(s) failed" in run("lint", str(chart))
    rendered = run("template", "demo", str(chart))
    assert "kind: Deployment" in rendered
    assert "replicas: 2" in rendered
    run("install", "demo", str(chart), "-n", namespace, "--wait", "--timeout", "60s")
    status = json.loads(run("status", "demo", "-n", namespace, "-o", "json"))
    assert status["info"]["status"] == "deployed"
    assert (
        client.AppsV1Api(api).read_namespaced_deployment("demo", namespace).status.ready_replicas
        == 2
    )
    version = json.loads(run("version", "--template", '{"v":"{{.Version}}"}') or "{}")
    assert version["v"].startswith("v3.")


def test_the_local_control_plane_stays_within_budget(control_plane: Any) -> None:
    if control_plane is None:
        pytest.skip("external cluster: not ours to measure")
    rss = control_plane.rss_bytes()
    started = os.environ.get("ENTREPOT_E2E_START_SECONDS")
    print(f"control plane RSS: {rss / 2**20:.0f} MiB; start to ready: {started}s")
    assert rss < 2 * 2**30


def test_the_server_reports_a_stamped_version(api: client.ApiClient) -> None:
    """Unstamped builds say v0.0.0-master, which breaks Helm's kubeVersion checks."""
    version = client.VersionApi(api).get_code()
    assert version.git_version.startswith("v1.")
    assert int(version.minor.rstrip("+")) >= 34


def test_every_node_heartbeats_through_a_lease(api: client.ApiClient) -> None:
    """Without Leases the node controller marks every node NotReady after ~50 s, and their
    pods unready: a suite longer than that would fail for no reason of its own."""
    nodes = {n.metadata.name for n in client.CoreV1Api(api).list_node().items}
    leases = wait_for(
        lambda: (
            {
                lease.metadata.name
                for lease in client.CoordinationV1Api(api)
                .list_namespaced_lease("kube-node-lease")
                .items
            }
            >= nodes
            and nodes
        ),
        30,
        "a Lease per node",
    )
    assert leases
