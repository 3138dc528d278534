"""The chart's examples (helm/entrepot/examples/): each parses with the operator's model and
renders children whose config file the server loads. The CRD's own check of them is a server
side dry run in tests/packaging/test_chart_in_cluster.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from entrepot.config import READ_SECRETS, Settings
from entrepot_operator.api import ModuleMirrorSpec
from entrepot_operator.kinds import BY_KIND
from entrepot_operator.render import Owner

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "helm/entrepot/examples").glob("*.yaml"))
OWNER = Owner(name="example", namespace="builds", uid="uid-1")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rendered(path: Path) -> tuple[dict[str, Any], Settings]:
    """The example's one mirror (either kind), rendered as its kind renders it."""
    (mirror,) = [d for d in documents(path) if d["kind"] in BY_KIND]
    kind = BY_KIND[mirror["kind"]]
    spec = kind.parse(mirror["spec"])
    owner = Owner(name="example", namespace="builds", uid="uid-1", kind=kind.kind)
    children = kind.render(
        spec, owner, image="registry.example.com/e:1", service_monitor_available=False
    )
    config = yaml.safe_load(children["ConfigMap"]["data"]["config.yaml"])
    return children, Settings.model_validate(config, context={READ_SECRETS: False})


def test_the_examples_are_found() -> None:
    assert {
        "air-gapped.yaml",
        "npm.yaml",
        "npm-private-registry.yaml",
        "private-registry.yaml",
    } <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_renders_a_config_the_server_loads(path: Path) -> None:
    children, settings = rendered(path)
    assert children["Deployment"] is not None
    assert settings.listen == "0.0.0.0:8080"
    # Every Secret an example ships is one its mirror mounts.
    pod = children["Deployment"]["spec"]["template"]["spec"]
    mounted = {
        src["secret"]["name"]
        for v in pod["volumes"]
        if "projected" in v
        for src in v["projected"]["sources"]
    }
    shipped = {d["metadata"]["name"] for d in documents(path) if d["kind"] == "Secret"}
    assert shipped <= mounted


def test_the_air_gapped_example_verifies_company_modules_with_a_key_from_its_secret() -> None:
    path = next(p for p in EXAMPLES if p.name == "air-gapped.yaml")
    children, settings = rendered(path)
    sumdb = settings.go.sumdb
    assert sumdb.databases is not None
    (database,) = sumdb.databases
    assert database.name == "sum.corp.example.com"
    assert database.patterns == "corp.example.com"
    assert database.key is None
    assert str(database.key_file) == "/etc/entrepot/secrets/sumdb-key-0"
    assert sumdb.no_sum == "git.corp.example.com"
    assert sumdb.unreachable == "refuse"
    assert settings.go.proxy == "https://proxy.corp.example.com"

    pod = children["Deployment"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "credentials"]
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "entrepot-corp-sumdb",
                "items": [{"key": "verifier-key", "path": "sumdb-key-0"}],
            }
        }
    ]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "credentials", "mountPath": "/etc/entrepot/secrets", "readOnly": True} in mounts

    # The Secret holds a well-formed key for the database it names, so the server starts.
    (secret,) = [d for d in documents(path) if d["kind"] == "Secret"]
    key = secret["stringData"]["verifier-key"]
    assert ModuleMirrorSpec.model_validate(
        {
            "go": {
                "proxy": "https://proxy.corp.example.com",
                "sumdb": {"databases": [{"name": "sum.corp.example.com", "key": key}]},
            }
        }
    )
    assert f'GOSUMDB="{key}"' in path.read_text()  # the comment's advice to builds agrees


def test_the_npm_examples_serve_npm_alone_with_their_policy_and_token() -> None:
    _, settings = rendered(next(p for p in EXAMPLES if p.name == "npm.yaml"))
    assert not settings.go.enabled
    assert (settings.npm.enabled, settings.npm.prefix) == (True, "/")
    assert settings.npm.public_url == "http://example.builds.svc:8080/"
    assert settings.npm.policy.private == ["@corp/*"]
    assert settings.npm.policy.min_release_age == 3 * 86400
    children, settings = rendered(
        next(p for p in EXAMPLES if p.name == "npm-private-registry.yaml")
    )
    assert settings.npm.public_url == "https://npm.corp.example.com/"
    assert str(settings.npm.credentials.token_file) == "/etc/entrepot/secrets/npm-token"
    (volume,) = [
        v for v in children["Deployment"]["spec"]["template"]["spec"]["volumes"] if "projected" in v
    ]
    assert volume["projected"]["sources"] == [
        {"secret": {"name": "entrepot-npm-token", "items": [{"key": "token", "path": "npm-token"}]}}
    ]


def test_the_private_registry_example_publishes_per_scope_with_its_admin_from_a_secret() -> None:
    path = next(p for p in EXAMPLES if p.name == "private-registry.yaml")
    children, settings = rendered(path)
    registry = settings.npm.registry
    assert registry.enabled
    assert not registry.self_registration
    assert registry.admin_user == "admin"
    assert str(registry.admin_password_file) == "/etc/entrepot/secrets/npm-admin-password"
    rules = {tuple(r.packages): r for r in registry.publish}
    assert rules["@corp/*",].allow == "users"
    assert "admin" in rules["@corp/*",].users
    assert rules["*",].allow == "nobody"
    assert list(rules)[-1] == ("*",)  # the catch-all comes last: first match wins
    assert settings.npm.policy.private == ["@corp/*"]
    assert settings.npm.public_url == "https://npm.corp.example.com/"
    assert settings.stats.database is None  # SQLite on the cache volume: one replica
    assert children["Deployment"]["spec"]["replicas"] == 1
    assert children["Ingress"] is not None
    (secret,) = [d for d in documents(path) if d["kind"] == "Secret"]
    (volume,) = [
        v for v in children["Deployment"]["spec"]["template"]["spec"]["volumes"] if "projected" in v
    ]
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": secret["metadata"]["name"],
                "items": [{"key": "password", "path": "npm-admin-password"}],
            }
        }
    ]
    assert "password" in secret["stringData"]
    # The comment's command adds users on the config the pods run with.
    assert "entrepot user add" in path.read_text()
    assert "--config /etc/entrepot/config.yaml --password-stdin" in path.read_text()
