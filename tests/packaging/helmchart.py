"""The chart under test, the real helm binary, and the operator's RBAC contract as a table.

``RULES`` is the one list of what the operator may do: the chart must grant exactly this
(tests/packaging/test_chart.py compares the rendered Roles with it, both ways), the API server
must allow exactly this (test_chart_in_cluster.py asks it with SubjectAccessReviews), and
docs/helm.md shows it to users (its RBAC table is compared with it too).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "entrepot"
KUBERNETES = "v1.36.3"
RELEASE = "demo"
RELEASE_NAMESPACE = "entrepot-system"
LEASE = "entrepot-operator"

Manifest = dict[str, Any]


def tool(name: str) -> Path:
    """A binary built by e2e/cluster/toolchain.py (``$ENTREPOT_CACHE`` moves the cache)."""
    base = os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")
    return Path(base) / f"k8s-{KUBERNETES}" / "bin" / name


def helm_env(home: Path) -> dict[str, str]:
    """helm with its cache, config and data in a throwaway folder, never the user's."""
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run_helm(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("helm")), *args],
        env={**helm_env(home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


# The Prometheus Operator's kinds, as a cluster with its CRDs serves them.
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)


def render(
    home: Path,
    values: dict[str, str] | None = None,
    *,
    api_versions: tuple[str, ...] = (),
    release: str = RELEASE,
) -> list[Manifest]:
    """``helm template`` of the chart, parsed: one dict per object, in output order.
    ``api_versions``: kinds the pretend cluster serves beyond the built-in ones."""
    done = run_helm(
        home,
        "template",
        release,
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        *set_args(values or {}),
        *[arg for api in api_versions for arg in ("--api-versions", api)],
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str) -> Manifest:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# --- RBAC --------------------------------------------------------------------------------------

# Where a rule is granted:
#   watched  each watched namespace (a Role), or the whole cluster when watching all
#   cluster  the whole cluster, in both modes (cluster-scoped objects)
#   listed   the whole cluster, only when watching a list of namespaces
#   release  the release namespace only
Where = Literal["watched", "cluster", "listed", "release"]
# Children every mirror has are applied (patch; create when absent) and observed, never
# deleted: garbage collection removes them with their mirror. Children only some specs want
# are also deleted when the spec stops wanting them.
KEPT_CHILD_VERBS = "get list watch create patch"
CHILD_VERBS = "get list watch create patch delete"


@dataclass(frozen=True)
class Rule:
    group: str
    resource: str
    verbs: str
    where: Where
    why: str
    name: str = ""


RULES = [
    *(
        rule
        for plural, kind in (("modulemirrors", "ModuleMirrors"), ("npmmirrors", "NpmMirrors"))
        for rule in (
            Rule("entrepot.dev", plural, "get list watch patch", "watched",
                 f"watch {kind}; patch them for kopf's annotations"),
            Rule("entrepot.dev", f"{plural}/status", "patch", "watched",
                 "write status: conditions, replicas, URL, observedGeneration"),
            Rule("entrepot.dev", f"{plural}/finalizers", "update", "watched",
                 "set ownerReferences with blockOwnerDeletion on children"
                 " (OwnerReferencesPermissionEnforcement)"),
        )
    ),
    Rule("", "configmaps", KEPT_CHILD_VERBS, "watched",
         "the mirror's config file: server-side apply, observe"),
    Rule("", "services", KEPT_CHILD_VERBS, "watched", "the Service builds point GOPROXY at"),
    Rule("apps", "deployments", KEPT_CHILD_VERBS, "watched", "the mirror pods"),
    Rule("", "persistentvolumeclaims", CHILD_VERBS, "watched",
         "the cache volume (deleted only if the spec wants none and this mirror owns it)"),
    Rule("policy", "poddisruptionbudgets", CHILD_VERBS, "watched",
         "a PodDisruptionBudget when replicas > 1"),
    Rule("networking.k8s.io", "ingresses", CHILD_VERBS, "watched", "spec.ingress"),
    Rule("monitoring.coreos.com", "servicemonitors", CHILD_VERBS, "watched",
         "a ServiceMonitor when the Prometheus Operator is installed"),
    Rule("", "pods", "get list watch", "watched",
         "why a mirror is not Ready: unschedulable, image pull, crash loop, readiness"),
    Rule("", "events", "get list watch create", "watched",
         "read the Events of mirror pods and PVCs (why not Ready); post Events on the mirrors"),
    Rule("apiextensions.k8s.io", "customresourcedefinitions", "get list watch", "cluster",
         "the mirrors' CRDs fit this operator (checked at start); is the ServiceMonitor"
         " CRD installed? kopf also watches CRDs to notice new resources"),
    Rule("", "namespaces", "list watch", "listed",
         "kopf's namespace observer, which runs only when watching a list of namespaces"),
    Rule("coordination.k8s.io", "leases", "create", "release",
         "create the leader-election Lease (create cannot be limited to a name)"),
    Rule("coordination.k8s.io", "leases", "get update", "release",
         "hold and renew the Lease (compare-and-swap PUT); only the holder reconciles",
         name=LEASE),
]  # fmt: skip


@dataclass(frozen=True, order=True)
class Grant:
    """One permission: ``scope`` is "cluster" or a namespace; ``name`` "" means any name."""

    scope: str
    group: str
    resource: str
    verb: str
    name: str = ""


def expected_grants(watch: list[str], release_namespace: str = RELEASE_NAMESPACE) -> set[Grant]:
    """What ``RULES`` grants for a given ``watchNamespaces``."""
    grants: set[Grant] = set()
    for rule in RULES:
        if rule.where == "watched":
            scopes = watch or ["cluster"]
        elif rule.where == "cluster":
            scopes = ["cluster"]
        elif rule.where == "listed":
            scopes = ["cluster"] if watch else []
        else:
            scopes = [release_namespace]
        for scope in scopes:
            for verb in rule.verbs.split():
                grants.add(Grant(scope, rule.group, rule.resource, verb, rule.name))
    return grants


def service_account(docs: list[Manifest]) -> tuple[str, str]:
    deployment = one(docs, "Deployment")
    return (
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        deployment["metadata"]["namespace"],
    )


def rendered_grants(docs: list[Manifest]) -> set[Grant]:
    """Every permission the rendered (Cluster)Roles give the operator's ServiceAccount,
    following the bindings whose subject it is."""
    name, namespace = service_account(docs)
    by_name = {
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace", "")): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    grants: set[Grant] = set()
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
        if subject not in binding["subjects"]:
            continue
        scope = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else "cluster"
        ref = binding["roleRef"]
        role_ns = "" if ref["kind"] == "ClusterRole" else binding["metadata"]["namespace"]
        role = by_name[(ref["kind"], ref["name"], role_ns)]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for resource_name in rule.get("resourceNames") or [""]:
                            grants.add(Grant(scope, group, resource, verb, resource_name))
    return grants


def load_yaml_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
