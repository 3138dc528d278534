"""NpmMirror: the model, its CRD, its rendering and its reconcile, through the pipeline it
shares with ModuleMirror (kinds.py). What both kinds do alike is tested once, with
ModuleMirrors, in the other test files; here is what an NpmMirror adds or changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from test_reconcile import FakeApplier, conditions

from entrepot.config import READ_SECRETS, Settings, load_settings
from entrepot_operator.api import (
    REPLICAS_NEED_A_REGISTRY_DATABASE,
    REPLICAS_NEED_A_STATS_DATABASE,
    USERS_NEED_NAMES,
    WILDCARD_NEEDS_PUBLIC_URL,
    NpmMirrorSpec,
)
from entrepot_operator.crd import crd
from entrepot_operator.handlers import MIRROR_PODS, _owner_of
from entrepot_operator.kinds import BY_COMPONENT, MODULE_MIRROR, NPM_MIRROR
from entrepot_operator.metrics import OperatorMetrics
from entrepot_operator.policy import Policy, secret_references, violations
from entrepot_operator.reconcile import Outcome, claim, reconcile
from entrepot_operator.render import Owner

UID = "uid-npm"
OWNER = NPM_MIRROR.owner({"metadata": {"name": "npm", "namespace": "builds", "uid": UID}})
UPSTREAM = "https://registry.example.com/"
IMAGE = "registry.example.com/entrepot:1"


def spec(**extra: Any) -> NpmMirrorSpec:
    npm = {"upstream": UPSTREAM, **extra.pop("npm", {})}
    return NpmMirrorSpec.model_validate({"npm": npm, **extra})


def children(s: NpmMirrorSpec, *, monitor: bool = False) -> dict[str, Any]:
    return NPM_MIRROR.render(s, OWNER, image=IMAGE, service_monitor_available=monitor)


def config_of(s: NpmMirrorSpec) -> dict[str, Any]:
    text = children(s)["ConfigMap"]["data"]["config.yaml"]
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def settings_of(s: NpmMirrorSpec) -> Settings:
    return Settings.model_validate(config_of(s), context={READ_SECRETS: False})


# --- the model --------------------------------------------------------------------------------


def test_an_npm_mirror_needs_only_an_upstream_and_gets_the_servers_defaults() -> None:
    s = spec()
    assert s.npm.upstream == UPSTREAM
    assert s.npm.public_url is None
    assert s.npm.cache.packument_ttl == 300.0
    assert s.npm.policy.min_release_age == 0.0
    assert s.storage.deletion_policy == "Retain"
    with pytest.raises(ValidationError, match="npm"):
        NpmMirrorSpec.model_validate({})
    with pytest.raises(ValidationError, match="upstream"):
        NpmMirrorSpec.model_validate({"npm": {}})


@pytest.mark.parametrize(
    ("npm", "says"),
    [
        ({"upstream": "ftp://registry.example.com/"}, "is not a registry URL"),
        ({"upstream": UPSTREAM, "publicUrl": "npm.example.com"}, "is not a registry URL"),
        ({"upstream": UPSTREAM, "policy": {"private": ["@Corp/*"]}}, "package name pattern"),
        ({"upstream": UPSTREAM, "policy": {"blocked": ["a b"]}}, "package name pattern"),
        ({"upstream": UPSTREAM, "policy": {"minReleaseAge": "3 days"}}, "invalid duration"),
        ({"upstream": UPSTREAM, "maxTarballBytes": 10}, "maxTarballBytes"),
        ({"upstream": UPSTREAM, "tokenSecret": {"secretName": "t", "key": "k"}}, "tokenSecret"),
    ],
)
def test_invalid_npm_settings_are_refused_by_the_model(npm: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        NpmMirrorSpec.model_validate({"npm": npm})


def test_the_upstream_gets_its_trailing_slash() -> None:
    assert spec(npm={"upstream": "https://registry.example.com/npm"}).npm.upstream == (
        "https://registry.example.com/npm/"
    )


def test_a_wildcard_ingress_needs_a_public_url() -> None:
    with pytest.raises(ValidationError, match="wildcard host"):
        spec(ingress={"host": "*.example.com"})
    s = spec(ingress={"host": "*.example.com"}, npm={"publicUrl": "https://npm.example.com/"})
    assert settings_of(s).npm.public_url == "https://npm.example.com/"


# --- the CRD ----------------------------------------------------------------------------------


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd(NPM_MIRROR)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_crd_names_printer_columns_and_explain_texts() -> None:
    body = crd(NPM_MIRROR)
    assert body["metadata"]["name"] == "npmmirrors.entrepot.dev"
    names = body["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "NpmMirror",
        "npmmirrors",
        ["npmm"],
    )
    assert names["categories"] == ["entrepot"]
    version = body["spec"]["versions"][0]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Replicas", "Reason", "URL", "Age", "Message", "Upstream"]
    assert columns["Upstream"]["jsonPath"] == ".spec.npm.upstream"
    assert version["subresources"] == {"status": {}}
    schema = _schema()
    assert "npm registry mirror" in schema["description"]
    assert (
        "npm_config_registry" in schema["properties"]["status"]["properties"]["url"]["description"]
    )
    npm = schema["properties"]["spec"]["properties"]["npm"]
    assert npm["required"] == ["upstream"]
    for field, node in npm["properties"].items():
        assert node.get("description"), field  # kubectl explain says something for each
    # The server's own definitions: one source for the default and the words.
    assert npm["properties"]["cache"]["properties"]["packumentTtl"]["default"] == "5m"
    assert npm["properties"]["tarballDeadline"]["default"] == "10m"
    # No Go in an NpmMirror, no npm in a ModuleMirror.
    assert "go" not in schema["properties"]["spec"]["properties"]
    go_spec = crd(MODULE_MIRROR)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "npm" not in go_spec["properties"]["spec"]["properties"]


def test_the_crd_checks_what_the_model_checks() -> None:
    spec_schema = _schema()["properties"]["spec"]
    rules = {r["message"]: r for r in spec_schema["x-kubernetes-validations"]}
    assert "has(self.npm.publicUrl)" in rules[WILDCARD_NEEDS_PUBLIC_URL]["rule"]
    assert any("replicas > 1 needs a shared cache" in m for m in rules)
    npm = spec_schema["properties"]["npm"]["properties"]
    assert npm["upstream"]["pattern"].startswith("^https?://")
    policy = npm["policy"]["properties"]
    for field in ("private", "blocked", "minReleaseAgeExempt"):
        (rule,) = policy[field]["x-kubernetes-validations"]
        assert rule["rule"].startswith("self.all(v, v.matches(")
        assert policy[field]["maxItems"] == 1024
        assert policy[field]["items"]["maxLength"] == 256


# --- rendering --------------------------------------------------------------------------------


def test_the_config_serves_npm_alone_at_the_root() -> None:
    config = config_of(spec(npm={"policy": {"minReleaseAge": "3d", "private": ["@corp/*"]}}))
    assert config["go"]["enabled"] is False
    assert config["go"]["proxy"] == "off"  # no Go upstream either
    npm = config["npm"]
    assert (npm["enabled"], npm["prefix"], npm["upstream"]) == (True, "/", UPSTREAM)
    assert npm["policy"]["min_release_age"] == "3d"
    assert npm["policy"]["private"] == ["@corp/*"]
    assert npm["public_url"] == "http://npm.builds.svc:8080/"
    assert config["listen"] == "0.0.0.0:8080"
    assert config["data_dir"] == "/var/cache/entrepot"


def test_the_rendered_file_is_one_entrepot_serve_loads(tmp_path: Path) -> None:
    """The server's own loader, with its checks across sections (npm at "/" only alone)."""
    s = spec(npm={"credentials": {"tokenSecret": {"secretName": "entrepot-t", "key": "t"}}})
    path = tmp_path / "config.yaml"
    path.write_text(children(s)["ConfigMap"]["data"]["config.yaml"])
    token = tmp_path / "token"
    token.write_text("secret\n")
    text = path.read_text().replace("/etc/entrepot/secrets/npm-token", str(token))
    path.write_text(text)
    loaded = load_settings(config_file=path, environ={"PATH": ""})
    assert not loaded.go.enabled
    assert loaded.npm.prefix == "/"
    assert loaded.npm.upstream == UPSTREAM


def test_a_module_mirror_serves_no_npm() -> None:
    from entrepot_operator.api import ModuleMirrorSpec

    go = ModuleMirrorSpec.model_validate({"go": {"proxy": "https://proxy.example.com"}})
    owner = Owner(name="gomods", namespace="builds", uid="u")
    text = MODULE_MIRROR.render(go, owner, image=IMAGE, service_monitor_available=False)[
        "ConfigMap"
    ]["data"]["config.yaml"]
    config = yaml.safe_load(text)
    assert config["npm"]["enabled"] is False
    assert config["go"]["enabled"] is True


@pytest.mark.parametrize(
    ("extra", "url"),
    [
        ({}, "http://npm.builds.svc:8080/"),
        ({"service": {"port": 4873}}, "http://npm.builds.svc:4873/"),
        ({"ingress": {"host": "npm.example.com"}}, "http://npm.example.com/"),
        (
            {"ingress": {"host": "npm.example.com", "tlsSecretName": "npm-tls"}},
            "https://npm.example.com/",
        ),
        (
            {"npm": {"publicUrl": "https://npm.example.com/registry"}},
            "https://npm.example.com/registry/",
        ),
    ],
)
def test_the_public_url_defaults_to_the_ingress_or_the_service(
    extra: dict[str, Any], url: str
) -> None:
    s = spec(**extra)
    assert settings_of(s).npm.public_url == url
    assert NPM_MIRROR.url(s, OWNER) == url  # status.url: what clients put in their registry


def test_children_are_owned_by_the_npm_mirror_and_labelled_as_its_component() -> None:
    for kind, child in children(spec(storage={"deletionPolicy": "Delete"})).items():
        if child is None:
            continue
        meta = child["metadata"]
        (ref,) = meta["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("NpmMirror", "npm", UID), kind
        assert meta["labels"]["app.kubernetes.io/component"] == "npm-mirror", kind
    deployment = children(spec())["Deployment"]
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "npm-mirror"
    )
    pvc = children(spec())["PersistentVolumeClaim"]
    assert pvc["metadata"]["annotations"] == {
        "entrepot.dev/mirror": "builds/npm",
        "entrepot.dev/mirror-kind": "NpmMirror",
    }
    assert "ownerReferences" not in pvc["metadata"]  # Retain, the default


def test_credentials_are_mounted_from_their_secrets_and_named_in_the_config() -> None:
    s = spec(
        npm={
            "credentials": {
                "tokenSecret": {"secretName": "entrepot-token", "key": "token"},
                "npmrcSecret": {"secretName": "entrepot-npmrc", "key": ".npmrc"},
            }
        },
        stats={
            "database": "postgresql://entrepot@db.example.com/entrepot",
            "passwordSecret": {"secretName": "entrepot-db", "key": "password"},
        },
    )
    pod = children(s)["Deployment"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "credentials"]
    assert [src["secret"] for src in volume["projected"]["sources"]] == [
        {"name": "entrepot-token", "items": [{"key": "token", "path": "npm-token"}]},
        {"name": "entrepot-npmrc", "items": [{"key": ".npmrc", "path": "npmrc"}]},
        {"name": "entrepot-db", "items": [{"key": "password", "path": "stats-password"}]},
    ]
    creds = settings_of(s).npm.credentials
    assert str(creds.token_file) == "/etc/entrepot/secrets/npm-token"
    assert str(creds.npmrc_file) == "/etc/entrepot/secrets/npmrc"
    assert "entrepot-token" not in children(s)["ConfigMap"]["data"]["config.yaml"]


def test_a_spec_change_rolls_the_pods() -> None:
    def hash_of(s: NpmMirrorSpec) -> str:
        template = children(s)["Deployment"]["spec"]["template"]
        return str(template["metadata"]["annotations"]["entrepot.dev/config-hash"])

    assert hash_of(spec()) == hash_of(spec())
    assert hash_of(spec()) != hash_of(spec(npm={"policy": {"blocked": ["left-pad"]}}))


# --- reconcile --------------------------------------------------------------------------------


def npm_body(name: str = "npm", uid: str = UID, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "builds", "uid": uid, "generation": 1},
        "spec": {"npm": {"upstream": UPSTREAM}, **extra},
    }


def run(applier: FakeApplier, body: dict[str, Any], *, policy: Policy | None = None) -> Outcome:
    return reconcile(
        body,
        kind=NPM_MIRROR,
        applier=applier,  # type: ignore[arg-type]
        image=IMAGE,
        metrics=OperatorMetrics(),
        policy=policy,
    )


def test_an_npm_mirror_reconciles_to_ready_with_its_registry_url() -> None:
    applier = FakeApplier()
    out = run(applier, npm_body())
    assert out.failures == []
    assert out.error is None
    assert applier.applied == ["ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"]
    assert conditions(out)["Ready"]["status"] == "True"
    assert out.status["url"] == "http://npm.builds.svc:8080/"


def test_an_invalid_npm_spec_is_reported_not_applied() -> None:
    applier = FakeApplier()
    body = npm_body()
    body["spec"]["npm"]["upstream"] = "registry.example.com"
    out = run(applier, body)
    assert applier.applied == []
    assert out.error is not None
    assert out.error.startswith("npm.upstream: ")
    assert conditions(out)["Ready"]["reason"] == "InvalidSpec"


def test_a_module_mirror_of_the_same_name_keeps_its_children() -> None:
    """Both kinds name their children after the mirror: the second one says NameConflict,
    names the other mirror, and changes nothing of it (kinds.py)."""
    applier = FakeApplier()
    go_body = {
        "metadata": {"name": "npm", "namespace": "builds", "uid": "uid-go", "generation": 1},
        "spec": {"go": {"proxy": "https://proxy.example.com"}},
    }
    # The ModuleMirror reconciled first, by the same operator: the Applier knows the names
    # (the e2e test found it applying over them, refused for two controller references).
    first = reconcile(
        go_body,
        kind=MODULE_MIRROR,
        applier=applier,  # type: ignore[arg-type]
        image=IMAGE,
        metrics=OperatorMetrics(),
    )
    assert conditions(first)["Ready"]["status"] == "True"
    applier.applied.clear()
    before = {k: dict(v) for k, v in applier.objects.items()}
    out = run(applier, npm_body())
    assert applier.applied == []
    assert applier.objects == before
    ready = conditions(out)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
    assert "belongs to ModuleMirror npm" in ready["message"]
    assert "need different names" in ready["message"]
    # The retained cache of a deleted ModuleMirror of that name is not adopted either.
    pvc = applier.objects["PersistentVolumeClaim", "npm-cache"]
    assert claim(pvc, OWNER) == "conflict"
    legacy = {"kind": "PersistentVolumeClaim", "metadata": {"annotations": {}}}
    legacy["metadata"]["annotations"] = {"entrepot.dev/mirror": "builds/npm"}  # before NpmMirror
    assert claim(legacy, OWNER) == "conflict"
    assert claim(legacy, Owner(name="npm", namespace="builds", uid="x")) == "adopt"


def test_an_npm_mirror_adopts_its_own_retained_cache() -> None:
    applier = FakeApplier()
    applier.objects["PersistentVolumeClaim", "npm-cache"] = {
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "npm-cache",
            "annotations": {
                "entrepot.dev/mirror": "builds/npm",
                "entrepot.dev/mirror-kind": "NpmMirror",
            },
        },
    }
    out = run(applier, npm_body(uid="uid-again"))
    assert out.failures == []
    assert "PersistentVolumeClaim" in applier.applied


# --- policy -----------------------------------------------------------------------------------


def test_the_policy_checks_the_npm_secrets_and_where_credentials_go() -> None:
    s = spec(
        npm={
            "upstream": "https://npm.attacker.example.org/",
            "credentials": {"tokenSecret": {"secretName": "cloud-admin", "key": "token"}},
        }
    )
    assert secret_references(s) == [("spec.npm.credentials.tokenSecret.secretName", "cloud-admin")]
    policy = Policy(secret_name_pattern="^entrepot-", bearer_token_hosts=("npm.example.com",))
    found = violations(s, policy, default_image=IMAGE, kind="NpmMirror")
    assert found == [
        "Secrets an NpmMirror names must match ^entrepot- (chart value policy.secretNamePattern);"
        " not allowed: cloud-admin (spec.npm.credentials.tokenSecret.secretName)",
        "spec.npm.upstream host npm.attacker.example.org is not allowed: bearer tokens may go"
        " to npm.example.com (chart value policy.bearerTokenHosts)",
    ]
    # Without credentials, the upstream is any registry: nothing of the namespace goes there.
    assert violations(spec(), Policy(bearer_token_hosts=()), default_image=IMAGE) == []
    out = run(
        FakeApplier(),
        npm_body(
            npm={
                "upstream": UPSTREAM,
                **s.npm.model_dump(by_alias=True, include={"credentials"}, exclude_none=True),
            }
        ),
        policy=policy,
    )
    assert {f.kind for f in out.failures} == {"NpmMirror"}
    assert conditions(out)["Ready"]["reason"] == "PolicyViolation"


# --- handlers: events find their mirror's kind ------------------------------------------------


def test_child_and_pod_events_find_the_kind_of_their_mirror() -> None:
    child = children(spec())["Service"]
    assert _owner_of(child) == (NPM_MIRROR, "npm")
    assert _owner_of({"metadata": {"ownerReferences": [{"kind": "Other", "name": "x"}]}}) is None
    check = MIRROR_PODS["app.kubernetes.io/component"]
    assert check("npm-mirror")
    assert check("module-mirror")
    assert not check("operator")
    assert BY_COMPONENT["npm-mirror"] is NPM_MIRROR


# --- the private registry ---------------------------------------------------------------------

ADMIN = {"secretName": "entrepot-npm-admin", "key": "password"}
RULES = [
    {"packages": ["@corp/*"], "allow": "users", "users": ["admin", "alice"]},
    {"packages": ["@sandbox/*"]},
    {"packages": ["*"], "allow": "nobody"},
]


def test_every_npm_mirror_is_a_private_registry_nobody_can_sign_up_to() -> None:
    """The defaults: the registry on, self-registration off (the server's own default is on,
    for `make run`), the administrator named admin, any user may publish any name."""
    settings = settings_of(spec())
    registry = settings.npm.registry
    assert registry.enabled
    assert not registry.self_registration
    assert registry.admin_user == "admin"
    assert registry.admin_password_file is None  # no administrator without a Secret
    assert [r.model_dump() for r in registry.publish] == [
        {"packages": ["*"], "allow": "authenticated", "users": []}
    ]
    assert registry.trusted_proxies == []
    assert (registry.login_attempts, registry.login_window) == (10, 300.0)
    # Its users, tokens and packages go to the stats database: SQLite in the cache volume.
    assert settings.stats.database is None
    assert str(settings.data_dir) == "/var/cache/entrepot"


def test_the_registry_settings_are_rendered_with_the_admin_password_from_its_secret() -> None:
    s = spec(
        npm={
            "registry": {
                "selfRegistration": True,
                "adminUser": "root",
                "adminPasswordSecret": ADMIN,
                "publish": RULES,
                "trustedProxies": ["10.244.0.0/16", "::1"],
                "loginAttempts": 3,
                "loginWindow": "1m",
            }
        }
    )
    registry = settings_of(s).npm.registry
    assert registry.self_registration
    assert registry.admin_user == "root"
    assert str(registry.admin_password_file) == "/etc/entrepot/secrets/npm-admin-password"
    assert [r.model_dump(exclude_defaults=True) for r in registry.publish] == RULES
    assert registry.trusted_proxies == ["10.244.0.0/16", "::1"]
    assert (registry.login_attempts, registry.login_window) == (3, 60.0)
    pod = children(s)["Deployment"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "credentials"]
    assert [src["secret"] for src in volume["projected"]["sources"]] == [
        {
            "name": "entrepot-npm-admin",
            "items": [{"key": "password", "path": "npm-admin-password"}],
        }
    ]
    text = children(s)["ConfigMap"]["data"]["config.yaml"]
    assert "entrepot-npm-admin" not in text  # the file, never the Secret's name or content


def test_the_registry_can_be_turned_off() -> None:
    registry = settings_of(spec(npm={"registry": {"enabled": False}})).npm.registry
    assert not registry.enabled


@pytest.mark.parametrize(
    ("registry", "says"),
    [
        ({"publish": [{"packages": ["@corp/*"], "allow": "users"}]}, "allow: users needs users"),
        (
            {"publish": [{"packages": ["@corp/*"], "allow": "users", "users": []}]},
            "allow: users needs users",
        ),
        ({"publish": [{"packages": ["@Corp/*"]}]}, "is not a package name pattern"),
        ({"publish": [{"packages": ["*"], "allow": "everyone"}]}, "allow"),
        ({"publish": [{"allow": "nobody"}]}, "packages"),
        ({"publish": [{"packages": ["*"], "users": ["Alice"]}]}, "must be an npm user name"),
        ({"adminUser": ".admin"}, "must be an npm user name"),
        ({"adminUser": ""}, "must be an npm user name"),
        ({"trustedProxies": ["proxy.example.com"]}, "is not an IP address or CIDR range"),
        ({"loginAttempts": 0}, "loginAttempts"),
        ({"loginWindow": "5 minutes"}, "invalid duration"),
        ({"adminPasswordFile": "/etc/passwd"}, "adminPasswordFile"),  # a Secret, not a path
        ({"adminPasswordSecret": {"secretName": "Admin!", "key": "p"}}, "must be a Secret name"),
    ],
)
def test_invalid_registry_settings_are_refused_by_the_model(
    registry: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        spec(npm={"registry": registry})


def test_the_user_name_rule_is_the_servers() -> None:
    from entrepot.npm.users import _USER_NAME
    from entrepot_operator.api import NPM_USER_PATTERN

    assert f"^{_USER_NAME.pattern}$" == NPM_USER_PATTERN


RWX = {"accessMode": "ReadWriteMany"}
POSTGRES = {"database": "postgresql://entrepot@db.example.com:5432/entrepot"}


@pytest.mark.parametrize(
    ("extra", "allowed"),
    [
        ({}, False),
        ({"stats": {"enabled": False}}, False),  # the registry still needs the database
        ({"npm": {"registry": {"enabled": False}}}, False),  # the statistics do
        ({"stats": {"enabled": False}, "npm": {"registry": {"enabled": False}}}, True),
        ({"stats": POSTGRES}, True),
        ({"stats": {**POSTGRES, "enabled": False}}, True),
    ],
)
def test_replicas_with_the_registry_need_a_shared_database(
    extra: dict[str, Any], allowed: bool
) -> None:
    """Users, tokens and published packages live in the stats database: with replicas > 1,
    stats.enabled: false is no way out while the registry is on. One message, CEL and model."""
    fields = {"replicas": 3, "storage": RWX, **extra}
    if allowed:
        spec(**fields)
        return
    with pytest.raises(ValidationError) as refused:
        spec(**fields)
    assert REPLICAS_NEED_A_REGISTRY_DATABASE in str(refused.value)
    assert "counts downloads" not in str(refused.value)  # the ModuleMirror's words


def test_the_crd_checks_the_registry_as_the_model_does() -> None:
    spec_schema = _schema()["properties"]["spec"]
    rules = {r["message"]: r for r in spec_schema["x-kubernetes-validations"]}
    assert REPLICAS_NEED_A_REGISTRY_DATABASE in rules
    assert "!self.npm.registry.enabled" in rules[REPLICAS_NEED_A_REGISTRY_DATABASE]["rule"]
    assert REPLICAS_NEED_A_STATS_DATABASE not in rules  # the ModuleMirror's rule
    registry = spec_schema["properties"]["npm"]["properties"]["registry"]
    fields = registry["properties"]
    assert fields["enabled"]["default"] is True
    assert fields["selfRegistration"]["default"] is False
    assert fields["adminUser"]["default"] == "admin"
    assert fields["loginWindow"]["default"] == "5m"
    for field, node in fields.items():
        assert node.get("description"), field
    assert "admin_password_file" in fields["adminPasswordSecret"]["description"]
    rule = fields["publish"]["items"]
    assert rule["x-kubernetes-validations"][0]["message"] == USERS_NEED_NAMES
    assert rule["properties"]["allow"]["enum"] == ["authenticated", "users", "nobody"]
    (names,) = rule["properties"]["packages"]["x-kubernetes-validations"]
    assert names["rule"].startswith("self.all(v, v.matches(")
    (networks,) = fields["trustedProxies"]["x-kubernetes-validations"]
    assert networks["rule"] == "self.all(v, isIP(v) || isCIDR(v))"
    # Bounded, so the API server can price the CEL rules.
    assert fields["publish"]["maxItems"] == 64
    assert rule["properties"]["packages"]["maxItems"] == 64
    assert rule["properties"]["users"]["maxItems"] == 128
    assert fields["trustedProxies"]["maxItems"] == 64
    # The database is spec.stats.database, and its description says what lives there.
    assert (
        "private registry"
        in spec_schema["properties"]["stats"]["properties"]["database"]["description"]
    )
    assert "database" not in fields


def test_the_admin_secret_goes_through_the_policy_like_every_secret() -> None:
    greedy = {"secretName": "cluster-admin", "key": "p"}
    s = spec(npm={"registry": {"adminPasswordSecret": greedy}})
    assert secret_references(s) == [
        ("spec.npm.registry.adminPasswordSecret.secretName", "cluster-admin")
    ]
    found = violations(
        s, Policy(secret_name_pattern="^entrepot-"), default_image=IMAGE, kind="NpmMirror"
    )
    assert found == [
        "Secrets an NpmMirror names must match ^entrepot- (chart value policy.secretNamePattern);"
        " not allowed: cluster-admin (spec.npm.registry.adminPasswordSecret.secretName)"
    ]
    allowed = spec(npm={"registry": {"adminPasswordSecret": ADMIN}})
    assert violations(allowed, Policy(secret_name_pattern="^entrepot-"), default_image=IMAGE) == []
    out = run(
        FakeApplier(),
        npm_body(npm={"upstream": UPSTREAM, "registry": {"adminPasswordSecret": greedy}}),
        policy=Policy(secret_name_pattern="^entrepot-"),
    )
    assert conditions(out)["Ready"]["reason"] == "PolicyViolation"
    assert "cluster-admin" in conditions(out)["Ready"]["message"]


def test_existing_npm_mirrors_roll_once_onto_the_registry() -> None:
    """An NpmMirror's config used to say registry: {enabled: false}; it now renders the
    registry's settings (on), so the config hash of every existing NpmMirror changes once on
    the operator's upgrade (docs/operator.md, "Upgrading the operator")."""
    config = config_of(spec())
    assert config["npm"]["registry"]["enabled"] is True
    assert config["npm"]["registry"]["self_registration"] is False
