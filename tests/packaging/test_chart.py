"""The Helm chart, through the real helm (lint, template) and its parsed output.

The RBAC contract lives in helmchart.RULES; the rendered Roles must grant exactly that.
"""

from __future__ import annotations

import json
import re
from copy import deepcopy
from pathlib import Path

import pytest
import yaml
from helmchart import (
    CHART,
    LEASE,
    MONITORING_APIS,
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
    assert env["ENTREPOT_OPERATOR_RESYNC"]["value"] == "300"
    assert env["ENTREPOT_OPERATOR_MAX_UPGRADES"]["value"] == "2"
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_environment_contract_with_options(home: Path) -> None:
    docs = render(
        home,
        {
            **OPTIONS,
            "logLevel": "debug",
            "resyncSeconds": "60",
            "maxConcurrentUpgrades": "0",
            "image.tag": "1.2.3",
            "mirrorImage": "registry.example.com/entrepot/mirror:9",
        },
    )
    env = env_of(docs)
    assert env["ENTREPOT_WATCH_NAMESPACES"]["value"] == "a,b"
    assert env["ENTREPOT_LOG_LEVEL"]["value"] == "debug"
    assert env["ENTREPOT_OPERATOR_RESYNC"]["value"] == "60"
    assert env["ENTREPOT_OPERATOR_MAX_UPGRADES"]["value"] == "0"
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
    docs = render(home, OPTIONS, api_versions=MONITORING_APIS)
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
    rule = one(
        render(home, {"prometheusRule.enabled": "true"}, api_versions=MONITORING_APIS),
        "PrometheusRule",
    )
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


CLUSTER_SCOPED = (
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)


def test_everything_namespaced_lands_in_the_release_namespace(home: Path) -> None:
    docs = render(home, {**OPTIONS, "networkPolicy.enabled": "true"}, api_versions=MONITORING_APIS)
    for doc in docs:
        if doc["kind"] in CLUSTER_SCOPED:
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
    bound = {b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")}
    for cluster_role in of_kind(docs, "ClusterRole"):
        if cluster_role["metadata"]["name"] not in bound:
            continue  # the aggregated view/edit roles, for users (test_aggregated_roles)
        for rule in cluster_role["rules"]:
            assert not any(r.startswith(("modulemirrors", "npmmirrors")) for r in rule["resources"])
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


def chart_crds() -> dict[str, Manifest]:
    """The chart's CRDs by name."""
    docs = [d for p in sorted((CHART / "crds").glob("*.yaml")) for d in load_yaml_documents(p)]
    return {d["metadata"]["name"]: d for d in docs}


@pytest.mark.parametrize(
    ("kind", "plural", "short"),
    [("ModuleMirror", "modulemirrors", "mm"), ("NpmMirror", "npmmirrors", "npmm")],
)
def test_the_chart_crds_define_both_kinds(kind: str, plural: str, short: str) -> None:
    crds = chart_crds()
    assert sorted(crds) == ["modulemirrors.entrepot.dev", "npmmirrors.entrepot.dev"]
    crd = crds[f"{plural}.entrepot.dev"]
    assert crd["kind"] == "CustomResourceDefinition"
    spec = crd["spec"]
    assert spec["group"] == "entrepot.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert short in spec["names"]["shortNames"]
    assert spec["names"]["categories"] == ["entrepot"]  # kubectl get entrepot: both kinds
    (version,) = [v for v in spec["versions"] if v["name"] == "v1alpha1"]
    assert version["served"]
    assert version["storage"]
    assert "status" in version["subresources"]


# --- examples ----------------------------------------------------------------------------------

EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))


def test_there_are_seven_examples() -> None:
    assert [p.name for p in EXAMPLES] == [
        "air-gapped.yaml",
        "highly-available.yaml",
        "minimal.yaml",
        "npm-private-registry.yaml",
        "npm.yaml",
        "private-modules.yaml",
        "private-registry.yaml",
    ]


MIRROR_KINDS = ("ModuleMirror", "NpmMirror")


def mirror_of(path: Path) -> Manifest:
    """The example's one mirror (either kind); anything else in the file is a Secret it
    refers to."""
    docs = load_yaml_documents(path)
    (mirror,) = [d for d in docs if d["kind"] in MIRROR_KINDS]
    assert all(d["kind"] == "Secret" for d in docs if d is not mirror)
    return mirror


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_a_mirror(path: Path) -> None:
    for doc in load_yaml_documents(path):
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert "namespace" not in doc["metadata"]
    doc = mirror_of(path)
    assert doc["apiVersion"] == "entrepot.dev/v1alpha1"
    if doc["kind"] == "ModuleMirror":
        upstream = doc["spec"]["go"]["proxy"]
        assert re.fullmatch(r"https://proxy\.([a-z]+\.)?example\.com\b.*", upstream)
    else:
        upstream = doc["spec"]["npm"]["upstream"]
        assert re.fullmatch(r"https://([a-z]+\.)*example\.com/.*", upstream), upstream


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_valid_for_the_operator(path: Path) -> None:
    """The operator's own model accepts each example (the CRD is checked in a cluster)."""
    kinds = pytest.importorskip("entrepot_operator.kinds")
    mirror = mirror_of(path)
    kinds.BY_KIND[mirror["kind"]].parse(mirror["spec"])


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
        "secretName": "entrepot-git-creds",
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


# --- names: the longest release name helm allows -----------------------------------------------

LONG_RELEASE = "r" * 45 + "-entrepo"  # 53 characters, helm's maximum, without "entrepot"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def test_a_53_character_release_name_gives_valid_names(home: Path) -> None:
    """Issue 11: a release name of ~47 characters or more made `<fullname>-metrics` longer
    than a Service name may be (63), and the install failed."""
    assert len(LONG_RELEASE) == 53
    values = {
        **OPTIONS,
        "replicaCount": "2",
        "networkPolicy.enabled": "true",
        "policy.enabled": "true",
    }
    docs = render(home, values, api_versions=MONITORING_APIS, release=LONG_RELEASE)
    kinds = {d["kind"] for d in docs}
    assert {"Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"} <= kinds
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "Service":
            assert DNS_LABEL.match(name), name
            assert len(name) <= 63, name
            assert name.endswith("-metrics")
        elif doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            assert DNS_SUBDOMAIN.match(name), (doc["kind"], name)
            assert len(name) <= 253 if "Policy" in doc["kind"] else len(name) <= 63, name
        for key, value in doc["metadata"]["labels"].items():
            assert len(str(value)) <= 63, (doc["kind"], key, value)
    deployment = one(docs, "Deployment")
    assert len(deployment["metadata"]["name"]) <= 63
    service = one(docs, "Service")
    assert service["metadata"]["name"] == f"{LONG_RELEASE}-entrepot"[:55] + "-metrics"
    assert len(service["metadata"]["name"]) == 63


def test_suffixed_names_are_unchanged_for_short_releases(home: Path) -> None:
    docs = render(home, {"dashboards.enabled": "true"})
    assert one(docs, "Service")["metadata"]["name"] == "demo-entrepot-metrics"
    roles = {r["metadata"]["name"] for r in of_kind(docs, "Role")}
    assert "demo-entrepot-leader-election" in roles
    maps = {m["metadata"]["name"] for m in of_kind(docs, "ConfigMap")}
    assert "demo-entrepot-dashboard-overview" in maps


# --- optional monitoring objects ---------------------------------------------------------------


def test_monitoring_objects_need_their_crds(home: Path) -> None:
    """Issue 11: serviceMonitor.enabled without the Prometheus Operator's CRD failed the
    install. Now the objects are left out where the cluster does not serve the kinds."""
    wanted = {"metrics.serviceMonitor.enabled": "true", "prometheusRule.enabled": "true"}
    without = render(home, wanted)
    assert of_kind(without, "ServiceMonitor") == []
    assert of_kind(without, "PrometheusRule") == []
    with_crds = render(home, wanted, api_versions=MONITORING_APIS)
    assert len(of_kind(with_crds, "ServiceMonitor")) == 1
    assert len(of_kind(with_crds, "PrometheusRule")) == 1
    only_monitors = render(home, wanted, api_versions=MONITORING_APIS[:1])
    assert len(of_kind(only_monitors, "ServiceMonitor")) == 1
    assert of_kind(only_monitors, "PrometheusRule") == []
    # Not asked for: nothing, CRDs or not.
    assert of_kind(render(home, api_versions=MONITORING_APIS), "ServiceMonitor") == []


# --- availability and network ------------------------------------------------------------------


def test_one_replica_has_no_disruption_budget_and_no_anti_affinity(home: Path) -> None:
    docs = render(home)
    assert of_kind(docs, "PodDisruptionBudget") == []
    assert "affinity" not in one(docs, "Deployment")["spec"]["template"]["spec"]


def test_two_replicas_get_a_disruption_budget_and_a_soft_anti_affinity(home: Path) -> None:
    docs = render(home, {"replicaCount": "2"})
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    affinity = one(docs, "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity["podAntiAffinity"]
    (preferred,) = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == selector

    # The user's affinity wins; the budget can be switched off.
    own = render(
        home,
        {
            "replicaCount": "3",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].key": "pool",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].operator": "Exists",
            "podDisruptionBudget.enabled": "false",
        },
    )
    assert list(one(own, "Deployment")["spec"]["template"]["spec"]["affinity"]) == ["nodeAffinity"]
    assert of_kind(own, "PodDisruptionBudget") == []


def test_the_network_policy_is_off_by_default_and_opens_only_the_two_ports(home: Path) -> None:
    assert of_kind(render(home), "NetworkPolicy") == []
    docs = render(home, {"networkPolicy.enabled": "true"})
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    health, metrics = policy["spec"]["ingress"]
    assert health == {"ports": [{"port": "health", "protocol": "TCP"}]}
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}]}
    ports = {p["name"] for p in container(docs)["ports"]}
    assert ports == {"health", "metrics"}  # the policy names every port there is

    scoped = render(
        home,
        {
            "networkPolicy.enabled": "true",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team": "monitoring",
        },
    )
    _, metrics = one(scoped, "NetworkPolicy")["spec"]["ingress"]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]


# --- the values schema: typed resources and security contexts, the policy ---------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"resources.limitz.cpu": "1"}, "limitz"),
        ({"resources.requests.cpu": "lots"}, "cpu"),
        ({"securityContext.runAsUsr": "1"}, "runAsUsr"),
        ({"securityContext.capabilities.drop": "ALL"}, "drop"),
        ({"podSecurityContext.fsgroup": "1"}, "fsgroup"),
        ({"podSecurityContext.seccompProfile.type": "Sometimes"}, "type"),
        ({"policy.allowedImage[0]": "x"}, "allowedImage"),
        ({"policy.serviceTypes": "{Weird}"}, "serviceTypes"),
        ({"policy.serviceTypes": "null"}, "serviceTypes"),
        ({"policy.ingress.hosts": "{Not A Host}"}, "hosts"),
        ({"policy.bearerTokenHosts": "{https://proxy.example.com}"}, "bearerTokenHosts"),
        ({"policy.secretNamePattern": ""}, "secretNamePattern"),
        ({"policy.tolerationKeys": "{a b}"}, "tolerationKeys"),
        ({"networkPolicy.enable": "true"}, "enable"),
        ({"podDisruptionBudget.maxUnavailable": "0"}, "maxUnavailable"),
        ({"rbac.aggregated": "true"}, "aggregated"),
        ({"resyncSeconds": "-1"}, "resyncSeconds"),
        ({"maxConcurrentUpgrades": "two"}, "maxConcurrentUpgrades"),
    ],
)
def test_the_values_schema_refuses_typos_in_the_new_values(
    home: Path, values: dict[str, str], message: str
) -> None:
    done = run_helm(home, "template", "demo", str(CHART), *set_args(values))
    assert done.returncode != 0, values
    assert message in done.stderr


def test_the_values_schema_takes_what_kubernetes_takes(home: Path) -> None:
    docs = render(
        home,
        {
            "resources.requests.cpu": "0.5",
            "resources.requests.memory": "100M",
            "resources.limits.memory": "1Gi",
            "securityContext.seccompProfile.type": "Localhost",
            "securityContext.seccompProfile.localhostProfile": "operator.json",
            "podSecurityContext.supplementalGroups[0]": "1000",
            "podDisruptionBudget.maxUnavailable": "50%",
            "replicaCount": "2",
        },
    )
    assert container(docs)["resources"]["requests"] == {"cpu": "0.5", "memory": "100M"}
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == "50%"


# --- aggregated roles --------------------------------------------------------------------------


def test_aggregated_roles_let_view_read_and_edit_write_module_mirrors(home: Path) -> None:
    docs = render(home)
    roles = {r["metadata"]["name"]: r for r in of_kind(docs, "ClusterRole")}
    view = roles[f"{RELEASE_NAMESPACE}-demo-entrepot-view"]
    edit = roles[f"{RELEASE_NAMESPACE}-demo-entrepot-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    for label in ("aggregate-to-edit", "aggregate-to-admin"):
        assert edit["metadata"]["labels"][f"rbac.authorization.k8s.io/{label}"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]

    def verbs(role: Manifest, resource: str) -> set[str]:
        return {
            v for r in role["rules"] if resource in r["resources"] for v in r["verbs"]
        }  # fmt: skip

    for plural in ("modulemirrors", "npmmirrors"):
        assert verbs(view, plural) == {"get", "list", "watch"}
        assert verbs(view, f"{plural}/status") == {"get", "list", "watch"}
        assert verbs(edit, plural) >= {"create", "update", "patch", "delete", "get"}
        assert verbs(edit, f"{plural}/status") == {"get", "list", "watch"}  # status is ours
    for role in (view, edit):
        assert {g for r in role["rules"] for g in r["apiGroups"]} == {"entrepot.dev"}
    # Not the operator's: no binding names them.
    bound = {b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")}
    assert not bound & {view["metadata"]["name"], edit["metadata"]["name"]}
    off = render(home, {"rbac.aggregate": "false"})
    assert len(of_kind(off, "ClusterRole")) == 1


# --- the policy: ValidatingAdmissionPolicy and ENTREPOT_POLICY ---------------------------------


def admission(docs: list[Manifest], plural: str = "modulemirrors") -> tuple[Manifest, Manifest]:
    """The ValidatingAdmissionPolicy of one kind, and its binding."""
    (policy,) = [
        p
        for p in of_kind(docs, "ValidatingAdmissionPolicy")
        if p["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == [plural]
    ]
    (binding,) = [
        b
        for b in of_kind(docs, "ValidatingAdmissionPolicyBinding")
        if b["spec"]["policyName"] == policy["metadata"]["name"]
    ]
    return policy, binding


def variables(policy: Manifest) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}


@pytest.mark.parametrize("plural", ["modulemirrors", "npmmirrors"])
def test_the_admission_policy_guards_mirror_writes(home: Path, plural: str) -> None:
    docs = render(home)
    assert len(of_kind(docs, "ValidatingAdmissionPolicy")) == 2  # one per kind
    vap, binding = admission(docs, plural)
    assert vap["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert vap["metadata"]["name"] == f"{RELEASE_NAMESPACE}-demo-entrepot-{plural}"
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # every namespace, as the operator
    assert vap["spec"]["failurePolicy"] == "Fail"
    (rule,) = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["entrepot.dev"]
    assert rule["resources"] == [plural]  # not status: the operator writes that
    assert rule["operations"] == ["CREATE", "UPDATE"]
    # One validation whose message lists every problem (the API server reports only the
    # first failed validation, and a refusal should name every reason).
    (validation,) = vap["spec"]["validations"]
    assert validation["expression"] == "size(variables.problems) == 0"
    assert validation["messageExpression"] == 'variables.problems.join("; ")'
    messages = variables(vap)["problems"]
    for value in (
        "policy.allowedImages",
        "policy.serviceTypes",
        "policy.ingress.hosts",
        "policy.ingress.classNames",
        "policy.tolerationKeys",
        "policy.secretNamePattern",
        "policy.bearerTokenHosts",
    ):
        assert f"(chart value {value})" in messages, value
    # Each is type-checked against its kind's schema: it names only that kind's fields.
    cel = variables(vap)
    text = json.dumps(vap["spec"])
    if plural == "npmmirrors":
        assert "object.spec.npm.credentials.tokenSecret.secretName" in cel["secretNames"]
        assert "url(object.spec.npm.upstream).getHostname()" in cel["tokenHostNames"]
        assert "Secrets an NpmMirror names" in messages
        assert "object.spec.go" not in text
        assert "object.spec.credentials" not in text
    else:
        assert "object.spec.credentials.bearerTokens" in cel["tokenHostNames"]
        assert "Secrets a ModuleMirror names" in messages
        assert "object.spec.npm" not in text


def test_the_admission_policy_follows_the_watched_namespaces(home: Path) -> None:
    _, binding = admission(render(home, {"watchNamespaces": "{a,b}"}))
    (expression,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert expression == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["a", "b"],
    }


def test_policy_disabled_renders_no_admission_policy_and_no_env(home: Path) -> None:
    docs = render(home, {"policy.enabled": "false"})
    assert of_kind(docs, "ValidatingAdmissionPolicy") == []
    assert of_kind(docs, "ValidatingAdmissionPolicyBinding") == []
    assert "ENTREPOT_POLICY" not in env_of(docs)


POLICY_VALUES = {
    "image.digest": "sha256:" + "cd" * 32,
    "policy.allowedImages": "{registry.example.com/approved/}",
    "policy.serviceTypes": "{ClusterIP,NodePort}",
    "policy.ingress.hosts": "{*.mirrors.example.com,goproxy.example.com}",
    "policy.ingress.classNames": "{internal}",
    "policy.tolerationKeys": "{dedicated}",
    "policy.secretNamePattern": "^(entrepot|gomods)-",
    "policy.bearerTokenHosts": "{proxy.example.com}",
}


def test_the_operator_gets_the_same_policy_as_the_admission_policy(home: Path) -> None:
    """ENTREPOT_POLICY is what policy.Policy.from_env reads; the admission policy's lists
    are the same values."""
    policy_module = pytest.importorskip("entrepot_operator.policy")
    docs = render(home, POLICY_VALUES)
    text = env_of(docs)["ENTREPOT_POLICY"]["value"]
    policy = policy_module.Policy.from_env({"ENTREPOT_POLICY": text})
    assert policy == policy_module.Policy(
        # The mirror image's repository, without its digest, always comes first.
        allowed_images=("registry.example.com/entrepot/entrepot", "registry.example.com/approved/"),
        service_types=("ClusterIP", "NodePort"),
        ingress_hosts=("*.mirrors.example.com", "goproxy.example.com"),
        ingress_class_names=("internal",),
        toleration_keys=("dedicated",),
        secret_name_pattern="^(entrepot|gomods)-",
        bearer_token_hosts=("proxy.example.com",),
    )
    vap, _ = admission(docs)
    cel = variables(vap)
    # JSON lists and strings are CEL literals too.
    assert json.loads(cel["allowedImages"]) == list(policy.allowed_images)
    assert json.loads(cel["serviceTypes"]) == list(policy.service_types)
    assert json.loads(cel["ingressClassNames"]) == list(policy.ingress_class_names)
    assert json.loads(cel["tolerationKeys"]) == list(policy.toleration_keys)
    assert json.loads(cel["secretNamePattern"]) == policy.secret_name_pattern
    assert json.loads(cel["defaultImage"]) == env_of(docs)["ENTREPOT_OPERATOR_IMAGE"]["value"]

    # The host regexes the chart writes match what policy.host_allowed matches.
    hosts = [
        "a.mirrors.example.com",
        "a.b.mirrors.example.com",
        "*.mirrors.example.com",
        "mirrors.example.com",
        "goproxy.example.com",
        "goproxyxexample.com",
        "xgoproxy.example.com",
    ]
    for variable, patterns in (
        ("ingressHosts", policy.ingress_hosts),
        ("tokenHosts", policy.bearer_token_hosts),
    ):
        regexes = json.loads(cel[variable])
        assert len(regexes) == len(patterns)
        for host in hosts + list(patterns):
            chart = any(re.search(r, host) for r in regexes)
            assert chart == policy_module.host_allowed(host, patterns), (variable, host)


def test_the_default_policy_allows_only_the_mirror_image_repository(home: Path) -> None:
    policy_module = pytest.importorskip("entrepot_operator.policy")
    port = "registry.example.com:5000/team/mirror"
    digest = "sha256:" + "ab" * 32
    for values, repository in [
        ({}, "registry.example.com/entrepot/entrepot"),
        ({"mirrorImage": f"{port}:9"}, port),
        ({"mirrorImage": f"registry.example.com/m:1@{digest}"}, "registry.example.com/m"),
    ]:
        docs = render(home, values)
        text = env_of(docs)["ENTREPOT_POLICY"]["value"]
        policy = policy_module.Policy.from_env({"ENTREPOT_POLICY": text})
        assert policy.allowed_images == (repository,), values
        assert policy.service_types == ("ClusterIP",)
        assert policy.ingress_hosts == ()
        assert policy.toleration_keys == ()
        assert policy.secret_name_pattern == "^entrepot-"
        assert policy.bearer_token_hosts == ()
        assert json.loads(variables(admission(docs)[0])["allowedImages"]) == [repository]


# --- the CRD the operator checks at start ------------------------------------------------------


def test_the_chart_crds_pass_the_operators_start_check() -> None:
    runner = pytest.importorskip("entrepot_operator.runner")
    kinds = pytest.importorskip("entrepot_operator.kinds")
    crds = chart_crds()
    for kind in kinds.KINDS:
        assert runner.crd_problems(crds[f"{kind.plural}.entrepot.dev"], kind=kind) == []
    # Each kind is compared with its own CRD: the other's is missing its fields.
    npm = crds["npmmirrors.entrepot.dev"]
    (problem,) = runner.crd_problems(npm, kind=kinds.MODULE_MIRROR)
    assert "it lacks spec.go" in problem


def test_the_start_check_refuses_an_older_crd() -> None:
    """Issue 11: no CRD version check at operator start. A CRD that lacks a field this
    operator's model has (an operator upgraded before its CRD), a missing v1alpha1, or no CRD
    at all: the reasons, and the command that fixes it."""
    runner = pytest.importorskip("entrepot_operator.runner")
    crd = chart_crds()["modulemirrors.entrepot.dev"]
    older = deepcopy(crd)
    schema = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    del schema["properties"]["spec"]["properties"]["storage"]["properties"]["accessMode"]
    del schema["properties"]["status"]["properties"]["conditions"]["items"]["properties"]["reason"]
    (problem,) = runner.crd_problems(older)
    assert "modulemirrors.entrepot.dev in the cluster is older than this operator" in problem
    assert "spec.storage.accessMode, status.conditions[].reason" in problem
    assert "kubectl apply --server-side --force-conflicts -f helm/entrepot/crds/" in problem

    # Free-form where the operator now has a schema: nothing is pruned, so nothing lacks.
    free = deepcopy(crd)
    spec = free["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["tolerations"] = {
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }
    assert runner.crd_problems(free) == []

    other = deepcopy(crd)
    other["spec"]["versions"][0]["name"] = "v1beta1"
    (problem,) = runner.crd_problems(other)
    assert "does not serve v1alpha1 (it serves v1beta1)" in problem
    no_status = deepcopy(crd)
    no_status["spec"]["versions"][0]["subresources"] = {}
    assert "no status subresource" in runner.crd_problems(no_status)[0]
    (missing,) = runner.crd_problems(None)
    assert "modulemirrors.entrepot.dev is not installed" in missing


# --- docs --------------------------------------------------------------------------------------

NEW_VALUES = [
    "policy.enabled",
    "policy.allowedImages",
    "policy.serviceTypes",
    "policy.ingress.hosts",
    "policy.ingress.classNames",
    "policy.tolerationKeys",
    "policy.secretNamePattern",
    "policy.bearerTokenHosts",
    "networkPolicy.enabled",
    "networkPolicy.metricsFrom",
    "podDisruptionBudget.enabled",
    "podDisruptionBudget.maxUnavailable",
    "rbac.aggregate",
]


def test_docs_describe_every_new_value_and_no_finalizer() -> None:
    text = (REPO / "docs" / "helm.md").read_text()
    values = text.split("\n## Values", 1)[1].split("\n## ", 1)[0]
    for key in NEW_VALUES:
        assert f"| `{key}`" in values, key
    # The operator puts no finalizer on ModuleMirrors (issue 11: the docs said it did).
    assert "KopfFinalizerMarker" not in text
    assert "kopf.zalando.org" not in text
