"""The operator end to end: the chart installed with helm, the operator running with the chart's
ServiceAccount (a token from the TokenRequest API, not admin), ModuleMirrors applied with the
real kubectl, and the mirror it configures serving the real go command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.gocmd import GoClient  # noqa: E402
from support.modules import universe  # noqa: E402
from support.servers import running_server, stop_process  # noqa: E402

RELEASE_NS = "entrepot-system"
SA = "entrepot"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kube(kubeconfig: str, bins: Path) -> Any:
    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kubectl = str(bins / "kubectl") if (bins / "kubectl").exists() else "kubectl"
        done = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done

    return run


@pytest.fixture(scope="module")
def api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="module")
def operator_kubeconfig(
    kubeconfig: str, kube: Any, bins: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Install the chart (CRDs, RBAC, ServiceAccount) and return a kubeconfig that acts as
    the chart's ServiceAccount, so the operator runs with exactly the chart's permissions."""
    helm = str(bins / "helm") if (bins / "helm").exists() else "helm"
    home = tmp_path_factory.mktemp("helm")
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "HELM_CACHE_HOME": str(home / "c"),
        "HELM_CONFIG_HOME": str(home / "f"),
        "HELM_DATA_HOME": str(home / "d"),
    }
    done = subprocess.run(
        [
            helm,
            "upgrade",
            "--install",
            "entrepot",
            str(ROOT / "helm" / "entrepot"),
            "-n",
            RELEASE_NS,
            "--create-namespace",
            "--set",
            "replicaCount=1",
            "--wait",
            "--timeout",
            "90s",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    token = kube("create", "token", SA, "-n", RELEASE_NS, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = admin["clusters"][0]
    path = home / "operator.kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": SA, "user": {"token": token}}],
                "contexts": [{"name": SA, "context": {"cluster": cluster["name"], "user": SA}}],
                "current-context": SA,
            }
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def operator(
    operator_kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    metrics_port, health_port = free_port(), free_port()
    proc = start_operator(
        operator_kubeconfig,
        log,
        name="e2e-operator",
        metrics=f"127.0.0.1:{metrics_port}",
        health=f"127.0.0.1:{health_port}",
    )
    try:
        yield {"proc": proc, "log": log, "metrics": metrics_port, "health": health_port}
    finally:
        stop_process(proc)


def start_operator(
    kubeconfig: str, log: Path, *, name: str, metrics: str, health: str
) -> subprocess.Popen[bytes]:
    """`entrepot-operator run` as the chart runs it: with a POD_NAMESPACE, so it elects."""
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "POD_NAMESPACE": RELEASE_NS,
        "POD_NAME": name,
        "ENTREPOT_OPERATOR_IMAGE": "registry.example.com/entrepot/entrepot:e2e",
        "ENTREPOT_OPERATOR_METRICS": metrics,
        "ENTREPOT_OPERATOR_HEALTH": health,
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "entrepot-operator"), "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def mirror(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "entrepot.dev/v1alpha1",
        "kind": "ModuleMirror",
        "metadata": {"name": name},
        "spec": {"go": {"proxy": "https://proxy.example.com,direct"}, **spec},
    }
    return json.dumps(body)


def get(kube: Any, *args: str) -> dict[str, Any]:
    return json.loads(kube("get", *args, "-o", "json").stdout)


def wait(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except AssertionError as e:
            last = e
        if last and not isinstance(last, AssertionError):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last})")


def ready(kube: Any, ns: str, name: str) -> bool:
    status = get(kube, "modulemirror", name, "-n", ns).get("status", {})
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


@pytest.fixture
def ns(kube: Any) -> Iterator[str]:
    name = f"mm-{os.urandom(3).hex()}"
    kube("create", "namespace", name)
    yield name
    kube("delete", "namespace", name, "--wait=false")


@pytest.mark.usefixtures("operator")
def test_a_mirror_becomes_ready_with_owned_children(kube: Any, ns: str) -> None:
    started = time.monotonic()
    kube("apply", "-n", ns, "-f", "-", input=mirror("gomods"))
    wait(lambda: ready(kube, ns, "gomods"), 30, "Ready=True")
    seconds = time.monotonic() - started
    mm = get(kube, "modulemirror", "gomods", "-n", ns)
    assert mm["status"]["url"] == f"http://gomods.{ns}.svc:8080"
    assert mm["status"]["observedGeneration"] == mm["metadata"]["generation"]
    # No finalizer: a mirror deleted while the operator is down must not hang.
    assert not mm["metadata"].get("finalizers")
    for kind, name in (
        ("configmap", "gomods-config"),
        ("deployment", "gomods"),
        ("service", "gomods"),
        ("pvc", "gomods-cache"),
    ):
        child = get(kube, kind, name, "-n", ns)
        assert child["metadata"]["ownerReferences"][0]["uid"] == mm["metadata"]["uid"], kind
    table = kube("get", "mm", "-n", ns).stdout
    assert "True" in table
    assert f"http://gomods.{ns}.svc:8080" in table
    print(f"apply → Ready: {seconds:.1f}s")
    assert seconds < 10


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"service": {"type": "Weird"}}, 'Unsupported value: "Weird"'),
        ({"replicas": 3}, "replicas > 1 needs a shared cache"),
        (
            {"replicas": 3, "storage": {"accessMode": "ReadWriteMany"}},
            "replicas > 1 counts downloads in one shared database",
        ),
        (
            {"stats": {"database": "postgresql://u:secret@db.example.com/entrepot"}},
            "spec.stats.database",
        ),
        (
            {"stats": {"passwordSecret": {"secretName": "db", "key": "password"}}},
            "stats.passwordSecret needs stats.database",
        ),
        (
            {
                "go": {
                    "proxy": "https://proxy.example.com",
                    "routes": [{"patterns": "a.example.com/[", "proxy": "direct"}],
                }
            },
            "spec.go.routes[0].patterns",
        ),
        ({"go": {"proxy": "ftp://proxy.example.com"}}, "spec.go.proxy"),
    ],
)
def test_invalid_specs_are_refused_by_the_api_server(
    kube: Any, ns: str, spec: dict[str, Any], message: str
) -> None:
    done = kube("apply", "-n", ns, "-f", "-", input=mirror("bad", **spec), check=False)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.usefixtures("operator")
def test_config_change_rolls_the_pods_and_drift_is_put_back(kube: Any, ns: str) -> None:
    kube("apply", "-n", ns, "-f", "-", input=mirror("roll"))
    wait(lambda: ready(kube, ns, "roll"), 30, "Ready")
    template = lambda: get(kube, "deployment", "roll", "-n", ns)["spec"]["template"]  # noqa: E731
    before = template()["metadata"]["annotations"]["entrepot.dev/config-hash"]
    kube(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=mirror("roll", go={"proxy": "https://other.example.com"}),
    )
    wait(
        lambda: template()["metadata"]["annotations"]["entrepot.dev/config-hash"] != before,
        30,
        "new hash",
    )
    config_text = get(kube, "configmap", "roll-config", "-n", ns)["data"]["config.yaml"]
    assert "https://other.example.com" in config_text
    # Drift: a deleted Service and a hand-scaled Deployment are put back.
    kube("delete", "service", "roll", "-n", ns)
    kube("scale", "deployment", "roll", "-n", ns, "--replicas=3")
    wait(lambda: get(kube, "service", "roll", "-n", ns), 30, "Service recreated")
    wait(
        lambda: get(kube, "deployment", "roll", "-n", ns)["spec"]["replicas"] == 1,
        30,
        "replicas restored",
    )


@pytest.mark.usefixtures("operator")
def test_deleting_the_mirror_garbage_collects_its_children(kube: Any, ns: str) -> None:
    kube("apply", "-n", ns, "-f", "-", input=mirror("gone"))
    wait(lambda: ready(kube, ns, "gone"), 30, "Ready")
    kube("delete", "modulemirror", "gone", "-n", ns)

    def collected() -> bool:
        left = kube(
            "get",
            "deployment,service,configmap,pvc",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/instance=gone",
            "-o",
            "name",
        ).stdout.strip()
        return not left

    wait(collected, 60, "children garbage-collected")


@pytest.mark.usefixtures("operator")
def test_the_rendered_mirror_serves_the_go_command(kube: Any, ns: str, tmp_path: Path) -> None:
    """Take the ConfigMap and container args the operator wrote, run `entrepot serve` with
    exactly them (listen address and cache folder moved to this machine), use it with go."""
    upstream_dir = tmp_path / "upstream"
    universe(upstream_dir)
    with running_server(tmp_path, proxy=f"file://{upstream_dir}", name="upstream") as upstream:
        kube("apply", "-n", ns, "-f", "-", input=mirror("served", go={"proxy": upstream.url}))
        wait(lambda: ready(kube, ns, "served"), 30, "Ready")
        rendered = get(kube, "configmap", "served-config", "-n", ns)["data"]["config.yaml"]
        args = get(kube, "deployment", "served", "-n", ns)["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
        assert args[:2] == ["serve", "--config"]
        config_file = tmp_path / "config.yaml"
        config_file.write_text(rendered)
        with running_server(tmp_path, config=config_file, name="served") as served:
            go = GoClient(tmp_path / "user", served.url)
            [info] = go.download_json("example.com/hello@v1.1.0")
            assert "Error" not in info, info
            assert info["Version"] == "v1.1.0"


@pytest.mark.usefixtures("operator")
def test_twenty_mirrors_become_ready_within_a_minute(
    kube: Any, ns: str, operator: dict[str, Any]
) -> None:
    started = time.monotonic()
    docs = "\n---\n".join(mirror(f"m{i:02d}", storage={"emptyDir": {}}) for i in range(20))
    kube("apply", "-n", ns, "-f", "-", input=docs)
    wait(lambda: all(ready(kube, ns, f"m{i:02d}") for i in range(20)), 60, "20 mirrors Ready")
    seconds = time.monotonic() - started
    rss = 0
    for line in Path(f"/proc/{operator['proc'].pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    print(f"20 mirrors Ready in {seconds:.1f}s; operator RSS {rss / 2**20:.0f} MiB")
    assert seconds < 60
    assert rss < 150 * 2**20


@pytest.mark.usefixtures("operator")
def test_events_metrics_and_health(kube: Any, ns: str, operator: dict[str, Any]) -> None:
    kube("apply", "-n", ns, "-f", "-", input=mirror("seen"))
    wait(lambda: ready(kube, ns, "seen"), 30, "Ready")

    def reconciled_event() -> bool:
        events = get(kube, "events", "-n", ns, "--field-selector", "involvedObject.name=seen")
        return any(
            e["involvedObject"]["kind"] == "ModuleMirror" and e["reason"] == "Reconciled"
            for e in events["items"]
        )

    wait(reconciled_event, 20, "a Reconciled event")
    with urllib.request.urlopen(f"http://127.0.0.1:{operator['metrics']}/metrics") as r:
        text = r.read().decode()
    assert 'entrepot_operator_reconciles_total{result="ok"}' in text
    with urllib.request.urlopen(f"http://127.0.0.1:{operator['health']}/healthz") as r:
        assert r.status == 200


@pytest.mark.usefixtures("operator")
def test_a_second_operator_waits_as_a_standby(operator_kubeconfig: str, tmp_path: Path) -> None:
    log = tmp_path / "standby.log"
    health = free_port()
    proc = start_operator(
        operator_kubeconfig, log, name="e2e-standby", metrics="off", health=f"127.0.0.1:{health}"
    )
    try:
        wait(lambda: "waiting for the lease" in log.read_text(), 30, "standby waiting")
        time.sleep(3)
        assert "leading as" not in log.read_text()  # the first operator still holds the Lease
        assert proc.poll() is None
        # A standby must pass its liveness probe, or the kubelet restarts it in a loop.
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz") as r:
            assert r.status == 200
            assert b"standby" in r.read()
    finally:
        stop_process(proc)


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize(
    "example", ["minimal", "private-modules", "highly-available", "air-gapped"]
)
def test_the_chart_examples_become_ready(kube: Any, ns: str, example: str) -> None:
    path = ROOT / "helm" / "entrepot" / "examples" / f"{example}.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:  # this cluster's shared volumes are in the class "standard"
        storage = doc.get("spec", {}).get("storage", {}) if doc["kind"] == "ModuleMirror" else {}
        if storage.get("storageClassName"):
            storage["storageClassName"] = "standard"
    kube("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
    name = next(d["metadata"]["name"] for d in docs if d["kind"] == "ModuleMirror")
    wait(lambda: ready(kube, ns, name), 30, f"{example} Ready")
    if example == "highly-available":
        assert get(kube, "poddisruptionbudget", name, "-n", ns)["spec"]["maxUnavailable"] == 1
