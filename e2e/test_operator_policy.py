"""Issue 11, point 3: creating a ModuleMirror (or, issue 12, an NpmMirror) must not grant pod
creation with any image, Secret reads, LoadBalancers, Ingresses for any host, tolerations of
everything, or credentials sent to any host.

The chart is installed with helm and a few policy values widened; a ServiceAccount bound only
to the chart's aggregated `-edit` ClusterRole for mirrors (no pods, no Secrets) tries
what the issue's tenant did, through kubectl impersonation: each attempt is refused at
admission by the chart's ValidatingAdmissionPolicy with a message that names the chart value
to change, and a spec within the policy is admitted. Then the operator, run with the chart's
ServiceAccount token and the chart's ENTREPOT_POLICY, makes the admitted mirror Ready, and
refuses (PolicyViolation) a mirror that got in while the admission policy was unbound.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.kube import get, helm_install, service_account_kubeconfig, wait  # noqa: E402
from support.servers import stop_process  # noqa: E402

RELEASE = "entrepot"
RELEASE_NS = "entrepot-system"
SA = "entrepot"
POLICY_NAME = f"{RELEASE_NS}-{RELEASE}-modulemirrors"
NPM_POLICY_NAME = f"{RELEASE_NS}-{RELEASE}-npmmirrors"
EDIT_ROLE = f"{RELEASE_NS}-{RELEASE}-edit"
VIEW_ROLE = f"{RELEASE_NS}-{RELEASE}-view"
# Widened from the defaults, so that "outside the list" is tested against a real list.
VALUES = {
    "replicaCount": "1",
    "policy.allowedImages": "{registry.example.com/approved/}",
    "policy.ingress.hosts": "{*.mirrors.example.com}",
    "policy.tolerationKeys": "{dedicated}",
    "policy.bearerTokenHosts": "{proxy.example.com}",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chart(
    kubeconfig: str, kube: Any, bins: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The chart with VALUES; afterwards its defaults again, as the other modules expect."""
    home = tmp_path_factory.mktemp("helm")
    done = helm_install(kubeconfig, bins, home, VALUES)
    assert done.returncode == 0, done.stderr
    deployment = get(kube, "deployment", RELEASE, "-n", RELEASE_NS)
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    try:
        yield {"env": env, "notes": done.stdout, "home": home}
    finally:
        restored = helm_install(kubeconfig, bins, home, {"replicaCount": "1"})
        assert restored.returncode == 0, restored.stderr


def mirror(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "entrepot.dev/v1alpha1",
        "kind": "ModuleMirror",
        "metadata": {"name": name},
        "spec": {"go": {"proxy": "https://proxy.example.com,direct"}, **spec},
    }
    return json.dumps(body)


def npm_mirror(name: str, **spec: Any) -> str:
    npm = {"upstream": "https://registry.example.com/", **spec.pop("npm", {})}
    body = {
        "apiVersion": "entrepot.dev/v1alpha1",
        "kind": "NpmMirror",
        "metadata": {"name": name},
        "spec": {"npm": npm, **spec},
    }
    return json.dumps(body)


def condition(
    kube: Any, ns: str, name: str, kind: str = "Ready", resource: str = "modulemirror"
) -> dict[str, Any]:
    status = get(kube, resource, name, "-n", ns).get("status", {})
    found = [c for c in status.get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


@pytest.fixture
def tenant(kube: Any, chart: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A namespace and a ServiceAccount in it bound only to the chart's aggregated edit role
    for ModuleMirrors: (namespace, the --as user)."""
    ns = f"pol-{os.urandom(3).hex()}"
    kube("create", "namespace", ns)
    kube("create", "serviceaccount", "tenant", "-n", ns)
    kube(
        "create",
        "rolebinding",
        "tenant-mirrors",
        f"--clusterrole={EDIT_ROLE}",
        f"--serviceaccount={ns}:tenant",
        "-n",
        ns,
    )
    yield ns, f"system:serviceaccount:{ns}:tenant"
    kube("delete", "namespace", ns, "--wait=false")


def can_i(kube: Any, user: str, ns: str, verb: str, resource: str) -> bool:
    """``resource`` may end in /<subresource>."""
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    done = kube("auth", "can-i", verb, resource, *extra, "-n", ns, f"--as={user}", check=False)
    return done.stdout.strip() == "yes"


def as_tenant(kube: Any, user: str, ns: str, body: str) -> subprocess.CompletedProcess[str]:
    return kube("apply", "-n", ns, f"--as={user}", "-f", "-", input=body, check=False)


def refused(kube: Any, user: str, ns: str, body: str, policy: str = POLICY_NAME) -> str:
    """Apply as the tenant; the admission policy's message (it may take a moment to load)."""

    def denied() -> str:
        done = as_tenant(kube, user, ns, body)
        if done.returncode == 0:
            kube("delete", "-n", ns, "-f", "-", input=body, check=False)
            raise AssertionError(f"admitted: {done.stdout}")
        return done.stderr

    message: str = wait(denied, 30, "refused at admission")
    assert f"ValidatingAdmissionPolicy '{policy}'" in message, message
    return message


def test_the_tenant_may_create_mirrors_and_nothing_else(kube: Any, tenant: tuple[str, str]) -> None:
    ns, user = tenant
    wait(lambda: can_i(kube, user, ns, "create", "modulemirrors.entrepot.dev"), 30, "RBAC")
    for verb, resource in [
        ("update", "modulemirrors.entrepot.dev"),
        ("delete", "modulemirrors.entrepot.dev"),
        ("get", "modulemirrors.entrepot.dev"),
        ("create", "npmmirrors.entrepot.dev"),
        ("delete", "npmmirrors.entrepot.dev"),
    ]:
        assert can_i(kube, user, ns, verb, resource), (verb, resource)
    for verb, resource in [
        ("create", "pods"),
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "deployments.apps"),
        ("create", "services"),
        ("create", "ingresses.networking.k8s.io"),
        ("patch", "modulemirrors.entrepot.dev/status"),
        ("patch", "npmmirrors.entrepot.dev/status"),
    ]:
        assert not can_i(kube, user, ns, verb, resource), (verb, resource)

    # The same rules reach the built-in roles through aggregation.
    def aggregated(role: str, verb: str) -> bool:
        rules = get(kube, "clusterrole", role).get("rules") or []
        return all(
            any(plural in r.get("resources", []) and verb in r.get("verbs", []) for r in rules)
            for plural in ("modulemirrors", "npmmirrors")
        )

    wait(lambda: aggregated("edit", "create"), 30, "edit aggregates ModuleMirrors")
    wait(lambda: aggregated("admin", "delete"), 30, "admin aggregates ModuleMirrors")
    wait(lambda: aggregated("view", "list"), 30, "view aggregates ModuleMirrors")
    assert not aggregated("view", "create")


@pytest.mark.parametrize(
    ("spec", "messages"),
    [
        (
            {"image": "evil.example.com/any/image:1"},
            [
                "spec.image evil.example.com/any/image:1 is not allowed",
                "registry.example.com/entrepot/entrepot, registry.example.com/approved/"
                " (chart value policy.allowedImages)",
            ],
        ),
        (
            {"credentials": {"netrc": {"secretName": "db-password", "key": "password"}}},
            [
                "Secrets a ModuleMirror names must match ^entrepot- (chart value"
                " policy.secretNamePattern); not allowed: db-password"
            ],
        ),
        (
            {"service": {"type": "LoadBalancer"}},
            [
                "spec.service.type LoadBalancer is not allowed: allowed are ClusterIP"
                " (chart value policy.serviceTypes)"
            ],
        ),
        (
            {"ingress": {"host": "www.example.com"}},
            [
                "spec.ingress.host www.example.com is not allowed: allowed are"
                " *.mirrors.example.com (chart value policy.ingress.hosts)"
            ],
        ),
        (
            {"tolerations": [{"operator": "Exists"}]},
            [
                "spec.tolerations: a toleration with no key (it tolerates every taint:"
                " operator Exists) is not allowed: allowed keys are dedicated"
                " (chart value policy.tolerationKeys)"
            ],
        ),
        (
            {
                "credentials": {
                    "bearerTokens": [
                        {"host": "attacker.example.org", "secretName": "entrepot-t", "key": "t"}
                    ]
                }
            },
            [
                "spec.credentials.bearerTokens[].host attacker.example.org is not allowed:"
                " bearer tokens may go to proxy.example.com (chart value"
                " policy.bearerTokenHosts)"
            ],
        ),
        (
            {"ingress": {"host": "go.mirrors.example.com", "tlsSecretName": "other-app-tls"}},
            ["not allowed: other-app-tls"],
        ),
    ],
    ids=["image", "secret", "load-balancer", "ingress-host", "toleration", "token-host", "tls"],
)
def test_each_escalation_is_refused_at_admission(
    kube: Any, tenant: tuple[str, str], spec: dict[str, Any], messages: list[str]
) -> None:
    ns, user = tenant
    message = refused(kube, user, ns, mirror("greedy", **spec))
    for expected in messages:
        assert expected in message, message
    assert kube("get", "modulemirror", "greedy", "-n", ns, check=False).returncode != 0


@pytest.mark.parametrize(
    ("spec", "messages"),
    [
        (
            {"npm": {"credentials": {"tokenSecret": {"secretName": "db-password", "key": "p"}}}},
            [
                "Secrets an NpmMirror names must match ^entrepot- (chart value"
                " policy.secretNamePattern); not allowed: db-password",
                # and the token would go to the upstream's host, which is not listed
                "spec.npm.upstream host registry.example.com is not allowed: bearer tokens may"
                " go to proxy.example.com (chart value policy.bearerTokenHosts)",
            ],
        ),
        (
            {
                "npm": {
                    "upstream": "https://Attacker.example.org/npm/",
                    "credentials": {"npmrcSecret": {"secretName": "entrepot-npmrc", "key": "rc"}},
                }
            },
            ["spec.npm.upstream host attacker.example.org is not allowed"],
        ),
        (
            {"image": "evil.example.com/any/image:1", "service": {"type": "LoadBalancer"}},
            ["spec.image evil.example.com/any/image:1", "spec.service.type LoadBalancer"],
        ),
        (
            # The administrator's password: any Secret of the namespace would become the
            # password of the registry's administrator, whom the tenant then logs in as.
            {
                "npm": {
                    "registry": {
                        "adminPasswordSecret": {"secretName": "cluster-admin", "key": "token"}
                    }
                }
            },
            [
                "Secrets an NpmMirror names must match ^entrepot- (chart value"
                " policy.secretNamePattern); not allowed: cluster-admin"
            ],
        ),
    ],
    ids=["secret-and-token-host", "npmrc-host", "image-and-service", "admin-password"],
)
def test_each_npm_escalation_is_refused_at_admission(
    kube: Any, tenant: tuple[str, str], spec: dict[str, Any], messages: list[str]
) -> None:
    ns, user = tenant
    message = refused(kube, user, ns, npm_mirror("greedy", **spec), NPM_POLICY_NAME)
    for expected in messages:
        assert expected in message, message
    assert kube("get", "npmmirror", "greedy", "-n", ns, check=False).returncode != 0
    # Without credentials, any upstream: nothing of the namespace goes there.
    done = as_tenant(
        kube, user, ns, npm_mirror("plain", npm={"upstream": "https://a.example.org/"})
    )
    assert done.returncode == 0, done.stderr


NPM_ALLOWED = {
    "npm": {
        "upstream": "https://proxy.example.com/npm/",
        "credentials": {"tokenSecret": {"secretName": "entrepot-npm", "key": "token"}},
        "registry": {"adminPasswordSecret": {"secretName": "entrepot-npm-admin", "key": "p"}},
    },
    "ingress": {"host": "npm.mirrors.example.com"},
    "storage": {"emptyDir": {}},
}


ISSUE_SPEC = {
    "image": "evil.example.com/any/image:1",
    "credentials": {"netrc": {"secretName": "db-password", "key": "password"}},
    "tolerations": [{"operator": "Exists"}],
    "service": {"type": "LoadBalancer"},
    "ingress": {"host": "www.example.com"},
}
ALLOWED_SPEC = {
    "image": "registry.example.com/approved/mirror:1",
    "credentials": {
        "netrc": {"secretName": "entrepot-netrc", "key": "netrc"},
        "bearerTokens": [
            {"host": "proxy.example.com", "secretName": "entrepot-tokens", "key": "proxy"}
        ],
    },
    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    "service": {"type": "ClusterIP"},
    "ingress": {"host": "go.mirrors.example.com"},
    "storage": {"emptyDir": {}},
}


def test_the_issues_spec_is_refused_with_every_reason_and_an_allowed_one_is_admitted(
    kube: Any, tenant: tuple[str, str]
) -> None:
    ns, user = tenant
    message = refused(kube, user, ns, mirror("issue", **ISSUE_SPEC))
    for value in ("allowedImages", "secretNamePattern", "serviceTypes", "ingress.hosts"):
        assert f"(chart value policy.{value})" in message, value
    assert "tolerationKeys" in message

    done = as_tenant(kube, user, ns, mirror("fits", **ALLOWED_SPEC))
    assert done.returncode == 0, done.stderr
    assert get(kube, "modulemirror", "fits", "-n", ns)["spec"]["image"] == ALLOWED_SPEC["image"]
    # An update that asks for more is refused too; one that changes only labels is not.
    worse = json.loads(mirror("fits", **{**ALLOWED_SPEC, "service": {"type": "NodePort"}}))
    message = refused(kube, user, ns, json.dumps(worse))
    assert "spec.service.type NodePort is not allowed" in message
    labelled = kube("label", "modulemirror", "fits", "-n", ns, "team=a", f"--as={user}")
    assert labelled.returncode == 0


def test_the_operator_runs_with_the_charts_policy(
    kube: Any,
    kubeconfig: str,
    chart: dict[str, Any],
    tenant: tuple[str, str],
    tmp_path: Path,
) -> None:
    """The operator, with the chart's ServiceAccount and the chart's ENTREPOT_POLICY: an
    admitted mirror becomes Ready; a mirror that got in while the admission policy was not
    bound (as one made before the chart had it) gets Ready=False, reason PolicyViolation."""
    ns, user = tenant
    assert json.loads(chart["env"]["ENTREPOT_POLICY"])["ingress"]["hosts"] == [
        "*.mirrors.example.com"
    ]
    operator_kubeconfig = service_account_kubeconfig(
        kube, kubeconfig, account=SA, namespace=RELEASE_NS, folder=tmp_path
    )
    log = tmp_path / "operator.log"
    proc = start_operator(operator_kubeconfig, log, chart["env"])
    try:
        wait(lambda: "fits this operator; policy: Policy(" in log.read_text(), 60, "started")
        as_tenant(kube, user, ns, mirror("fits", **ALLOWED_SPEC))
        wait(lambda: condition(kube, ns, "fits").get("status") == "True", 60, "fits Ready")
        done = as_tenant(kube, user, ns, npm_mirror("npm-fits", **NPM_ALLOWED))
        assert done.returncode == 0, done.stderr
        wait(
            lambda: condition(kube, ns, "npm-fits", resource="npmmirror").get("status") == "True",
            60,
            "the NpmMirror Ready",
        )

        binding = get(kube, "validatingadmissionpolicybinding", POLICY_NAME)
        kube("delete", "validatingadmissionpolicybinding", POLICY_NAME)
        try:
            wide = mirror("legacy", service={"type": "LoadBalancer"}, storage={"emptyDir": {}})
            wait(lambda: as_tenant(kube, user, ns, wide).returncode == 0, 30, "unbound")
        finally:
            for key in ("resourceVersion", "uid", "creationTimestamp", "generation"):
                binding["metadata"].pop(key, None)
            binding["metadata"].pop("managedFields", None)
            binding.pop("status", None)
            kube("create", "-f", "-", input=json.dumps(binding))

        def violation() -> dict[str, Any]:
            ready = condition(kube, ns, "legacy")
            return ready if ready.get("reason") == "PolicyViolation" else {}

        ready = wait(violation, 60, "legacy refused by the operator")
        assert ready["status"] == "False"
        assert "spec.service.type LoadBalancer is not allowed" in ready["message"]
        assert "policy.serviceTypes" in ready["message"]
        assert kube("get", "service", "legacy", "-n", ns, check=False).returncode != 0
        # Metadata-only changes of such a mirror still pass admission (kopf annotates it).
        assert kube("annotate", "modulemirror", "legacy", "-n", ns, "note=old").returncode == 0
        assert proc.poll() is None, log.read_text()
    finally:
        stop_process(proc)


def start_operator(
    kubeconfig: str, log: Path, chart_env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """`entrepot-operator run` with the chart's environment (image, policy, log level), but
    no POD_NAMESPACE: no leader election, so no wait for a Lease an earlier module's operator
    left behind (e2e/test_operator.py covers the election)."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("POD_NAMESPACE", "POD_NAME")},
        **{k: v for k, v in chart_env.items() if k.startswith("ENTREPOT_")},
        "KUBECONFIG": kubeconfig,
        "ENTREPOT_OPERATOR_METRICS": "off",
        "ENTREPOT_OPERATOR_HEALTH": f"127.0.0.1:{free_port()}",
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "entrepot-operator"), "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
