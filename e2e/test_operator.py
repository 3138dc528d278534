"""The operator end to end: the chart installed with helm, the operator running with the chart's
ServiceAccount (a token from the TokenRequest API, not admin), ModuleMirrors and NpmMirrors
applied with the real kubectl, and the mirrors it configures serving the real go command and
the real npm. What both kinds get through the one pipeline (Ready, rolls on change, drift put
back, garbage collection, kept caches) is tested for both (``KINDS``); the rest with
ModuleMirrors."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from entrepot_operator.api import REPLICAS_NEED_A_REGISTRY_DATABASE, USERS_NEED_NAMES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# The private registry's npm helpers: a pseudo-terminal for npm's prompts, a package to publish.
from integration.test_npm_publish_clients import package  # noqa: E402
from integration.test_npm_users_clients import adduser, fails, login  # noqa: E402
from support.gocmd import GoClient  # noqa: E402
from support.kube import get, helm_install, service_account_kubeconfig, wait  # noqa: E402
from support.modules import universe  # noqa: E402
from support.npmcli import JsClient, npm_lock  # noqa: E402
from support.npmfixture import running_npm_fixture  # noqa: E402
from support.servers import running_server, stop_process  # noqa: E402

RELEASE_NS = "entrepot-system"
SA = "entrepot"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="module")
def operator_kubeconfig(
    kubeconfig: str, kube: Any, bins: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Install the chart (CRDs, RBAC, ServiceAccount) and return a kubeconfig that acts as
    the chart's ServiceAccount, so the operator runs with exactly the chart's permissions."""
    home = tmp_path_factory.mktemp("helm")
    done = helm_install(kubeconfig, bins, home, {"replicaCount": "1"})
    assert done.returncode == 0, done.stderr
    return service_account_kubeconfig(kube, kubeconfig, home, account=SA, namespace=RELEASE_NS)


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
    state = {"proc": proc, "log": log, "metrics": metrics_port, "health": health_port}
    state["kubeconfig"] = operator_kubeconfig
    try:
        yield state
    finally:
        stop_process(state["proc"])  # a test may have restarted it


def start_operator(
    kubeconfig: str,
    log: Path,
    *,
    name: str,
    metrics: str,
    health: str,
    extra_env: dict[str, str] | None = None,
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
        "ENTREPOT_OPERATOR_RESYNC": "5",  # drift no event reports is put right within seconds
        **(extra_env or {}),
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "entrepot-operator"), "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def restart_operator(operator: dict[str, Any], env: dict[str, str] | None = None) -> None:
    """Stop the module's operator and start it again (same name: it takes its Lease back)."""
    stop_process(operator["proc"])
    operator["proc"] = start_operator(
        operator["kubeconfig"],
        operator["log"],
        name="e2e-operator",
        metrics=f"127.0.0.1:{operator['metrics']}",
        health=f"127.0.0.1:{operator['health']}",
        extra_env=env,
    )


def mirror(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "entrepot.dev/v1alpha1",
        "kind": "ModuleMirror",
        "metadata": {"name": name},
        "spec": {"go": {"proxy": "https://proxy.example.com,direct"}, **spec},
    }
    return json.dumps(body)


def npm_mirror(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "entrepot.dev/v1alpha1",
        "kind": "NpmMirror",
        "metadata": {"name": name},
        "spec": {"npm": {"upstream": "https://registry.example.com/"}, **spec},
    }
    return json.dumps(body)


@dataclass(frozen=True)
class Kind:
    """One kind of mirror, as the tests that hold for both use it."""

    resource: str  # kubectl's name for it
    short: str
    body: Callable[..., str]
    other_upstream: dict[str, Any]  # a spec change that changes the config file
    upstream_text: str  # how that change shows in the config file
    url: str  # status.url, with {name} and {ns}

    def __str__(self) -> str:
        return self.resource


MODULE = Kind(
    "modulemirror",
    "mm",
    mirror,
    {"go": {"proxy": "https://other.example.com"}},
    "https://other.example.com",
    "http://{name}.{ns}.svc:8080",
)
NPM = Kind(
    "npmmirror",
    "npmm",
    npm_mirror,
    {"npm": {"upstream": "https://other.example.com/npm/"}},
    "upstream: https://other.example.com/npm/",
    "http://{name}.{ns}.svc:8080/",
)
KINDS = [pytest.param(MODULE, id="ModuleMirror"), pytest.param(NPM, id="NpmMirror")]


def ready(kube: Any, ns: str, name: str, resource: str = "modulemirror") -> bool:
    status = get(kube, resource, name, "-n", ns).get("status", {})
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


@pytest.fixture
def ns(kube: Any) -> Iterator[str]:
    name = f"mm-{os.urandom(3).hex()}"
    kube("create", "namespace", name)
    yield name
    kube("delete", "namespace", name, "--wait=false")


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("kind", KINDS)
def test_a_mirror_becomes_ready_with_owned_children(kube: Any, ns: str, kind: Kind) -> None:
    started = time.monotonic()
    kube("apply", "-n", ns, "-f", "-", input=kind.body("gomods"))
    wait(lambda: ready(kube, ns, "gomods", kind.resource), 30, "Ready=True")
    seconds = time.monotonic() - started
    mm = get(kube, kind.resource, "gomods", "-n", ns)
    url = kind.url.format(name="gomods", ns=ns)
    assert mm["status"]["url"] == url
    assert mm["status"]["observedGeneration"] == mm["metadata"]["generation"]
    # No finalizer: a mirror deleted while the operator is down must not hang.
    assert not mm["metadata"].get("finalizers")
    for child_kind, name in (
        ("configmap", "gomods-config"),
        ("deployment", "gomods"),
        ("service", "gomods"),
    ):
        child = get(kube, child_kind, name, "-n", ns)
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"]) == (mm["kind"], mm["metadata"]["uid"]), child_kind
    # The cache claim is retained by default (storage.deletionPolicy): no owner, but marked.
    claim = get(kube, "pvc", "gomods-cache", "-n", ns)["metadata"]
    assert not claim.get("ownerReferences")
    assert claim["annotations"]["entrepot.dev/mirror"] == f"{ns}/gomods"
    assert claim["annotations"]["entrepot.dev/mirror-kind"] == mm["kind"]
    table = kube("get", kind.short, "-n", ns).stdout
    assert "True" in table
    assert url in table
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


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"npm": {"upstream": "registry.example.com"}}, "spec.npm.upstream"),
        ({"npm": {}}, "spec.npm.upstream: Required value"),
        ({}, "spec.npm: Required value"),
        (
            {"npm": {"upstream": "https://r.example.com/", "policy": {"blocked": ["Left Pad"]}}},
            "every entry must be a package name pattern",
        ),
        (
            {"npm": {"upstream": "https://r.example.com/", "policy": {"minReleaseAge": "3 days"}}},
            "spec.npm.policy.minReleaseAge",
        ),
        (
            {"npm": {"upstream": "https://r.example.com/"}, "ingress": {"host": "*.example.com"}},
            "an Ingress for a wildcard host cannot name the registry's URL",
        ),
        (
            {"npm": {"upstream": "https://r.example.com/"}, "go": {"proxy": "direct"}},
            'unknown field "spec.go"',
        ),
        ({"npm": {"upstream": "https://r.example.com/"}, "replicas": 3}, "needs a shared cache"),
        (
            {
                "npm": {"upstream": "https://r.example.com/"},
                "replicas": 2,
                "storage": {"emptyDir": {}},
                "stats": {"enabled": False},
            },
            REPLICAS_NEED_A_REGISTRY_DATABASE,
        ),
        (
            {
                "npm": {
                    "upstream": "https://r.example.com/",
                    "registry": {"publish": [{"packages": ["@corp/*"], "allow": "users"}]},
                }
            },
            USERS_NEED_NAMES,
        ),
    ],
)
def test_invalid_npm_mirrors_are_refused_by_the_api_server(
    kube: Any, ns: str, spec: dict[str, Any], message: str
) -> None:
    body = json.loads(npm_mirror("bad"))
    body["spec"] = spec
    done = kube("apply", "-n", ns, "-f", "-", input=json.dumps(body), check=False)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.usefixtures("operator")
def test_an_npm_mirror_named_like_a_module_mirror_takes_nothing_of_it(kube: Any, ns: str) -> None:
    """Both kinds name their children after the mirror: the second of one name says
    NameConflict and names the first; the first keeps its children, even once the second is
    deleted, and its retained cache is not adopted by the other kind."""
    kube("apply", "-n", ns, "-f", "-", input=mirror("shared"))
    wait(lambda: ready(kube, ns, "shared"), 30, "the ModuleMirror Ready")
    config = get(kube, "configmap", "shared-config", "-n", ns)
    kube("apply", "-n", ns, "-f", "-", input=npm_mirror("shared"))

    def conflict() -> dict[str, Any] | None:
        cond = conditions_of(kube, ns, "shared", "npmmirror").get("Ready", {})
        return cond if cond.get("reason") == "NameConflict" else None

    cond = wait(conflict, 30, "the NpmMirror says NameConflict")
    assert "belongs to ModuleMirror shared" in cond["message"]
    assert "need different names" in cond["message"]
    wait(
        lambda: any(
            e["reason"] == "NameConflict" and e["involvedObject"]["kind"] == "NpmMirror"
            for e in warnings_of(kube, ns, "shared")
        ),
        30,
        "a Warning Event on the NpmMirror",
    )
    assert get(kube, "configmap", "shared-config", "-n", ns)["data"] == config["data"]
    deployment = get(kube, "deployment", "shared", "-n", ns)
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ModuleMirror"
    assert ready(kube, ns, "shared")
    kube("delete", "npmmirror", "shared", "-n", ns)
    time.sleep(2)  # the garbage collector's chance to be wrong
    assert get(kube, "configmap", "shared-config", "-n", ns)["data"] == config["data"]
    # The ModuleMirror goes, its cache stays (Retain); an NpmMirror of that name does not
    # take that cache.
    kube("delete", "modulemirror", "shared", "-n", ns)
    wait(
        lambda: instance_objects(kube, ns, "shared") == ["persistentvolumeclaim/shared-cache"],
        60,
        "everything but the cache claim collected",
    )
    kube("apply", "-n", ns, "-f", "-", input=npm_mirror("shared"))
    cond = wait(conflict, 30, "the NpmMirror leaves the ModuleMirror's cache")
    assert "PersistentVolumeClaim shared-cache" in cond["message"]
    assert "the cache a deleted ModuleMirror shared retained" in cond["message"]
    claim = get(kube, "pvc", "shared-cache", "-n", ns)["metadata"]
    assert not claim.get("ownerReferences")
    assert claim["annotations"]["entrepot.dev/mirror-kind"] == "ModuleMirror"


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("kind", KINDS)
def test_config_change_rolls_the_pods_and_drift_is_put_back(kube: Any, ns: str, kind: Kind) -> None:
    kube("apply", "-n", ns, "-f", "-", input=kind.body("roll"))
    wait(lambda: ready(kube, ns, "roll", kind.resource), 30, "Ready")
    template = lambda: get(kube, "deployment", "roll", "-n", ns)["spec"]["template"]  # noqa: E731
    before = template()["metadata"]["annotations"]["entrepot.dev/config-hash"]
    kube("apply", "-n", ns, "-f", "-", input=kind.body("roll", **kind.other_upstream))
    wait(
        lambda: template()["metadata"]["annotations"]["entrepot.dev/config-hash"] != before,
        30,
        "new hash",
    )
    config_text = get(kube, "configmap", "roll-config", "-n", ns)["data"]["config.yaml"]
    assert kind.upstream_text in config_text
    # Drift: a deleted Service and a hand-scaled Deployment are put back.
    kube("delete", "service", "roll", "-n", ns)
    kube("scale", "deployment", "roll", "-n", ns, "--replicas=3")
    wait(lambda: get(kube, "service", "roll", "-n", ns), 30, "Service recreated")
    wait(
        lambda: get(kube, "deployment", "roll", "-n", ns)["spec"]["replicas"] == 1,
        30,
        "replicas restored",
    )


def instance_objects(kube: Any, ns: str, name: str) -> list[str]:
    out = kube(
        "get",
        "deployment,service,configmap,pvc",
        "-n",
        ns,
        "-l",
        f"app.kubernetes.io/instance={name}",
        "-o",
        "name",
    ).stdout
    return sorted(out.split())


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("kind", KINDS)
def test_deleting_a_mirror_keeps_its_cache_unless_told_and_a_new_one_adopts_it(
    kube: Any, ns: str, kind: Kind
) -> None:
    """Issue 11, point 5: storage.deletionPolicy Retain (the default) leaves the cache claim;
    a mirror created again with the name adopts it. Delete: collected with the rest."""
    mirror, resource = kind.body, kind.resource
    kube("apply", "-n", ns, "-f", "-", input=mirror("kept"))
    wait(lambda: ready(kube, ns, "kept", resource), 30, "Ready")
    pvc = get(kube, "pvc", "kept-cache", "-n", ns)
    assert not pvc["metadata"].get("ownerReferences")
    kube("delete", resource, "kept", "-n", ns)
    wait(
        lambda: instance_objects(kube, ns, "kept") == ["persistentvolumeclaim/kept-cache"],
        60,
        "everything but the cache claim collected",
    )
    volume = get(kube, "pvc", "kept-cache", "-n", ns)["spec"].get("volumeName")
    kube("apply", "-n", ns, "-f", "-", input=mirror("kept"))
    wait(lambda: ready(kube, ns, "kept", resource), 30, "Ready again")
    again = get(kube, "pvc", "kept-cache", "-n", ns)
    assert again["metadata"]["uid"] == pvc["metadata"]["uid"]  # the same claim, adopted
    assert again["spec"].get("volumeName") == volume

    kube("apply", "-n", ns, "-f", "-", input=mirror("gone", storage={"deletionPolicy": "Delete"}))
    wait(lambda: ready(kube, ns, "gone", resource), 30, "Ready")
    kube("delete", resource, "gone", "-n", ns)
    wait(lambda: not instance_objects(kube, ns, "gone"), 60, "children garbage-collected")


def conditions_of(
    kube: Any, ns: str, name: str, resource: str = "modulemirror"
) -> dict[str, dict[str, Any]]:
    status = get(kube, resource, name, "-n", ns).get("status", {})
    return {c["type"]: c for c in status.get("conditions", [])}


def warnings_of(kube: Any, ns: str, name: str) -> list[dict[str, Any]]:
    events = get(kube, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
    return [e for e in events["items"] if e["type"] == "Warning"]


@pytest.mark.usefixtures("operator")
def test_a_child_that_fails_to_apply_is_reported_and_does_not_stop_the_others(
    kube: Any, ns: str
) -> None:
    """Issue 11, point 1: a cache claim that cannot grow (the class does not expand) fails;
    the Deployment still gets the new config; the mirror says Ready=False, ApplyFailed, with
    the API's message, for the new generation, and posts a Warning Event."""
    kube("apply", "-n", ns, "-f", "-", input=mirror("grow"))
    wait(lambda: ready(kube, ns, "grow"), 30, "Ready")
    template = lambda: get(kube, "deployment", "grow", "-n", ns)["spec"]["template"]  # noqa: E731
    before = template()["metadata"]["annotations"]["entrepot.dev/config-hash"]
    changed = mirror("grow", go={"proxy": "https://other.example.com"}, storage={"size": "30Gi"})
    kube("apply", "-n", ns, "-f", "-", input=changed)

    def failed() -> dict[str, Any] | None:
        ready_ = conditions_of(kube, ns, "grow").get("Ready", {})
        return ready_ if ready_.get("reason") == "ApplyFailed" else None

    cond = wait(failed, 30, "Ready=False ApplyFailed")
    assert cond["status"] == "False"
    assert "PersistentVolumeClaim grow-cache" in cond["message"]
    assert conditions_of(kube, ns, "grow")["Degraded"]["status"] == "True"
    body = get(kube, "modulemirror", "grow", "-n", ns)
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert template()["metadata"]["annotations"]["entrepot.dev/config-hash"] != before
    wait(
        lambda: any(e["reason"] == "ApplyFailed" for e in warnings_of(kube, ns, "grow")),
        30,
        "a Warning Event",
    )
    annotations = body["metadata"].get("annotations") or {}
    assert not [k for k in annotations if "_locals_" in k or "build_registry" in k], annotations
    # (Back to the old size is refused by the API server: a claim cannot shrink.)


@pytest.mark.usefixtures("operator")
def test_an_object_of_the_same_name_is_never_taken_over(kube: Any, ns: str) -> None:
    """Issue 11, point 4: the user's ConfigMap and Deployment stay untouched, the mirror says
    NameConflict, and deleting the mirror leaves them; the annotation hands one over."""
    kube("create", "configmap", "app-config", "-n", ns, "--from-literal=key=users")
    kube("create", "deployment", "app", "-n", ns, "--image=registry.example.com/app:1")
    kube("apply", "-n", ns, "-f", "-", input=mirror("app"))

    def conflict() -> dict[str, Any] | None:
        ready_ = conditions_of(kube, ns, "app").get("Ready", {})
        return ready_ if ready_.get("reason") == "NameConflict" else None

    cond = wait(conflict, 30, "Ready=False NameConflict")
    assert "ConfigMap app-config" in cond["message"]
    assert "entrepot.dev/adopt=app" in cond["message"]
    users = get(kube, "configmap", "app-config", "-n", ns)
    assert users["data"] == {"key": "users"}
    assert not users["metadata"].get("ownerReferences")
    assert (
        get(kube, "deployment", "app", "-n", ns)["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
        == "registry.example.com/app:1"
    )
    wait(
        lambda: any(e["reason"] == "NameConflict" for e in warnings_of(kube, ns, "app")),
        30,
        "a Warning Event",
    )
    kube("delete", "modulemirror", "app", "-n", ns)
    time.sleep(3)  # give the garbage collector its chance to be wrong
    assert get(kube, "configmap", "app-config", "-n", ns)["data"] == {"key": "users"}
    assert get(kube, "deployment", "app", "-n", ns)["metadata"]["name"] == "app"
    # Handed over: annotated by its owner, the mirror adopts it.
    kube("delete", "deployment", "app", "-n", ns)
    kube("annotate", "configmap", "app-config", "-n", ns, "entrepot.dev/adopt=app")
    kube("apply", "-n", ns, "-f", "-", input=mirror("app"))
    wait(lambda: ready(kube, ns, "app"), 30, "Ready after the hand-over")
    adopted = get(kube, "configmap", "app-config", "-n", ns)
    assert adopted["metadata"]["ownerReferences"][0]["kind"] == "ModuleMirror"
    assert "config.yaml" in adopted["data"]


@pytest.mark.usefixtures("operator")
def test_rapid_changes_end_in_the_last_spec_without_going_back(kube: Any, ns: str) -> None:
    """Issue 11, point 8: 15 quick proxy changes to a 5-replica mirror; the Deployment's config
    hash never returns to an earlier value (no older spec applied after a newer one), and the
    last spec wins."""
    storage = {"emptyDir": {}}
    off = {"enabled": False}
    kube("apply", "-n", ns, "-f", "-", input=mirror("busy", replicas=5, storage=storage, stats=off))
    wait(lambda: ready(kube, ns, "busy"), 30, "Ready")
    seen: list[str] = []
    stop = threading.Event()

    def watch_hashes() -> None:
        while not stop.is_set():
            with contextlib.suppress(AssertionError, KeyError):
                h = get(kube, "deployment", "busy", "-n", ns)["spec"]["template"]["metadata"][
                    "annotations"
                ]["entrepot.dev/config-hash"]
                if not seen or seen[-1] != h:
                    seen.append(h)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_hashes)
    watcher.start()
    try:
        for i in range(15):
            spec = {
                "replicas": 5,
                "storage": storage,
                "stats": off,
                "go": {"proxy": f"https://p{i}.example.com"},
            }
            kube("apply", "-n", ns, "-f", "-", input=mirror("busy", **spec))
        final = lambda: get(kube, "configmap", "busy-config", "-n", ns)["data"]["config.yaml"]  # noqa: E731
        wait(lambda: "https://p14.example.com" in final(), 30, "the last spec applied")
        wait(lambda: ready(kube, ns, "busy"), 30, "Ready")
        time.sleep(2)
    finally:
        stop.set()
        watcher.join()
    assert len(seen) == len(set(seen)), f"the config hash went back to an earlier value: {seen}"
    status = get(kube, "modulemirror", "busy", "-n", ns)["status"]
    assert status["configHash"] == seen[-1]


@pytest.mark.usefixtures("operator")
def test_deleted_optional_children_are_put_back(kube: Any, ns: str) -> None:
    """Issue 11, point 7: a deleted PodDisruptionBudget is recreated (Ingresses are watched
    the same way; the chart's default policy allows none), and a field someone else set on
    the Deployment is reported as Drifted until it is gone."""
    spec = {"replicas": 2, "storage": {"emptyDir": {}}, "stats": {"enabled": False}}
    kube("apply", "-n", ns, "-f", "-", input=mirror("drift", **spec))
    wait(lambda: ready(kube, ns, "drift"), 30, "Ready")
    for kind in ("poddisruptionbudget",):
        uid = get(kube, kind, "drift", "-n", ns)["metadata"]["uid"]
        kube("delete", kind, "drift", "-n", ns)
        wait(
            lambda kind=kind, uid=uid: get(kube, kind, "drift", "-n", ns)["metadata"]["uid"] != uid,
            30,
            f"{kind} recreated",
        )
    # A field the operator does not set, added by hand: reported as Drifted, with who and what.
    kube("set", "env", "deployment/drift", "-n", ns, "HTTPS_PROXY=http://proxy.example.com:3128")

    def drifted() -> dict[str, Any] | None:
        cond = conditions_of(kube, ns, "drift").get("Drifted", {})
        return cond if cond.get("status") == "True" else None

    cond = wait(drifted, 30, "Drifted=True")
    assert "kubectl-set" in cond["message"]
    assert "env[name=HTTPS_PROXY]" in cond["message"]
    kube("set", "env", "deployment/drift", "-n", ns, "HTTPS_PROXY-")
    wait(lambda: not drifted(), 30, "Drifted=False once removed")


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
def test_the_rendered_npm_mirror_serves_the_npm_client(kube: Any, ns: str, tmp_path: Path) -> None:
    """Take the ConfigMap and container args the operator wrote for an NpmMirror, run
    `entrepot serve` with exactly them (listen address and cache folder moved to this machine,
    spec.npm.publicUrl naming that address), in front of the npm fixture registry: the real
    npm views and installs through it with the upstream's integrity, the minimum release age
    and the private scope as the spec says."""
    port = free_port()
    with running_npm_fixture(tmp_path) as upstream:
        npm = {
            "upstream": upstream.url,
            "publicUrl": f"http://127.0.0.1:{port}",
            "policy": {"minReleaseAge": "1h", "private": ["@corp/*"]},
        }
        kube("apply", "-n", ns, "-f", "-", input=npm_mirror("served", npm=npm))
        wait(lambda: ready(kube, ns, "served", "npmmirror"), 30, "Ready")
        body = get(kube, "npmmirror", "served", "-n", ns)
        assert body["status"]["url"] == f"http://127.0.0.1:{port}/"
        rendered = get(kube, "configmap", "served-config", "-n", ns)["data"]["config.yaml"]
        args = get(kube, "deployment", "served", "-n", ns)["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
        assert args[:2] == ["serve", "--config"]
        config_file = tmp_path / "config.yaml"
        config_file.write_text(rendered)
        listen = ["--listen", f"127.0.0.1:{port}"]
        with running_server(tmp_path, config=config_file, args=listen, name="served") as served:
            client = JsClient(tmp_path / "user", served.url + "/")
            project = client.new_project({"fixture-a": "^1.0.0", "fixture-fresh": "^1.0.0"})
            shown = client.run("npm", "view", "fixture-a", "version", cwd=project).stdout
            assert shown.strip() == "1.1.0"
            client.run("npm", "install", cwd=project)
            locked = npm_lock(project)
            for name in ("fixture-a", "@fixture/b", "@fixture/c", "fixture-old"):
                entry = locked[f"node_modules/{name}"]
                assert entry.integrity == upstream.integrity(name, entry.version), name
                assert str(entry.resolved).startswith(f"http://127.0.0.1:{port}/"), entry.resolved
            # fixture-fresh@1.1.0 is a minute old: hidden by minReleaseAge 1h.
            assert locked["node_modules/fixture-fresh"].version == "1.0.0"
            refused = client.run("npm", "view", "@corp/tools", cwd=project, check=False)
            assert refused.returncode != 0
            assert upstream.count("@corp/tools") == 0  # never asked upstream


ADMIN_SECRET = "entrepot-npm-admin"


def registry_config(kube: Any, ns: str, name: str, tmp_path: Path) -> Path:
    """The config file the operator rendered for an NpmMirror with an adminPasswordSecret,
    for a server on this machine. The pod mounts the Secret's key at the file the config
    names; no pod runs here, so the Secret's value goes where the kubelet would put it, in a
    folder of this machine (as the cache folder is moved with --data)."""
    rendered = get(kube, "configmap", f"{name}-config", "-n", ns)["data"]["config.yaml"]
    pod = get(kube, "deployment", name, "-n", ns)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "credentials"]
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": ADMIN_SECRET,
                "items": [{"key": "password", "path": "npm-admin-password"}],
            }
        }
    ]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "credentials"]
    secrets_dir = mount["mountPath"]
    registry = yaml.safe_load(rendered)["npm"]["registry"]
    assert registry["admin_password_file"] == f"{secrets_dir}/npm-admin-password"
    assert registry["self_registration"] is False
    data = get(kube, "secret", ADMIN_SECRET, "-n", ns)["data"]["password"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "npm-admin-password").write_text(base64.b64decode(data).decode())
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.replace(f"{secrets_dir}/", f"{secrets}/"))
    return config_file


@pytest.mark.usefixtures("operator")
def test_the_rendered_npm_mirror_is_a_private_registry_for_the_npm_client(
    kube: Any, ns: str, tmp_path: Path
) -> None:
    """The registry settings of an NpmMirror as the operator renders them, run by the real
    server in front of the npm fixture registry and driven by the real npm: nobody can sign
    up (self-registration is off in a cluster), the administrator from the Secret logs in and
    publishes @corp/x (its rule names it), a name no rule lets anyone publish is refused with
    403, and what was published installs next to a mirrored package."""
    port = free_port()
    password = "the-admin-Pa55-" + os.urandom(4).hex()
    kube(
        "create",
        "secret",
        "generic",
        ADMIN_SECRET,
        "-n",
        ns,
        f"--from-literal=password={password}",
    )
    with running_npm_fixture(tmp_path) as upstream:
        npm = {
            "upstream": upstream.url,
            "publicUrl": f"http://127.0.0.1:{port}",
            "policy": {"private": ["@corp/*"]},
            "registry": {
                "adminPasswordSecret": {"secretName": ADMIN_SECRET, "key": "password"},
                "publish": [
                    {"packages": ["@corp/*"], "allow": "users", "users": ["admin"]},
                    {"packages": ["*"], "allow": "nobody"},
                ],
            },
        }
        kube("apply", "-n", ns, "-f", "-", input=npm_mirror("registry", npm=npm))
        wait(lambda: ready(kube, ns, "registry", "npmmirror"), 30, "Ready")
        stored = get(kube, "npmmirror", "registry", "-n", ns)["spec"]["npm"]["registry"]
        assert stored["selfRegistration"] is False  # the API server's default
        config_file = registry_config(kube, ns, "registry", tmp_path)
        assert password not in config_file.read_text()
        listen = ["--listen", f"127.0.0.1:{port}"]
        with running_server(tmp_path, config=config_file, args=listen, name="registry") as served:
            assert "npm registry administrator admin: created" in served.log()
            url = served.url + "/"

            def person(name: str) -> JsClient:
                """Someone whose token `npm login` writes to their own user config."""
                home = tmp_path / name
                return JsClient(home, url, extra_env={"npm_config_userconfig": str(home / "rc")})

            dave = person("dave")
            fails(
                adduser(dave, "dave", "dave-Pa55-word", "dave@example.com"),
                "403",
                "does not let npm adduser create users",
                "entrepot user add dave",
            )

            admin = person("admin")
            code, screen = login(admin, "admin", password)
            assert code == 0, screen
            assert admin.run("npm", "whoami", cwd=admin.home).stdout.strip() == "admin"

            admin.run("npm", "publish", cwd=package(tmp_path / "src", "@corp/x", "1.0.0"))
            refused = admin.run(
                "npm", "publish", cwd=package(tmp_path / "src", "plain-x", "1.0.0"), check=False
            )
            assert refused.returncode != 0
            said = " ".join(refused.stderr.split())
            assert "403" in said, said
            assert "nobody may publish plain-x" in said, said

            user = JsClient(tmp_path / "consumer", url)
            project = user.new_project({"@corp/x": "^1.0.0", "fixture-a": "^1.0.0"})
            user.run("npm", "install", cwd=project)
            locked = npm_lock(project)
            assert locked["node_modules/@corp/x"].version == "1.0.0"
            for name in ("@corp/x", "fixture-a"):
                resolved = str(locked[f"node_modules/{name}"].resolved)
                assert resolved.startswith(f"http://127.0.0.1:{port}/"), resolved
            entry = locked["node_modules/fixture-a"]
            assert entry.integrity == upstream.integrity("fixture-a", entry.version)
            assert (project / "node_modules/@corp/x/package.json").exists()
            assert upstream.count("@corp/x") == 0  # published here: never asked upstream
            time.sleep(1.5)  # the access log is written at least once a second
            assert password not in served.log()


@pytest.mark.usefixtures("operator")
def test_twenty_mirrors_become_ready_within_a_minute(
    kube: Any, ns: str, operator: dict[str, Any]
) -> None:
    requests_before = wait(lambda: [api_requests(operator)], 30, "the operator's metrics")[0]
    started = time.monotonic()
    docs = "\n---\n".join(mirror(f"m{i:02d}", storage={"emptyDir": {}}) for i in range(20))
    kube("apply", "-n", ns, "-f", "-", input=docs)
    wait(lambda: all(ready(kube, ns, f"m{i:02d}") for i in range(20)), 60, "20 mirrors Ready")
    seconds = time.monotonic() - started
    time.sleep(2)  # the last pods' events
    requests = api_requests(operator) - requests_before
    rss = 0
    for line in Path(f"/proc/{operator['proc'].pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    print(
        f"20 mirrors Ready in {seconds:.1f}s; operator RSS {rss / 2**20:.0f} MiB;"
        f" {requests:.0f} API requests ({requests / 20:.1f} per mirror)"
    )
    assert seconds < 60
    assert rss < 150 * 2**20
    # Issue 11, point 9: bounded API traffic (reads before the first apply, status only on
    # change, the CRD lookup cached, events folded while a reconcile waits).
    assert requests / 20 < 45, requests  # 34.5 measured; the baseline was 57

    # A restart with the 20 mirrors unchanged: no false "Reconciled" Events, few requests.
    def reconciled_count() -> int:
        events = get(kube, "events", "-n", ns)["items"]
        return sum(int(e.get("count") or 1) for e in events if e["reason"] == "Reconciled")

    before = reconciled_count()
    restart_operator(operator)
    wait(lambda: api_requests(operator) > 0, 60, "the restarted operator reconciling")
    time.sleep(8)  # every mirror resumed, and a resync (5 s here) went by
    after_restart = api_requests(operator)
    print(f"restart with 20 unchanged mirrors: {after_restart:.0f} API requests in ~8 s")
    assert after_restart / 20 < 25, after_restart  # 15 measured; the baseline was 37
    assert reconciled_count() == before
    assert all(ready(kube, ns, f"m{i:02d}") for i in range(20))


def api_requests(operator: dict[str, Any]) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator['metrics']}/metrics") as r:
            text = r.read().decode()
    except OSError as e:  # a restarted operator not listening yet
        raise AssertionError(f"metrics: {e}") from e
    for line in text.splitlines():
        if line.startswith("entrepot_operator_api_requests_total "):
            return float(line.split()[1])
    raise AssertionError("no entrepot_operator_api_requests_total in the metrics")


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
    "example", ["minimal", "private-modules", "highly-available", "air-gapped", "npm"]
)
def test_the_chart_examples_become_ready(kube: Any, ns: str, example: str) -> None:
    """(npm-private-registry.yaml and private-registry.yaml ask for what the chart's default
    policy refuses: an Ingress, and a token for an upstream's host; test_operator_policy.py
    has such specs, tests/packaging/test_chart_in_cluster.py checks every example against the
    CRDs.)"""
    path = ROOT / "helm" / "entrepot" / "examples" / f"{example}.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    mirrors = ("ModuleMirror", "NpmMirror")
    for doc in docs:  # this cluster's shared volumes are in the class "standard"
        storage = doc.get("spec", {}).get("storage", {}) if doc["kind"] in mirrors else {}
        if storage.get("storageClassName"):
            storage["storageClassName"] = "standard"
    kube("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
    (doc,) = [d for d in docs if d["kind"] in mirrors]
    name = doc["metadata"]["name"]
    wait(lambda: ready(kube, ns, name, doc["kind"].lower()), 30, f"{example} Ready")
    if example == "highly-available":
        assert get(kube, "poddisruptionbudget", name, "-n", ns)["spec"]["maxUnavailable"] == 1


@pytest.mark.usefixtures("operator")
def test_not_ready_says_why(kube: Any, ns: str) -> None:
    """Issue 11, point 2: a cache claim of a class that does not exist, and a nodeSelector
    that matches no node: Ready=False names the cause in the API's own words."""
    kube(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=mirror("noclass", storage={"storageClassName": "shared-files"}),
    )
    kube(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=mirror("nowhere", nodeSelector={"disktype": "unobtainium"}),
    )

    def reason(name: str, want: str) -> dict[str, Any] | None:
        ready_ = conditions_of(kube, ns, name).get("Ready", {})
        return ready_ if ready_.get("reason") == want else None

    storage = wait(lambda: reason("noclass", "StoragePending"), 60, "StoragePending")
    assert "PersistentVolumeClaim noclass-cache is Pending" in storage["message"]
    assert "shared-files" in storage["message"]
    placement = wait(lambda: reason("nowhere", "Unschedulable"), 60, "Unschedulable")
    assert "node" in placement["message"]
    table = kube("get", "mm", "-n", ns).stdout
    assert "StoragePending" in table, table  # the Reason printer column
    assert "Unschedulable" in table, table


@pytest.mark.usefixtures("operator")
def test_an_operator_upgrade_rolls_the_mirrors_one_at_a_time(
    kube: Any, ns: str, operator: dict[str, Any]
) -> None:
    """Issue 11, point 10: restarted with a new image and ENTREPOT_OPERATOR_MAX_UPGRADES=1,
    the operator moves the mirrors onto it one at a time (the others say UpgradeQueued),
    and all end on it."""
    names = [f"up{i}" for i in range(4)]
    docs = "\n---\n".join(mirror(n) for n in names)
    kube("apply", "-n", ns, "-f", "-", input=docs)
    wait(lambda: all(ready(kube, ns, n) for n in names), 60, "4 mirrors Ready")
    new = "registry.example.com/entrepot/entrepot:e2e-next"

    def restart(image: str, limit: str) -> None:
        env = {"ENTREPOT_OPERATOR_IMAGE": image, "ENTREPOT_OPERATOR_MAX_UPGRADES": limit}
        restart_operator(operator, env)

    restart(new, "1")
    most_rolling, queued_seen = 0, False
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            deployments = get(kube, "deployments", "-n", ns)["items"]
            on_new = [
                d
                for d in deployments
                if d["spec"]["template"]["spec"]["containers"][0]["image"] == new
            ]
            busy = [
                d
                for d in on_new
                if (d["status"].get("readyReplicas") or 0) < 1
                or (d["status"].get("updatedReplicas") or 0) < 1
                or d["status"].get("observedGeneration", 0) < d["metadata"]["generation"]
            ]
            most_rolling = max(most_rolling, len(busy))
            mirrors = get(kube, "modulemirrors", "-n", ns)["items"]
            queued_seen = queued_seen or any(
                c.get("reason") == "UpgradeQueued"
                for m in mirrors
                for c in (m.get("status") or {}).get("conditions", [])
            )
            if len(on_new) == len(names) and not busy:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the mirrors did not all reach the new image in 90 s")
    finally:
        restart("registry.example.com/entrepot/entrepot:e2e", "2")  # as the other tests expect
    assert most_rolling <= 1, most_rolling
    assert queued_seen
