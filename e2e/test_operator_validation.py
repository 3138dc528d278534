"""Admission on the real API server (issue 11, point 6): a spec the operator could not carry
out is refused when it is written, with a message that says what is wrong, instead of being
admitted and then stuck. The CRDs are the chart's (helm/entrepot/crds/); no operator runs here.
The rules on what both kinds share (scheduling, resources, storage, names) are checked on
both, ModuleMirror and NpmMirror.

Each refusal is also checked against the operator's own model: the API server (CEL) and
pydantic give the same message for the same spec.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from entrepot_operator.api import (
    REPLICAS_NEED_A_REGISTRY_DATABASE,
    USERS_NEED_NAMES,
    ModuleMirrorSpec,
    NpmMirrorSpec,
    check_mirror_name,
)
from entrepot_operator.kinds import BY_KIND

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "helm" / "entrepot" / "crds"
Kube = Callable[..., subprocess.CompletedProcess[str]]
KINDS = ["ModuleMirror", "NpmMirror"]


@pytest.fixture(scope="module")
def crd(kube: Kube) -> None:
    """The chart's CRDs, as helm installs them (the same files), established."""
    kube("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kube(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modulemirrors.entrepot.dev",
        "crd/npmmirrors.entrepot.dev",
    )


@pytest.fixture
def ns(kube: Kube, crd: None) -> Iterator[str]:
    name = f"mmv-{os.urandom(3).hex()}"
    kube("create", "namespace", name)
    yield name
    kube("delete", "namespace", name, "--wait=false")


def mirror(name: str, kind: str = "ModuleMirror", **spec: Any) -> dict[str, Any]:
    protocol = (
        {"go": {"proxy": "https://proxy.example.com,direct"}}
        if kind == "ModuleMirror"
        else {"npm": {"upstream": "https://registry.example.com/"}}
    )
    return {
        "apiVersion": "entrepot.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {**protocol, **spec},
    }


def apply(kube: Kube, ns: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kube("apply", "-n", ns, "-f", "-", input=json.dumps(body), check=False)


def refused(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode != 0, f"admitted: {done.stdout}"
    assert message in done.stderr, done.stderr


HOST = "must be a DNS host name such as mirror.example.com, or *.example.com for a wildcard"
SECRET = "must be a Secret name: lower case letters, digits, '-' and '.'"
QUANTITY = "must be a quantity such as 500m, 2, 512Mi or 1Gi"
SIZE = "must be a positive size such as 10Gi"
NAME = "a mirror's name is also its Service's name and a label value: at most 63"

# (name, spec, the API server's message, the model's message when it differs)
BAD: list[tuple[str, dict[str, Any], str, str | None]] = [
    (
        "bad",
        {"resources": {"limitz": {"cpu": "1"}}},
        'unknown field "spec.resources.limitz"',
        "Extra inputs are not permitted",
    ),
    ("bad", {"resources": {"limits": {"cpu": "lots"}}}, QUANTITY, None),
    ("bad", {"resources": {"requests": {"memory": -1}}}, QUANTITY, None),
    (
        "bad",
        {"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}},
        "resources: a request must not exceed the limit of the same resource",
        None,
    ),
    (
        "bad",
        {"tolerations": [{"operator": "Sometimes"}]},
        'spec.tolerations[0].operator: Unsupported value: "Sometimes"',
        "Input should be 'Exists', 'Equal' or ''",
    ),
    (
        "bad",
        {"tolerations": [{"effect": "NoSchedule"}]},
        "a toleration without a key must have operator: Exists",
        None,
    ),
    (
        "bad",
        {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 60}]},
        "tolerationSeconds needs effect: NoExecute",
        None,
    ),
    (
        "bad",
        {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]}}},
        "topologyKey: Required value",
        "topologyKey\n  Field required",
    ),
    (
        "bad",
        {
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes"}
            ]
        },
        'whenUnsatisfiable: Unsupported value: "Sometimes"',
        "Input should be 'DoNotSchedule' or 'ScheduleAnyway'",
    ),
    ("bad", {"ingress": {"host": "Not A Host!"}}, HOST, None),
    ("bad", {"ingress": {"host": "192.0.2.1"}}, HOST, None),
    ("bad", {"ingress": {"host": "a.example.com", "tlsSecretName": "TLS!"}}, SECRET, None),
    ("bad", {"imagePullSecrets": ["Bad Name!"]}, SECRET, None),
    ("bad", {"credentials": {"netrc": {"secretName": "Netrc", "key": "netrc"}}}, SECRET, None),
    ("bad", {"storage": {"size": "0"}}, SIZE, None),
    ("bad", {"storage": {"size": "lots"}}, SIZE, None),
    (
        "bad",
        {"storage": {"storageClassName": "Fast SSD"}},
        "must be a StorageClass name",
        None,
    ),
    (
        "bad",
        {"storage": {"deletionPolicy": "Keep"}},
        'spec.storage.deletionPolicy: Unsupported value: "Keep"',
        "Input should be 'Retain' or 'Delete'",
    ),
    ("my.mirror", {}, NAME, None),
    ("m" * 64, {}, NAME, None),
    ("2048-mirror", {}, NAME, None),
]


def model_check(name: str, spec: dict[str, Any], kind: str = "ModuleMirror") -> None:
    """What the operator checks when it reads a mirror."""
    check_mirror_name(name)
    BY_KIND[kind].parse(spec)


# Cases of one kind only; the others hold for both.
OWN = {
    ("ModuleMirror", "credentials"),
    ("NpmMirror", "npm"),
}
NPM_TOKEN = {"tokenSecret": {"secretName": "Token", "key": "token"}}
BAD.append(
    ("bad", {"npm": {"upstream": "https://r.example.com/", "credentials": NPM_TOKEN}}, SECRET, None)
)


def npm_registry(**registry: Any) -> dict[str, Any]:
    return {"upstream": "https://r.example.com/", "registry": registry}


NPM_USER = "must be an npm user name: lower-case letters, digits and . _ ~ - (not first: .)"
# The private registry (issue 13): its users, tokens and packages live in the stats
# database, so replicas > 1 need one even with the statistics off.
BAD += [
    (
        "bad",
        {"npm": npm_registry(), "replicas": 2, "storage": {"emptyDir": {}}},
        REPLICAS_NEED_A_REGISTRY_DATABASE,
        None,
    ),
    (
        "bad",
        {
            "npm": npm_registry(),
            "replicas": 2,
            "storage": {"emptyDir": {}},
            "stats": {"enabled": False},
        },
        REPLICAS_NEED_A_REGISTRY_DATABASE,
        None,
    ),
    (
        "bad",
        {"npm": npm_registry(publish=[{"packages": ["@corp/*"], "allow": "users"}])},
        USERS_NEED_NAMES,
        None,
    ),
    (
        "bad",
        {"npm": npm_registry(publish=[{"packages": ["@Corp/*"]}])},
        "every entry must be a package name pattern",
        "is not a package name pattern",
    ),
    ("bad", {"npm": npm_registry(adminUser=".admin")}, NPM_USER, None),
    (
        "bad",
        {"npm": npm_registry(publish=[{"packages": ["*"], "allow": "users", "users": ["A"]}])},
        NPM_USER,
        None,
    ),
    (
        "bad",
        {"npm": npm_registry(trustedProxies=["proxy.example.com"])},
        "every entry must be an IP address or a CIDR range",
        "is not an IP address or CIDR range",
    ),
    (
        "bad",
        {"npm": npm_registry(adminPasswordSecret={"secretName": "Admin", "key": "password"})},
        SECRET,
        None,
    ),
]
CASES = [
    pytest.param(kind, case, id=f"{kind}-{i}-{next(iter(case[1]), 'name')}")
    for kind in KINDS
    for i, case in enumerate(BAD)
    if next(iter(case[1]), "") not in ("credentials", "npm") or (kind, next(iter(case[1]))) in OWN
]


@pytest.mark.parametrize(("kind", "case"), CASES)
def test_specs_that_would_be_stuck_are_refused_at_admission(
    kube: Kube, ns: str, kind: str, case: tuple[str, dict[str, Any], str, str | None]
) -> None:
    name, spec, message, model_message = case
    body = mirror(name, kind, **spec)
    refused(apply(kube, ns, body), message)
    # The operator's model refuses the same spec, with the same words where it can.
    with pytest.raises((ValidationError, ValueError)) as model:
        model_check(name, body["spec"], kind)
    assert (model_message or message) in str(model.value)


TYPED = {
    "resources": {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": 2, "memory": "1Gi"},
    },
    "tolerations": [
        {"operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "tolerationSeconds": 30},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "ok"}},
                        "matchLabelKeys": ["pod-template-hash"],
                    },
                }
            ]
        },
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "minDomains": 2,
            "nodeAffinityPolicy": "Honor",
        }
    ],
    "ingress": {"host": "*.example.com", "tlsSecretName": "wildcard-tls"},
    "imagePullSecrets": ["regcred"],
    "storage": {"size": "20Gi", "deletionPolicy": "Delete"},
}


@pytest.fixture
def without_chart_policy(kube: Kube) -> Iterator[None]:
    """The CRD's schema alone: the chart's admission policy (e2e/test_operator_policy.py),
    when a test before installed the chart, refuses tolerations and Ingresses by default.
    Its bindings are set aside for the test and put back."""
    listed = kube(
        "get",
        "validatingadmissionpolicybindings",
        "-l",
        "app.kubernetes.io/name=entrepot",
        "-o",
        "json",
    )
    bindings = json.loads(listed.stdout)["items"]
    for binding in bindings:
        kube("delete", "validatingadmissionpolicybinding", binding["metadata"]["name"])
    try:
        yield
    finally:
        for binding in bindings:
            for key in ("resourceVersion", "uid", "creationTimestamp", "generation"):
                binding["metadata"].pop(key, None)
            binding["metadata"].pop("managedFields", None)
            binding.pop("status", None)
            kube("create", "-f", "-", input=json.dumps(binding))


@pytest.mark.usefixtures("without_chart_policy")
def test_valid_typed_fields_are_admitted_and_kept_as_written(kube: Kube, ns: str) -> None:
    """Nothing the pod spec takes is lost to the typed schema (no pruning, no refusal)."""
    name = "m" * 63  # the longest name allowed
    deadline = time.monotonic() + 15
    done = apply(kube, ns, mirror(name, **TYPED))
    while "ValidatingAdmissionPolicy" in done.stderr and time.monotonic() < deadline:
        time.sleep(0.5)  # the API server sees the binding gone within a second or so
        done = apply(kube, ns, mirror(name, **TYPED))
    assert done.returncode == 0, done.stderr
    stored = json.loads(kube("get", "modulemirror", name, "-n", ns, "-o", "json").stdout)["spec"]
    for key in ("resources", "tolerations", "affinity", "topologySpreadConstraints"):
        assert stored[key] == TYPED[key], key
    assert stored["storage"]["deletionPolicy"] == "Delete"
    assert stored["storage"]["accessMode"] == "ReadWriteOnce"  # defaults still filled in
    parsed = ModuleMirrorSpec.model_validate(stored)
    assert parsed.resources == TYPED["resources"]


REGISTRY = {
    "adminUser": "root",
    "adminPasswordSecret": {"secretName": "entrepot-npm-admin", "key": "password"},
    "publish": [
        {"packages": ["@corp/*", "tool"], "allow": "users", "users": ["root", "ci_bot~1"]},
        {"packages": ["@sandbox/*"]},
        {"packages": ["*"], "allow": "nobody"},
    ],
    # What the server's check (Python's ipaddress, strict=False) takes, CEL takes too.
    "trustedProxies": ["10.244.0.0/16", "10.1.2.3/8", "192.0.2.7", "::1", "fd00::/8"],
    "loginAttempts": 5,
    "loginWindow": "10m",
}


def test_a_private_registry_is_admitted_kept_as_written_and_defaulted(kube: Kube, ns: str) -> None:
    done = apply(kube, ns, mirror("registry", "NpmMirror", npm=npm_registry(**REGISTRY)))
    assert done.returncode == 0, done.stderr
    stored = json.loads(kube("get", "npmmirror", "registry", "-n", ns, "-o", "json").stdout)
    registry = stored["spec"]["npm"]["registry"]
    assert registry == {
        **REGISTRY,
        "enabled": True,
        "selfRegistration": False,
        "publish": [
            {**REGISTRY["publish"][0]},
            {"packages": ["@sandbox/*"], "allow": "authenticated"},
            {"packages": ["*"], "allow": "nobody"},
        ],
    }
    NpmMirrorSpec.model_validate(stored["spec"])  # and the operator reads it the same
    # Left out, the API server fills in the cluster's defaults: a registry nobody signs up to.
    assert apply(kube, ns, mirror("plain-npm", "NpmMirror")).returncode == 0
    plain = json.loads(kube("get", "npmmirror", "plain-npm", "-n", ns, "-o", "json").stdout)
    assert plain["spec"]["npm"]["registry"] == {
        "enabled": True,
        "selfRegistration": False,
        "adminUser": "admin",
        "loginAttempts": 10,
        "loginWindow": "5m",
    }
    # With a database, or with both the registry and the statistics off, replicas may grow.
    for name, spec in [
        ("shared", {"stats": {"database": "postgresql://entrepot@db.example.com/entrepot"}}),
        ("off", {"stats": {"enabled": False}, "npm": npm_registry(enabled=False)}),
    ]:
        body = mirror(name, "NpmMirror", replicas=2, storage={"emptyDir": {}}, **spec)
        done = apply(kube, ns, body)
        assert done.returncode == 0, done.stderr
        NpmMirrorSpec.model_validate(body["spec"])


def test_the_deletion_policy_defaults_to_retain(kube: Kube, ns: str) -> None:
    assert apply(kube, ns, mirror("plain")).returncode == 0
    stored = json.loads(kube("get", "modulemirror", "plain", "-n", ns, "-o", "json").stdout)
    assert stored["spec"]["storage"]["deletionPolicy"] == "Retain"


@pytest.mark.parametrize("kind", KINDS)
def test_immutable_storage_fields_cannot_change_on_an_existing_mirror(
    kube: Kube, ns: str, kind: str
) -> None:
    """The trap of the issue: told to set ReadWriteMany for replicas: 3, a user changed an
    existing mirror, and the PVC update failed forever while the mirror said Ready."""

    def mirror(name: str, **spec: Any) -> dict[str, Any]:
        return globals()["mirror"](name, kind, **spec)

    done = apply(kube, ns, mirror("cache", storage={"size": "10Gi"}))
    assert done.returncode == 0, done.stderr
    refused(
        apply(
            kube,
            ns,
            mirror(
                "cache",
                replicas=3,
                storage={"size": "10Gi", "accessMode": "ReadWriteMany"},
                stats={"enabled": False},
            ),
        ),
        "storage.accessMode cannot change on an existing mirror (the PVC's access mode is"
        " immutable): create a new mirror with the new mode and delete this one",
    )
    refused(
        apply(kube, ns, mirror("cache", storage={"storageClassName": "standard"})),
        "storage.storageClassName cannot change on an existing mirror (the PVC's class is"
        " immutable): create a new mirror",
    )
    refused(
        apply(kube, ns, mirror("cache", storage={"emptyDir": {}})),
        "spec.storage.emptyDir: Invalid value: storage.emptyDir cannot change on an existing"
        " mirror",
    )
    refused(
        apply(kube, ns, mirror("cache", storage={"size": "5Gi"})),
        "spec.storage.size: Invalid value: storage.size cannot decrease (a PVC cannot shrink)",
    )
    # Growing is allowed (if the class allows expansion), and so is the deletion policy.
    grown = apply(kube, ns, mirror("cache", storage={"size": "20Gi", "deletionPolicy": "Delete"}))
    assert grown.returncode == 0, grown.stderr
    refused(
        apply(kube, ns, mirror("cache", storage={"size": "15Gi"})),
        "storage.size cannot decrease",
    )
    stored = json.loads(kube("get", kind.lower(), "cache", "-n", ns, "-o", "json").stdout)
    assert stored["spec"]["storage"]["size"] == "20Gi"
    assert stored["spec"]["storage"]["accessMode"] == "ReadWriteOnce"


def test_an_empty_dir_mirror_keeps_its_kind_but_nothing_else_is_fixed(kube: Kube, ns: str) -> None:
    """Without a PVC, the access mode and size mean nothing: they may change."""
    done = apply(kube, ns, mirror("scratch", storage={"emptyDir": {"sizeLimit": "1Gi"}}))
    assert done.returncode == 0, done.stderr
    changed = apply(
        kube,
        ns,
        mirror(
            "scratch",
            replicas=2,
            storage={"emptyDir": {}, "accessMode": "ReadWriteMany", "size": "1Gi"},
            stats={"enabled": False},
        ),
    )
    assert changed.returncode == 0, changed.stderr
    refused(
        apply(kube, ns, mirror("scratch", storage={"size": "1Gi"})),
        "storage.emptyDir cannot change on an existing mirror",
    )


def test_kubectl_explain_describes_both_kinds(kube: Kube, crd: None) -> None:
    """The CRDs' descriptions (the server's own, for the fields it shares) reach `kubectl
    explain`, which reads the OpenAPI the API server publishes a moment after the CRD."""

    def explained(field: str) -> str:
        done = kube("explain", field, check=False)
        return done.stdout if done.returncode == 0 else ""

    text = wait_for(lambda: explained("npmmirror.spec.npm.policy.minReleaseAge"), 30)
    assert "Versions published less than this long ago" in " ".join(text.split())
    text = wait_for(lambda: explained("npmmirror.status.url"), 30)
    assert "npm_config_registry" in text
    text = wait_for(lambda: explained("modulemirror.status.url"), 30)
    assert "GOPROXY" in text


def wait_for(probe: Callable[[], str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
