"""The chart installed into a real API server: Pod Security admission, the RBAC authorizer,
the CRD's schema.

``helm install --wait`` into a namespace that enforces the *restricted* Pod Security Standard
(kwok marks the operator pods Ready without running them, so no image is pulled); then the API
server's own authorizer answers a SubjectAccessReview for every permission of
helmchart.RULES (allowed) and for a list of near misses (denied); the examples pass a
server-side dry run with strict field validation against the chart's CRD. With the Prometheus
Operator's own CRDs installed (the version pinned in e2e/cluster/toolchain.py), the chart's
PrometheusRule and dashboards install, and the operator's ServiceMonitor is accepted as rendered.

Uses ENTREPOT_E2E_KUBECONFIG when set, else starts the local control plane of e2e/cluster/ for
this module and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import yaml
from helmchart import (
    CHART,
    LEASE,
    RELEASE_NAMESPACE,
    REPO,
    Grant,
    expected_grants,
    load_yaml_documents,
    run_helm,
    set_args,
    tool,
)
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from entrepot_operator.api import ModuleMirrorSpec
from entrepot_operator.render.meta import Owner
from entrepot_operator.render.optional import TARGET_LABELS, render_service_monitor

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (tool("helm").exists() and tool("kubectl").exists()),
        reason=f"helm/kubectl are not built in {tool('helm').parent}: run `make cluster-tools`",
    ),
]


def cluster_module(name: str) -> ModuleType:
    """A module of e2e/cluster/ (scripts, not a package)."""
    folder = str(REPO / "e2e" / "cluster")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return __import__(name)


@pytest.fixture(scope="module")
def kubeconfig() -> Iterator[str]:
    external = os.environ.get("ENTREPOT_E2E_KUBECONFIG")
    if external:
        yield external
        return
    controlplane = cluster_module("controlplane")
    toolchain = cluster_module("toolchain")

    missing = toolchain.missing()
    if missing:
        pytest.skip(f"control plane not built ({' '.join(missing)}): run `make cluster-tools`")
    plane = controlplane.start()
    try:
        yield plane.kubeconfig
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except ApiException as e:
            last, result = e, None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout}s (last error: {last})")


def established(api: client.ApiClient, crd: str) -> bool:
    found = client.ApiextensionsV1Api(api).read_custom_resource_definition(crd)
    conditions = found.status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def kubectl_run(
    kubeconfig: str, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("kubectl")), "--kubeconfig", kubeconfig, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def make_namespace(api: client.ApiClient, name: str, *, restricted: bool = False) -> None:
    labels = (
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        if restricted
        else {}
    )
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    wait_for(lambda: core.read_namespaced_service_account("default", name), 30, "default SA")


@pytest.fixture
def names(api: client.ApiClient) -> Iterator[dict[str, str]]:
    """A release namespace (restricted Pod Security) and three team namespaces."""
    suffix = uuid.uuid4().hex[:6]
    made = {
        "release": f"entrepot-{suffix}",
        "a": f"team-a-{suffix}",
        "b": f"team-b-{suffix}",
        "c": f"team-c-{suffix}",
    }
    for key, name in made.items():
        make_namespace(api, name, restricted=key == "release")
    yield made
    for name in made.values():
        client.CoreV1Api(api).delete_namespace(name)


def helm(
    helm_home: Path, kubeconfig: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = run_helm(helm_home, *args, env={"KUBECONFIG": kubeconfig})
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def allowed(api: client.ApiClient, sa: tuple[str, str], grant: Grant) -> bool:
    """The API server's authorizer: may this ServiceAccount do this?"""
    name, namespace = sa
    resource, _, subresource = grant.resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{name}",
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                namespace="" if grant.scope == "cluster" else grant.scope,
                verb=grant.verb,
                group=grant.group,
                resource=resource,
                subresource=subresource,
                name=grant.name,
            ),
        )
    )
    answer = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)


def for_namespaces(grants: set[Grant], names: dict[str, str]) -> set[Grant]:
    """The table's grants with the test's namespace names."""
    rename = {"a": names["a"], "b": names["b"], RELEASE_NAMESPACE: names["release"]}
    return {
        Grant(rename.get(g.scope, g.scope), g.group, g.resource, g.verb, g.name) for g in grants
    }


def ready_replicas(api: client.ApiClient, namespace: str, name: str) -> int:
    status = client.AppsV1Api(api).read_namespaced_deployment(name, namespace).status
    return status.ready_replicas or 0


def test_install_with_listed_namespaces(
    api: client.ApiClient, kubeconfig: str, helm_home: Path, names: dict[str, str]
) -> None:
    release, a, b, c = names["release"], names["a"], names["b"], names["c"]
    values = {"watchNamespaces": f"{{{a},{b}}}", "replicaCount": "2"}
    install = helm(
        helm_home,
        kubeconfig,
        "install",
        "ops",
        str(CHART),
        "-n",
        release,
        *set_args(values),
        "--wait",
        "--timeout",
        "90s",
    )
    # Two operator pods admitted under the restricted Pod Security Standard, and Ready.
    assert ready_replicas(api, release, "ops-entrepot") == 2
    pods = client.CoreV1Api(api).list_namespaced_pod(release).items
    assert len(pods) == 2
    assert f"export GOPROXY=http://gomods.{a}.svc:8080" in install.stdout

    sa = ("ops-entrepot", release)
    for grant in sorted(for_namespaces(expected_grants(["a", "b"]), names)):
        assert allowed(api, sa, grant), grant
    near_misses = [
        Grant(a, "", "secrets", "get"),
        Grant(a, "", "secrets", "list"),
        Grant(c, "entrepot.dev", "modulemirrors", "list"),
        Grant(c, "entrepot.dev", "npmmirrors", "list"),
        Grant(c, "apps", "deployments", "create"),
        Grant("cluster", "entrepot.dev", "modulemirrors", "list"),
        Grant("cluster", "entrepot.dev", "npmmirrors", "list"),
        Grant("cluster", "", "namespaces", "get"),
        Grant("cluster", "", "namespaces", "create"),
        Grant(a, "entrepot.dev", "modulemirrors", "delete"),
        Grant(a, "entrepot.dev", "modulemirrors", "update"),
        Grant(a, "entrepot.dev", "npmmirrors", "delete"),
        Grant(a, "entrepot.dev", "npmmirrors", "create"),
        Grant(a, "apps", "deployments", "update"),
        # Children every mirror has are never deleted by the operator (garbage collection).
        Grant(a, "apps", "deployments", "delete"),
        Grant(a, "", "services", "delete"),
        Grant(a, "", "configmaps", "delete"),
        # The status is written, never read on its own.
        Grant(a, "entrepot.dev", "modulemirrors/status", "get"),
        Grant(a, "entrepot.dev", "npmmirrors/status", "get"),
        # Pods and Events are read to explain a mirror, never written.
        Grant(a, "", "pods", "create"),
        Grant(a, "", "pods", "delete"),
        Grant(a, "", "pods/exec", "create"),
        Grant(a, "", "pods/log", "get"),
        Grant(a, "", "events", "delete"),
        Grant(c, "", "pods", "list"),
        Grant(a, "coordination.k8s.io", "leases", "create"),
        Grant(release, "coordination.k8s.io", "leases", "update", "someone-else"),
        Grant(release, "coordination.k8s.io", "leases", "patch", LEASE),
        Grant(release, "apps", "deployments", "patch"),
        Grant("cluster", "apiextensions.k8s.io", "customresourcedefinitions", "patch"),
        Grant("cluster", "rbac.authorization.k8s.io", "clusterroles", "bind"),
    ]
    for grant in near_misses:
        assert not allowed(api, sa, grant), grant

    helm(helm_home, kubeconfig, "uninstall", "ops", "-n", release, "--wait")
    lease = Grant(release, "coordination.k8s.io", "leases", "update", LEASE)
    assert not allowed(api, sa, lease)


def test_install_watching_all_namespaces(
    api: client.ApiClient, kubeconfig: str, helm_home: Path, names: dict[str, str]
) -> None:
    release = names["release"]
    helm(
        helm_home,
        kubeconfig,
        "install",
        "ops",
        str(CHART),
        "-n",
        release,
        "--wait",
        "--timeout",
        "90s",
    )
    assert ready_replicas(api, release, "ops-entrepot") == 1
    sa = ("ops-entrepot", release)
    granted = for_namespaces(expected_grants([]), names)
    for grant in sorted(granted):
        assert allowed(api, sa, grant), grant
    # Cluster-wide means every namespace, including ones made after the install.
    assert allowed(api, sa, Grant(names["c"], "apps", "deployments", "create"))
    for grant in [
        Grant("cluster", "", "secrets", "get"),
        Grant(names["c"], "", "secrets", "get"),
        Grant("cluster", "", "namespaces", "list"),
        Grant("cluster", "", "pods", "create"),
        Grant("cluster", "", "pods/exec", "create"),
        Grant("cluster", "apps", "deployments", "update"),
        Grant("cluster", "apps", "deployments", "delete"),
    ]:
        assert not allowed(api, sa, grant), grant
    helm(helm_home, kubeconfig, "uninstall", "ops", "-n", release, "--wait")


def test_the_examples_fit_the_chart_crd(
    api: client.ApiClient, kubeconfig: str, helm_home: Path, names: dict[str, str]
) -> None:
    """Server-side dry run, strict field validation: unknown or misspelt fields fail. The
    chart's policy widened as npm-private-registry.yaml says it must be (its token goes to its
    upstream's host, and it has an Ingress), so the admission policies pass them all."""
    widened = {
        "policy.bearerTokenHosts": "{npm.upstream.corp.example.com}",
        "policy.ingress.hosts": "{npm.corp.example.com}",
    }
    install = ["install", "ops", str(CHART), "-n", names["release"], *set_args(widened)]
    helm(helm_home, kubeconfig, *install)
    for crd in ("modulemirrors.entrepot.dev", "npmmirrors.entrepot.dev"):
        wait_for(lambda crd=crd: established(api, crd), 30, f"{crd} established")
    kubectl = [str(tool("kubectl")), "--kubeconfig", kubeconfig, "-n", names["a"]]
    done = subprocess.run(
        [
            *kubectl,
            "apply",
            "--server-side",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            str(CHART / "examples"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    examples = sorted((CHART / "examples").glob("*.yaml"))
    documents = sum(len(load_yaml_documents(p)) for p in examples)
    # four ModuleMirrors, three NpmMirrors, the Secret of air-gapped.yaml, the database
    # password of highly-available.yaml, the token of npm-private-registry.yaml and the
    # administrator's password of private-registry.yaml
    assert documents == 11
    assert done.stdout.count("serverside-applied (server dry run)") == documents, done.stdout

    # And the same check refuses a wrong one, so it does check.
    wrong = (CHART / "examples" / "minimal.yaml").read_text().replace("accessMode", "accesMode")
    refused = subprocess.run(
        [*kubectl, "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-"],
        input=wrong,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "accesMode" in refused.stderr

    # The schema's rules for checksum databases: exactly one of key/keySecret (CEL), distinct
    # names (a list keyed by name), a key's syntax (a pattern).
    secret, mirror = load_yaml_documents(CHART / "examples" / "air-gapped.yaml")
    (database,) = mirror["spec"]["go"]["sumdb"]["databases"]
    key = secret["stringData"][database["keySecret"]["key"]]  # the example's made-up key
    neither = {k: v for k, v in database.items() if k != "keySecret"}
    for databases, why in [
        ([{**database, "key": key}], "exactly one of 'key'"),
        ([neither], "exactly one of 'key'"),
        ([database, {"name": database["name"], "key": key}], "duplicate entries for key"),
        ([{**neither, "key": "sum.corp.example.com+nothex+AAAA"}], "should match"),
    ]:
        mirror["spec"]["go"]["sumdb"]["databases"] = databases
        refused = subprocess.run(
            [
                *kubectl,
                "apply",
                "--server-side",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
            ],
            input=yaml.safe_dump(mirror),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0, databases
        assert why in refused.stderr, refused.stderr

    # An NpmMirror's rules: the upstream is a registry URL, policy entries are name patterns,
    # a wildcard Ingress needs a public URL.
    (npm,) = load_yaml_documents(CHART / "examples" / "npm.yaml")
    for change, why in [
        ({"npm": {"upstream": "registry.example.com"}}, "spec.npm.upstream"),
        (
            {"npm": {"upstream": "https://r.example.com/", "policy": {"private": ["@Corp/*"]}}},
            "every entry must be a package name pattern",
        ),
        (
            {"npm": {"upstream": "https://r.example.com/"}, "ingress": {"host": "*.example.com"}},
            "an Ingress for a wildcard host cannot name the registry's URL",
        ),
    ]:
        body = {**npm, "spec": {**npm["spec"], **change}}
        refused = subprocess.run(
            [
                *kubectl,
                "apply",
                "--server-side",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
            ],
            input=yaml.safe_dump(body),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0, change
        assert why in refused.stderr, refused.stderr
    helm(helm_home, kubeconfig, "uninstall", "ops", "-n", names["release"])


def test_the_documented_crd_upgrade_works_on_a_helm_installed_crd(
    api: client.ApiClient, kubeconfig: str, helm_home: Path, names: dict[str, str], tmp_path: Path
) -> None:
    """docs/helm.md's command. Without --force-conflicts, kubectl refuses to take over fields
    the `helm` field manager set when it created the CRD."""
    command = "kubectl apply --server-side --force-conflicts -f helm/entrepot/crds/"
    assert command in (REPO / "docs" / "helm.md").read_text()

    helm(helm_home, kubeconfig, "install", "ops", str(CHART), "-n", names["release"])
    extensions = client.ApiextensionsV1Api(api)
    crd_name = "modulemirrors.entrepot.dev"
    managers = {
        f.manager
        for f in extensions.read_custom_resource_definition(crd_name).metadata.managed_fields
    }
    source = CHART / "crds" / "entrepot.dev_modulemirrors.yaml"
    newer = tmp_path / "crds"
    newer.mkdir()
    marker = "A Go module mirror (GOPROXY) run by Entrepôt, next version."
    text = source.read_text()
    assert "A Go module mirror (GOPROXY) run by Entrepôt." in text
    (newer / source.name).write_text(
        text.replace("A Go module mirror (GOPROXY) run by Entrepôt.", marker)
    )
    kubectl = [str(tool("kubectl")), "--kubeconfig", kubeconfig]

    def apply(folder: Path, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*kubectl, "apply", "--server-side", *flags, "-f", str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        if "helm" in managers:
            refused = apply(newer)
            assert refused.returncode != 0
            assert "conflict" in refused.stderr.lower()
        done = apply(newer, "--force-conflicts")
        assert done.returncode == 0, done.stderr
        crd = extensions.read_custom_resource_definition(crd_name)
        assert crd.spec.versions[0].schema.open_apiv3_schema.description == marker
    finally:
        restored = apply(CHART / "crds", "--force-conflicts")
        assert restored.returncode == 0, restored.stderr
        helm(helm_home, kubeconfig, "uninstall", "ops", "-n", names["release"])


@pytest.fixture
def prometheus_operator_crds(api: client.ApiClient, kubeconfig: str) -> Iterator[list[str]]:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from its Go module at
    toolchain.PROMETHEUS_OPERATOR, for one test only: the other tests run without them (the
    operator creates ServiceMonitors only where the CRD exists). A CRD the cluster already had
    (ENTREPOT_E2E_KUBECONFIG) is used as it is and never deleted."""
    files = cluster_module("toolchain").monitoring_crds()
    extensions = client.ApiextensionsV1Api(api)
    present = {crd.metadata.name for crd in extensions.list_custom_resource_definition().items}
    crds = [load_yaml_documents(f)[0]["metadata"]["name"] for f in files]
    ours = [(name, f) for name, f in zip(crds, files, strict=True) if name not in present]
    try:
        for _, path in ours:
            # Server-side: these two would fit, but client-side apply's last-applied
            # annotation (256 KiB at most) does not for the Prometheus Operator's larger CRDs.
            done = kubectl_run(kubeconfig, "apply", "--server-side", "-f", str(path))
            assert done.returncode == 0, done.stderr
        for name in crds:
            wait_for(lambda name=name: established(api, name), 30, f"{name} established")
        yield crds
    finally:
        for name, _ in ours:
            extensions.delete_custom_resource_definition(name)
        for name, _ in ours:
            wait_for(lambda name=name: gone(extensions, name), 60, f"{name} deleted")


def gone(extensions: client.ApiextensionsV1Api, crd: str) -> bool:
    try:
        extensions.read_custom_resource_definition(crd)
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


PROMETHEUS_RULE_ALERTS = [
    "EntrepotUpstreamFailing",
    "EntrepotServingStale",
    "EntrepotCacheVolumeNearlyFull",
    "EntrepotNoReadyReplica",
    "EntrepotStatsFlushFailing",
]


def test_monitoring_objects_fit_the_prometheus_operator_crds(
    api: client.ApiClient,
    kubeconfig: str,
    helm_home: Path,
    names: dict[str, str],
    prometheus_operator_crds: list[str],
) -> None:
    """The chart's PrometheusRule and dashboards, and the operator's ServiceMonitor, against
    the real CRDs in the real API server: accepted, and stored as sent (nothing pruned)."""
    release, team = names["release"], names["a"]
    monitoring = client.CustomObjectsApi(api)
    helm(
        helm_home,
        kubeconfig,
        "install",
        "ops",
        str(CHART),
        "-n",
        release,
        *set_args(
            {
                "dashboards.enabled": "true",
                "prometheusRule.enabled": "true",
                "metrics.serviceMonitor.enabled": "true",
            }
        ),
    )
    try:
        # The CRDs are served here, so the chart's own ServiceMonitor is installed too.
        own = monitoring.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", release, "servicemonitors", "ops-entrepot"
        )
        assert own["spec"]["endpoints"][0]["port"] == "metrics"
        # The PrometheusRule: admitted by the real schema, five alerts, stored as rendered.
        rule = monitoring.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", release, "prometheusrules", "ops-entrepot"
        )
        alerts = [r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]]
        assert alerts == PROMETHEUS_RULE_ALERTS
        manifest = helm(helm_home, kubeconfig, "get", "manifest", "ops", "-n", release).stdout
        rendered = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "PrometheusRule"]
        assert [rule["spec"]] == [d["spec"] for d in rendered]

        # The dashboards: one ConfigMap per JSON file, with the label Grafana's sidecar watches.
        dashboards = sorted((CHART / "dashboards").glob("*.json"))
        config_maps = client.CoreV1Api(api).list_namespaced_config_map(
            release, label_selector="grafana_dashboard=1"
        )
        by_name = {cm.metadata.name: cm for cm in config_maps.items}
        assert sorted(by_name) == [
            f"ops-entrepot-dashboard-{p.stem.removeprefix('entrepot-')}" for p in dashboards
        ]
        for path in dashboards:
            cm = by_name[f"ops-entrepot-dashboard-{path.stem.removeprefix('entrepot-')}"]
            assert cm.metadata.labels["grafana_dashboard"] == "1"
            dashboard = json.loads(cm.data[path.name])
            assert dashboard["panels"], path.name
            assert dashboard == json.loads(path.read_text())

        # The ServiceMonitor exactly as the operator renders it, owned by a real ModuleMirror,
        # created with strict field validation: an unknown field is refused, not pruned.
        (example,) = load_yaml_documents(CHART / "examples" / "minimal.yaml")
        mirror = monitoring.create_namespaced_custom_object(
            "entrepot.dev", "v1alpha1", team, "modulemirrors", example
        )
        owner = Owner(
            name=mirror["metadata"]["name"], namespace=team, uid=mirror["metadata"]["uid"]
        )
        monitor = render_service_monitor(ModuleMirrorSpec.model_validate(mirror["spec"]), owner)
        created = kubectl_run(
            kubeconfig, "create", "--validate=strict", "-f", "-", input=json.dumps(monitor)
        )
        assert created.returncode == 0, created.stderr
        assert "warning" not in created.stderr.lower(), created.stderr
        stored = monitoring.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", team, "servicemonitors", owner.name
        )
        assert stored["spec"]["targetLabels"] == list(TARGET_LABELS)
        assert stored["spec"] == monitor["spec"]
        assert stored["metadata"]["labels"] == monitor["metadata"]["labels"]

        # And the same checks refuse a wrong one, so they do check.
        wrong_monitor = json.loads(json.dumps(monitor))
        wrong_monitor["spec"]["targetLabel"] = wrong_monitor["spec"].pop("targetLabels")
        (wrong_rule,) = rendered
        wrong_rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
        for wrong, why in [
            (wrong_monitor, 'unknown field "spec.targetLabel"'),
            (wrong_rule, "should match"),
        ]:
            wrong["metadata"]["name"] = "wrong"
            refused = kubectl_run(
                kubeconfig,
                "create",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
                input=json.dumps(wrong),
            )
            assert refused.returncode != 0, wrong["kind"]
            assert why in refused.stderr, refused.stderr
    finally:
        helm(helm_home, kubeconfig, "uninstall", "ops", "-n", release, "--wait")


LONG_RELEASE = "r" * 45 + "-entrepo"  # 53 characters: the longest release name helm takes


def admission_policy_checked(api: client.ApiClient, name: str) -> dict[str, Any]:
    """The API server's type check of a ValidatingAdmissionPolicy against the CRD's schema
    (status.typeChecking), once it has run."""
    found = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).get_cluster_custom_object(
            "admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", name
        ),
    )
    status = found.get("status") or {}
    if status.get("observedGeneration") != found["metadata"]["generation"]:
        return {}
    return cast(dict[str, Any], status.get("typeChecking") or {"checked": True})


def test_a_53_character_release_name_installs_with_every_option(
    api: client.ApiClient, kubeconfig: str, helm_home: Path, names: dict[str, str]
) -> None:
    """Issue 11: `<fullname>-metrics` over 63 characters broke installs of long release names;
    metrics.serviceMonitor.enabled without the ServiceMonitor CRD broke every install."""
    release = names["release"]
    assert len(LONG_RELEASE) == 53
    values = {
        "replicaCount": "2",
        "networkPolicy.enabled": "true",
        "metrics.serviceMonitor.enabled": "true",
        "prometheusRule.enabled": "true",
        "dashboards.enabled": "true",
    }
    install = helm(
        helm_home,
        kubeconfig,
        "install",
        LONG_RELEASE,
        str(CHART),
        "-n",
        release,
        *set_args(values),
        "--wait",
        "--timeout",
        "90s",
    )
    try:
        fullname = f"{LONG_RELEASE}-entrepot"
        services = client.CoreV1Api(api).list_namespaced_service(release).items
        (service,) = [s for s in services if s.metadata.name.endswith("-metrics")]
        assert service.metadata.name == fullname[:55] + "-metrics"
        assert ready_replicas(api, release, fullname) == 2
        assert client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(fullname, release)
        networking = client.NetworkingV1Api(api)
        assert networking.read_namespaced_network_policy(fullname, release)
        # No ServiceMonitor/PrometheusRule CRD in this cluster: left out, and the notes say so.
        notes = " ".join(install.stdout.split())
        assert "no ServiceMonitor was created" in notes, install.stdout
        assert "no alerts were created" in notes
        manifest = helm(helm_home, kubeconfig, "get", "manifest", LONG_RELEASE, "-n", release)
        kinds = {d["kind"] for d in yaml.safe_load_all(manifest.stdout) if d}
        assert not kinds & {"ServiceMonitor", "PrometheusRule"}
        assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
        # Each admission policy's CEL type-checks against its kind's schema.
        for plural in ("modulemirrors", "npmmirrors"):
            checked = wait_for(
                lambda plural=plural: admission_policy_checked(
                    api, f"{release}-{fullname}-{plural}"
                ),
                60,
                f"the {plural} admission policy type-checked",
            )
            assert not checked.get("expressionWarnings"), (plural, checked)
    finally:
        helm(helm_home, kubeconfig, "uninstall", LONG_RELEASE, "-n", release, "--wait")


def run_operator(
    kubeconfig: str, log: Path, *, until: str, timeout: float
) -> tuple[int | None, str]:
    """`entrepot-operator run` with the admin kubeconfig, no leader election: its exit status
    (None: it was still running when ``until`` showed in its output, and was then stopped) and
    its output."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ENTREPOT_", "POD_"))},
        "KUBECONFIG": kubeconfig,
        "ENTREPOT_OPERATOR_METRICS": "off",
        "ENTREPOT_OPERATOR_HEALTH": f"127.0.0.1:{free_port()}",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "entrepot-operator"), "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: proc.poll() is not None or until in log.read_text(),
            timeout,
            f"the operator exits or says {until!r}",
        )
        return proc.poll(), log.read_text()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_operator_refuses_to_start_on_an_older_crd(
    api: client.ApiClient, kubeconfig: str, tmp_path: Path
) -> None:
    """Issue 11: no CRD version check at operator start. An operator upgraded before its CRD
    now says which fields the cluster's CRD lacks, and how to apply the new one, and exits 2."""
    source = CHART / "crds" / "entrepot.dev_modulemirrors.yaml"
    crd_name = "modulemirrors.entrepot.dev"

    def apply(path: Path) -> None:
        done = kubectl_run(
            kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(path)
        )
        assert done.returncode == 0, done.stderr

    (crd,) = load_yaml_documents(source)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # Fields no validation rule of the CRD names (the API server would refuse the CRD).
    del schema["properties"]["spec"]["properties"]["logLevel"]
    del schema["properties"]["status"]["properties"]["configHash"]
    older = tmp_path / source.name
    older.write_text(yaml.safe_dump(crd))
    try:
        apply(older)
        wait_for(lambda: established(api, crd_name), 30, "CRD established")
        status, output = run_operator(
            kubeconfig, tmp_path / "older.log", until="never printed", timeout=120
        )
        assert status == 2, output
        assert "older than this operator: it lacks spec.logLevel, status.configHash" in output
        assert "kubectl apply --server-side --force-conflicts -f helm/entrepot/crds/" in output
        assert "Traceback" not in output
    finally:
        apply(CHART / "crds")  # both kinds
    # The chart's own CRDs: the check passes and the operator goes on.
    status, output = run_operator(
        kubeconfig, tmp_path / "fits.log", until="fits this operator", timeout=120
    )
    assert status is None, output
