"""The Helm chart, through the real helm (lint, template) and its parsed output.

The RBAC contract lives in helmchart.RULES; the rendered Roles must grant exactly that.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helmchart import (
    CHART,
    LEASE,
    RELEASE_NAMESPACE,
    REPO,
    RULES,
    Manifest,
    expected_grants,
    load_yaml_documents,
    of_kind,
    one,
    render,
    rendered_grants,
    run_helm,
    set_args,
    tool,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not tool("helm").exists(),
        reason=f"helm is not built at {tool('helm')}: run `make cluster-tools`",
    ),
]

OPTIONS = {
    "watchNamespaces": "{a,b}",
    "replicaCount": "2",
    "metrics.serviceMonitor.enabled": "true",
    "dashboards.enabled": "true",
    "prometheusRule.enabled": "true",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "helm"


def container(docs: list[Manifest]) -> Manifest:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(docs: list[Manifest]) -> dict[str, Manifest]:
    return {e["name"]: e for e in container(docs)["env"]}


# --- helm lint ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, OPTIONS], ids=["defaults", "options"])
def test_lint_strict_passes(home: Path, values: dict[str, str]) -> None:
    done = run_helm(home, "lint", "--strict", str(CHART), *set_args(values))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout
    assert "[ERROR]" not in done.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("entrepot", "0.1.0", "0.1.0")
    assert chart["kubeVersion"] == ">=1.30.0-0"


# --- the operator Deployment -------------------------------------------------------------------


def test_the_deployment_runs_the_operator_as_non_root_on_a_read_only_root(home: Path) -> None:
    docs = render(home)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(docs)
    assert c["command"] + c.get("args", []) == ["entrepot-operator", "run"]
    assert c["image"] == "registry.example.com/entrepot/entrepot:0.1.0"
    assert deployment["spec"]["replicas"] == 1

    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 65532
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = c["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security

    # A writable /tmp, since the root filesystem is not.
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume

    assert c["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert "memory" in c["resources"]["limits"]
    assert pod["serviceAccountName"] == "demo-entrepot"


def test_probes_and_ports(home: Path) -> None:
    c = container(render(home))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert get["port"] in ("health", 8080)


def test_environment_contract_with_defaults(home: Path) -> None:
    env = env_of(render(home))
    assert env["ENTREPOT_OPERATOR_IMAGE"]["value"] == "registry.example.com/entrepot/entrepot:0.1.0"
    assert env["ENTREPOT_WATCH_NAMESPACES"]["value"] == ""
    assert env["ENTREPOT_LOG_LEVEL"]["value"] == "info"
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_environment_contract_with_options(home: Path) -> None:
    docs = render(
        home,
        {
            **OPTIONS,
            "logLevel": "debug",
            "image.tag": "1.2.3",
            "mirrorImage": "registry.example.com/entrepot/mirror:9",
        },
    )
    env = env_of(docs)
    assert env["ENTREPOT_WATCH_NAMESPACES"]["value"] == "a,b"
    assert env["ENTREPOT_LOG_LEVEL"]["value"] == "debug"
    assert env["ENTREPOT_OPERATOR_IMAGE"]["value"] == "registry.example.com/entrepot/mirror:9"
    assert container(docs)["image"] == "registry.example.com/entrepot/entrepot:1.2.3"
    assert one(docs, "Deployment")["spec"]["replicas"] == 2


def test_a_digest_pins_both_images(home: Path) -> None:
    digest = "sha256:" + "ab" * 32
    docs = render(home, {"image.digest": digest})
    pinned = f"registry.example.com/entrepot/entrepot@{digest}"
    assert container(docs)["image"] == pinned
    assert env_of(docs)["ENTREPOT_OPERATOR_IMAGE"]["value"] == pinned


def test_labels_and_selectors_agree(home: Path) -> None:
    docs = render(home, OPTIONS)
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    for key in ("name", "instance", "version", "managed-by", "part-of", "component"):
        assert f"app.kubernetes.io/{key}" in deployment["metadata"]["labels"]
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo", doc["kind"]

    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["interval"] == "30s"


def test_no_service_monitor_by_default(home: Path) -> None:
    assert of_kind(render(home), "ServiceMonitor") == []


def test_no_dashboards_and_no_rules_by_default(home: Path) -> None:
    docs = render(home)
    assert of_kind(docs, "PrometheusRule") == []
    assert [
        d for d in of_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]
    ] == []


def test_dashboards_are_the_checked_in_json_with_the_sidecar_label(home: Path) -> None:
    files = {p.name: p.read_text(encoding="utf-8") for p in (CHART / "dashboards").glob("*.json")}
    assert len(files) >= 2
    docs = render(home, {"dashboards.enabled": "true"})
    maps = [d for d in of_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    assert {name: text.rstrip("\n") for m in maps for name, text in m["data"].items()} == {
        name: text.rstrip("\n") for name, text in files.items()
    }
    assert all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in maps)
    assert all(m["metadata"]["namespace"] == RELEASE_NAMESPACE for m in maps)
    other = render(
        home,
        {
            "dashboards.enabled": "true",
            "dashboards.label": "dash",
            "dashboards.labelValue": "yes",
            "dashboards.namespace": "monitoring",
        },
    )
    moved = [d for d in of_kind(other, "ConfigMap") if "dash" in d["metadata"]["labels"]]
    assert len(moved) == len(files)
    assert all(m["metadata"]["labels"]["dash"] == "yes" for m in moved)
    assert all(m["metadata"]["namespace"] == "monitoring" for m in moved)


def test_prometheus_rule_alerts_have_runbooks(home: Path) -> None:
    rule = one(render(home, {"prometheusRule.enabled": "true"}), "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} == {
        "EntrepotUpstreamFailing",
        "EntrepotServingStale",
        "EntrepotCacheVolumeNearlyFull",
        "EntrepotNoReadyReplica",
        "EntrepotStatsFlushFailing",
    }
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8").lower()
    for alert in alerts:
        anchor = alert["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == alert["alert"].lower()
        assert f"### {alert['alert'].lower()}" in operations, alert["alert"]


def test_everything_namespaced_lands_in_the_release_namespace(home: Path) -> None:
    docs = render(home, OPTIONS)
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in doc["metadata"]
        elif doc["kind"] in ("Role", "RoleBinding") and not doc["metadata"]["name"].endswith(
            "-leader-election"
        ):
            assert doc["metadata"]["namespace"] in ("a", "b")
        else:
            assert doc["metadata"]["namespace"] == RELEASE_NAMESPACE, doc["kind"]


# --- RBAC --------------------------------------------------------------------------------------


def test_rbac_watching_all_namespaces_is_exactly_the_table(home: Path) -> None:
    docs = render(home)
    assert rendered_grants(docs) == expected_grants([])
    assert of_kind(docs, "Role")
    assert of_kind(docs, "ClusterRole")


def test_rbac_watching_listed_namespaces_is_exactly_the_table(home: Path) -> None:
    docs = render(home, OPTIONS)
    granted = rendered_grants(docs)
    assert granted == expected_grants(["a", "b"])

    cluster_resources = {g.resource for g in granted if g.scope == "cluster"}
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}
    for cluster_role in of_kind(docs, "ClusterRole"):
        for rule in cluster_role["rules"]:
            assert not any(r.startswith("modulemirrors") for r in rule["resources"])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(docs, "Role")}
    assert roles == {
        ("a", "demo-entrepot"),
        ("b", "demo-entrepot"),
        (RELEASE_NAMESPACE, "demo-entrepot-leader-election"),
    }
    bindings = {
        (b["metadata"]["namespace"], b["roleRef"]["name"]) for b in of_kind(docs, "RoleBinding")
    }
    assert bindings == roles


@pytest.mark.parametrize("values", [{}, OPTIONS], ids=["all-namespaces", "listed"])
def test_rbac_has_no_wildcards_and_no_secrets(home: Path, values: dict[str, str]) -> None:
    for role in of_kind(render(home, values), "Role") + of_kind(
        render(home, values), "ClusterRole"
    ):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(key, [])), (role, rule)
            assert "secrets" not in rule["resources"]
            assert "nonResourceURLs" not in rule


def test_the_lease_rule_is_limited_to_the_operator_lease(home: Path) -> None:
    leases = {g for g in rendered_grants(render(home)) if g.resource == "leases"}
    assert {(g.verb, g.name) for g in leases} == {
        ("create", ""),
        ("get", LEASE),
        ("update", LEASE),
    }
    assert {g.scope for g in leases} == {RELEASE_NAMESPACE}


def test_rbac_create_false_renders_no_rbac(home: Path) -> None:
    docs = render(home, {"rbac.create": "false"})
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    assert "ServiceAccount" in kinds


def test_an_existing_service_account_must_be_named(home: Path) -> None:
    done = run_helm(
        home, "template", "demo", str(CHART), *set_args({"serviceAccount.create": "false"})
    )
    assert done.returncode != 0
    assert "serviceAccount.name must name an existing ServiceAccount" in done.stderr
    docs = render(home, {"serviceAccount.create": "false", "serviceAccount.name": "ops"})
    assert of_kind(docs, "ServiceAccount") == []
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    assert all(
        b["subjects"][0]["name"] == "ops"
        for b in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding")
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"logLevel": "verbose"}, "logLevel"),
        ({"watchNamespace": "a"}, "watchNamespace"),
        ({"watchNamespaces": "{Not_A_Namespace}"}, "watchNamespaces"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
        ({"prometheusRule.upstreamErrorRatio": "2"}, "upstreamErrorRatio"),
        ({"prometheusRule.staleFor": "soon"}, "staleFor"),
        ({"dashboards.label": ""}, "label"),
    ],
)
def test_the_values_schema_refuses_mistakes(
    home: Path, values: dict[str, str], message: str
) -> None:
    done = run_helm(home, "template", "demo", str(CHART), *set_args(values))
    assert done.returncode != 0
    assert message in done.stderr


def test_docs_rbac_table_matches_the_rules() -> None:
    """docs/helm.md's RBAC table lists the same rules as helmchart.RULES."""
    text = (REPO / "docs" / "helm.md").read_text()
    section = text.split("\n## RBAC", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("API group", "---"):
            continue
        group, resource, verbs, where, _why = cells
        rows.add((group.strip('"'), resource, tuple(verbs.split(", ")), where))
    expected = {
        (
            r.group,
            r.resource + (f" named {r.name}" if r.name else ""),
            tuple(r.verbs.split()),
            r.where,
        )
        for r in RULES
    }
    assert rows == expected


# --- the CRD -----------------------------------------------------------------------------------


def test_the_chart_crd_is_the_generated_crd() -> None:
    generated = sorted((REPO / "crds").glob("*.yaml"))
    if not generated:
        pytest.skip("crds/ is not generated yet")
    copies = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in copies] == [p.name for p in generated]
    for source, copy in zip(generated, copies, strict=True):
        assert copy.read_bytes() == source.read_bytes(), (
            f"{copy} differs from {source}: cp {source.relative_to(REPO)} {copy.relative_to(REPO)}"
        )


def test_the_chart_crd_defines_module_mirrors() -> None:
    (crd,) = [d for p in sorted((CHART / "crds").glob("*.yaml")) for d in load_yaml_documents(p)]
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "modulemirrors.entrepot.dev"
    spec = crd["spec"]
    assert spec["group"] == "entrepot.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModuleMirror"
    assert spec["names"]["plural"] == "modulemirrors"
    assert "mm" in spec["names"]["shortNames"]
    (version,) = [v for v in spec["versions"] if v["name"] == "v1alpha1"]
    assert version["served"]
    assert version["storage"]
    assert "status" in version["subresources"]


# --- examples ----------------------------------------------------------------------------------

EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))


def test_there_are_four_examples() -> None:
    assert [p.name for p in EXAMPLES] == [
        "air-gapped.yaml",
        "highly-available.yaml",
        "minimal.yaml",
        "private-modules.yaml",
    ]


def mirror_of(path: Path) -> Manifest:
    """The example's one ModuleMirror; anything else in the file is a Secret it refers to."""
    docs = load_yaml_documents(path)
    (mirror,) = [d for d in docs if d["kind"] == "ModuleMirror"]
    assert all(d["kind"] == "Secret" for d in docs if d is not mirror)
    return mirror


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_a_module_mirror(path: Path) -> None:
    for doc in load_yaml_documents(path):
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert "namespace" not in doc["metadata"]
    doc = mirror_of(path)
    assert doc["apiVersion"] == "entrepot.dev/v1alpha1"
    assert re.fullmatch(r"https://proxy\.([a-z]+\.)?example\.com\b.*", doc["spec"]["go"]["proxy"])


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_valid_for_the_operator(path: Path) -> None:
    """The operator's own model accepts each example (the CRD is checked in a cluster)."""
    api = pytest.importorskip("entrepot_operator.api")
    api.ModuleMirrorSpec.model_validate(mirror_of(path)["spec"])


def test_the_examples_show_what_they_promise() -> None:
    specs = {p.stem: mirror_of(p)["spec"] for p in EXAMPLES}
    minimal = specs["minimal"]
    assert minimal["replicas"] == 1
    assert minimal["storage"]["accessMode"] == "ReadWriteOnce"
    assert "emptyDir" not in minimal["storage"]

    private = specs["private-modules"]
    private_route = {"patterns": "git.example.com", "proxy": "direct", "sumdb": False}
    assert private_route in private["go"]["routes"]
    assert private["credentials"]["gitCredentials"] == {
        "secretName": "git-creds",
        "key": "git-credentials",
    }

    air_gapped = specs["air-gapped"]
    assert air_gapped["go"]["proxy"] == "https://proxy.corp.example.com"  # no `direct`
    sumdb = air_gapped["go"]["sumdb"]
    (database,) = sumdb["databases"]
    assert database["name"] == "sum.corp.example.com"
    assert database["patterns"] == "corp.example.com"
    assert sumdb["noSum"] == "git.corp.example.com"
    (secret,) = [
        d
        for d in load_yaml_documents(CHART / "examples" / "air-gapped.yaml")
        if d["kind"] == "Secret"
    ]
    assert secret["metadata"]["name"] == database["keySecret"]["secretName"]
    assert secret["stringData"][database["keySecret"]["key"]].startswith("sum.corp.example.com+")

    ha = specs["highly-available"]
    assert ha["replicas"] == 3
    assert ha["storage"]["accessMode"] == "ReadWriteMany"
