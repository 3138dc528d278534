"""The operator's own check of the chart's policy (policy.py): what a ModuleMirror may ask for.

Issue 11, point 3: a ServiceAccount allowed only to create ModuleMirrors got pods running an
image of its choice with `db-password` mounted, tolerating every taint, behind a LoadBalancer
and an Ingress for any host. The API server refuses that at admission (the chart's
ValidatingAdmissionPolicy, e2e/test_operator_policy.py); these are the same rules in the
operator, for mirrors the admission policy never saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from entrepot_operator.api import ModuleMirrorSpec
from entrepot_operator.policy import (
    ENV,
    Policy,
    PolicyError,
    host_allowed,
    image_allowed,
    secret_references,
    violations,
)

DEFAULT_IMAGE = "registry.example.com/entrepot/entrepot:0.1.0"
# What the chart passes with its default values (tests/packaging/test_chart.py checks that).
CHART_DEFAULT = {
    "allowedImages": ["registry.example.com/entrepot/entrepot"],
    "serviceTypes": ["ClusterIP"],
    "ingress": {"hosts": [], "classNames": []},
    "tolerationKeys": [],
    "secretNamePattern": "^entrepot-",
    "bearerTokenHosts": [],
}


def chart_default() -> Policy:
    return Policy.from_env({ENV: json.dumps(CHART_DEFAULT)})


def spec(**fields: Any) -> ModuleMirrorSpec:
    return ModuleMirrorSpec.model_validate({"go": {"proxy": "https://proxy.example.com"}, **fields})


def check(policy: Policy, **fields: Any) -> list[str]:
    return violations(spec(**fields), policy, default_image=DEFAULT_IMAGE)


# The issue's spec, as the ServiceAccount created it.
ESCALATION = {
    "image": "evil.example.com/any/image:1",
    "credentials": {"netrc": {"secretName": "db-password", "key": "password"}},
    "tolerations": [{"operator": "Exists"}],
    "service": {"type": "LoadBalancer"},
    "ingress": {"host": "www.example.com"},
}


def test_no_policy_allows_everything() -> None:
    """Policy() is the operator run without the chart's policy: as before."""
    assert Policy.from_env({}) == Policy()
    assert Policy.from_env({ENV: "  "}) == Policy()
    assert check(Policy(), **ESCALATION) == []


def test_the_chart_default_refuses_the_issues_escalation_with_one_message_each() -> None:
    found = check(chart_default(), **ESCALATION)
    assert len(found) == 5, found
    image, service, ingress, toleration, secrets = found
    assert "spec.image evil.example.com/any/image:1 is not allowed" in image
    assert "registry.example.com/entrepot/entrepot" in image
    assert "policy.allowedImages" in image
    assert service == (
        "spec.service.type LoadBalancer is not allowed: allowed are ClusterIP"
        " (chart value policy.serviceTypes)"
    )
    assert "no Ingress hosts are allowed (chart value policy.ingress.hosts)" in ingress
    assert "no key (it tolerates every taint" in toleration
    assert "policy.tolerationKeys" in toleration
    assert "db-password (spec.credentials.netrc.secretName)" in secrets
    assert "must match ^entrepot- (chart value policy.secretNamePattern)" in secrets


def test_a_plain_mirror_passes_the_chart_default() -> None:
    assert check(chart_default()) == []
    assert check(chart_default(), image=DEFAULT_IMAGE) == []


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example.com/entrepot/entrepot:0.2.0", True),  # a tag of the repository
        ("registry.example.com/entrepot/entrepot@sha256:" + "a" * 64, True),  # a digest
        ("registry.example.com/entrepot/entrepot", True),  # itself
        ("registry.example.com/entrepot/entrepot-evil:1", False),  # a longer name
        ("registry.example.com/entrepot/other:1", False),
        ("registry.example.com/approved/tools/mirror:2", True),  # under a '/' prefix
        ("registry.example.com/approvedx/mirror:2", False),
        ("evil.example.com/registry.example.com/entrepot/entrepot:1", False),
    ],
)
def test_image_entries_allow_their_tags_digests_and_what_is_under_a_slash(
    image: str, allowed: bool
) -> None:
    entries = ["registry.example.com/entrepot/entrepot", "registry.example.com/approved/"]
    assert image_allowed(image, entries) is allowed
    policy = Policy(allowed_images=tuple(entries))
    assert (check(policy, image=image) == []) is allowed


def test_the_default_image_is_allowed_even_outside_the_list() -> None:
    """spec.image unset means the operator's image; naming it is the same thing."""
    policy = Policy(allowed_images=())
    assert check(policy) == []
    assert check(policy, image=DEFAULT_IMAGE) == []
    assert check(policy, image="registry.example.com/entrepot/entrepot:0.2.0") != []


def test_service_types() -> None:
    policy = Policy(service_types=("ClusterIP", "NodePort"))
    assert check(policy, service={"type": "NodePort"}) == []
    (message,) = check(policy, service={"type": "LoadBalancer"})
    assert "allowed are ClusterIP, NodePort" in message


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("goproxy.mirrors.example.com", True),
        ("go-proxy-2.mirrors.example.com", True),
        ("a.b.mirrors.example.com", False),  # one label only, as an Ingress wildcard
        ("*.mirrors.example.com", False),  # the wildcard itself would take every name
        ("mirrors.example.com", False),
        ("evilmirrors.example.com", False),
        ("goproxy.example.com", True),  # an exact entry
        ("GOPROXY.EXAMPLE.COM", True),  # host names are compared in lower case
        ("goproxy.example.com.evil.example.org", False),
    ],
)
def test_host_patterns(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["*.mirrors.example.com", "goproxy.example.com"]) is allowed


def test_ingress_hosts_and_classes() -> None:
    policy = Policy(ingress_hosts=("*.mirrors.example.com",), ingress_class_names=("internal",))
    assert check(policy, ingress={"host": "go.mirrors.example.com", "className": "internal"}) == []
    outside, no_class = check(policy, ingress={"host": "www.example.com"})
    assert "spec.ingress.host www.example.com is not allowed" in outside
    assert "*.mirrors.example.com (chart value policy.ingress.hosts)" in outside
    assert "spec.ingress.className (unset) is not allowed: allowed are internal" in no_class
    (public,) = check(policy, ingress={"host": "a.mirrors.example.com", "className": "public"})
    assert "className public" in public
    # No class list: any class, or none.
    anywhere = Policy(ingress_hosts=("goproxy.example.com",))
    assert check(anywhere, ingress={"host": "goproxy.example.com", "className": "any"}) == []
    assert check(anywhere, ingress={"host": "goproxy.example.com"}) == []


def test_tolerations() -> None:
    keyed = {"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"}
    exists = {"key": "dedicated", "operator": "Exists"}
    everything = {"operator": "Exists"}
    control_plane = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
    policy = Policy(toleration_keys=("dedicated",))
    assert check(policy, tolerations=[keyed, exists]) == []
    found = check(policy, tolerations=[keyed, everything, control_plane])
    assert len(found) == 2
    assert "no key (it tolerates every taint: operator Exists)" in found[0]
    assert "key node-role.kubernetes.io/control-plane is not allowed" in found[1]
    assert all("allowed keys are dedicated (chart value policy.tolerationKeys)" in f for f in found)
    (none,) = check(Policy(toleration_keys=()), tolerations=[keyed])
    assert "allowed keys are (none)" in none
    assert check(Policy(toleration_keys=("*",)), tolerations=[everything, control_plane]) == []


FULL_OF_SECRETS = {
    "imagePullSecrets": ["regcred"],
    "go": {
        "proxy": "https://proxy.example.com",
        "sumdb": {
            "databases": [
                {"name": "sum.example.com", "keySecret": {"secretName": "sumdb", "key": "k"}}
            ]
        },
    },
    "credentials": {
        "netrc": {"secretName": "netrc", "key": "netrc"},
        "gitConfig": {"secretName": "git", "key": "gitconfig"},
        "gitCredentials": {"secretName": "entrepot-git", "key": "git-credentials"},
        "bearerTokens": [{"host": "proxy.example.com", "secretName": "tokens", "key": "t"}],
    },
    "stats": {
        "database": "postgresql://entrepot@db.example.com/entrepot",
        "passwordSecret": {"secretName": "db-password", "key": "password"},
    },
    "ingress": {"host": "goproxy.example.com", "tlsSecretName": "other-apps-tls"},
}


def test_every_secret_a_spec_names_is_checked() -> None:
    mirror = ModuleMirrorSpec.model_validate(FULL_OF_SECRETS)
    assert secret_references(mirror) == [
        ("spec.credentials.netrc.secretName", "netrc"),
        ("spec.credentials.gitConfig.secretName", "git"),
        ("spec.credentials.gitCredentials.secretName", "entrepot-git"),
        ("spec.credentials.bearerTokens[0].secretName", "tokens"),
        ("spec.go.sumdb.databases[0].keySecret.secretName", "sumdb"),
        ("spec.stats.passwordSecret.secretName", "db-password"),
        ("spec.ingress.tlsSecretName", "other-apps-tls"),
        ("spec.imagePullSecrets[0]", "regcred"),
    ]
    (message,) = violations(
        mirror, Policy(secret_name_pattern="^entrepot-"), default_image=DEFAULT_IMAGE
    )
    for field, name in secret_references(mirror):
        assert (f"{name} ({field})" in message) is (name != "entrepot-git"), field
    # Every name the render mounts is among them: nothing escapes the check.
    from entrepot_operator.render.deployment import secret_volume

    volume = secret_volume(mirror)
    assert volume is not None
    mounted = {s["secret"]["name"] for s in volume["projected"]["sources"]}
    assert mounted <= {name for _, name in secret_references(mirror)}


def test_bearer_tokens_go_only_to_listed_hosts() -> None:
    tokens = {
        "bearerTokens": [
            {"host": "proxy.example.com", "secretName": "entrepot-t", "key": "a"},
            {"host": "attacker.example.org", "secretName": "entrepot-t", "key": "a"},
        ]
    }
    policy = Policy(bearer_token_hosts=("proxy.example.com",))
    (message,) = check(policy, credentials=tokens)
    assert message.startswith("spec.credentials.bearerTokens[1].host attacker.example.org is")
    assert "bearer tokens may go to proxy.example.com (chart value policy.bearerTokenHosts)" in (
        message
    )
    refused = check(Policy(bearer_token_hosts=()), credentials=tokens)
    assert len(refused) == 2
    assert all("may go to (none)" in m for m in refused)


def test_from_env_reads_the_charts_json() -> None:
    policy = Policy.from_env(
        {
            ENV: json.dumps(
                {
                    **CHART_DEFAULT,
                    "ingress": {"hosts": ["*.example.com"], "classNames": ["internal"]},
                    "tolerationKeys": ["dedicated"],
                    "bearerTokenHosts": ["proxy.example.com"],
                }
            )
        }
    )
    assert policy == Policy(
        allowed_images=("registry.example.com/entrepot/entrepot",),
        service_types=("ClusterIP",),
        ingress_hosts=("*.example.com",),
        ingress_class_names=("internal",),
        toleration_keys=("dedicated",),
        secret_name_pattern="^entrepot-",
        bearer_token_hosts=("proxy.example.com",),
    )
    # A key left out is not limited.
    assert Policy.from_env({ENV: '{"serviceTypes": ["ClusterIP"]}'}) == Policy(
        service_types=("ClusterIP",)
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not JSON"),
        ("[]", "(top)"),
        ('{"serviceType": ["ClusterIP"]}', "serviceType"),
        ('{"serviceTypes": ["Weird"]}', "serviceTypes.0"),
        ('{"serviceTypes": []}', "serviceTypes"),
        ('{"ingress": {"hosts": ["Not A Host!"]}}', "ingress.hosts"),
        ('{"ingress": {"host": []}}', "ingress.host"),
        ('{"bearerTokenHosts": ["https://proxy.example.com"]}', "bearerTokenHosts"),
        ('{"secretNamePattern": "^(entrepot-"}', "secretNamePattern"),
        ('{"allowedImages": ["registry.example.com/x:"]}', "allowedImages"),
        ('{"tolerationKeys": "dedicated"}', "tolerationKeys"),
    ],
)
def test_from_env_refuses_what_is_not_a_policy(text: str, says: str) -> None:
    with pytest.raises(PolicyError) as refused:
        Policy.from_env({ENV: text})
    assert says in str(refused.value)
    assert str(refused.value).startswith(ENV)


def test_the_operator_refuses_to_start_with_a_bad_policy() -> None:
    """Exit 2 with the reason, before it looks for a cluster; no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "entrepot_operator.cli", "run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "KUBECONFIG": "/nonexistent/kubeconfig",
            "HOME": "/nonexistent",
            ENV: '{"serviceTypes": ["ClusterIP", "Weird"]}',
        },
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "ENTREPOT_POLICY: serviceTypes.1" in done.stderr
    assert "policy` values" in done.stderr
    assert "kubeconfig" not in done.stderr.lower()
