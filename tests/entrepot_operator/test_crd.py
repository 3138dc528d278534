"""The CRD is generated from the API models; crds/ must match, and the schema must be one the
API server accepts (structural: no refs, no unions, no additionalProperties: false)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from entrepot.config import KEY_PATTERN, Route
from entrepot.sumdb.note import generate_key
from entrepot_operator.api import SPEC_RULES, ModuleMirrorSpec
from entrepot_operator.crd import crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_crd_matches_the_models() -> None:
    """Regenerate with `entrepot-operator crds > crds/entrepot.dev_modulemirrors.yaml`."""
    assert (ROOT / "crds" / "entrepot.dev_modulemirrors.yaml").read_text() == crd_yaml()


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{i}]"))
    return found


def test_schema_is_structural() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node, path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        if "properties" in node:
            assert node.get("type") == "object", path


def test_durations_and_defaults_are_written_as_users_write_them() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    cache = spec["properties"]["go"]["properties"]["cache"]
    assert cache["properties"]["listTtl"]["default"] == "5m"
    assert cache["properties"]["maxStale"]["default"] == "7d"
    assert cache["default"] == {}  # so the API server fills in the fields
    assert spec["properties"]["storage"]["default"] == {}
    assert "default" not in spec["properties"]["ingress"]  # optional: absent means no Ingress


def test_printer_columns_and_short_name() -> None:
    version = crd()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Replicas",
        "URL",
        "Age",
    ]
    assert crd()["spec"]["names"]["shortNames"] == ["mm"]
    assert version["subresources"] == {"status": {}}


def _spec(**extra: Any) -> dict[str, Any]:
    return {"go": {"proxy": "https://proxy.example.com,direct"}, **extra}


def test_the_python_model_applies_the_same_rules_as_the_cel_ones() -> None:
    off = {"enabled": False}
    ModuleMirrorSpec.model_validate(
        _spec(replicas=3, storage={"accessMode": "ReadWriteMany"}, stats=off)
    )
    ModuleMirrorSpec.model_validate(_spec(replicas=3, storage={"emptyDir": {}}, stats=off))
    with pytest.raises(ValidationError, match="replicas > 1 needs a shared cache"):
        ModuleMirrorSpec.model_validate(_spec(replicas=3))
    with pytest.raises(ValidationError, match="exactly one of 'proxy'"):
        ModuleMirrorSpec.model_validate(
            {
                "go": {
                    "proxy": "https://proxy.example.com",
                    "routes": [{"patterns": "a.example.com"}],
                }
            }
        )
    with pytest.raises(ValidationError):
        ModuleMirrorSpec.model_validate({"go": {"proxy": "ftp://nope.example.com"}})


def test_statistics_with_replicas_need_a_shared_database() -> None:
    rwx = {"accessMode": "ReadWriteMany"}
    with pytest.raises(ValidationError, match="counts downloads in one shared database"):
        ModuleMirrorSpec.model_validate(_spec(replicas=3, storage=rwx))
    ModuleMirrorSpec.model_validate(_spec(replicas=3, storage=rwx, stats={"enabled": False}))
    ModuleMirrorSpec.model_validate(
        _spec(
            replicas=3,
            storage=rwx,
            stats={"database": "postgresql://entrepot@db.example.com:5432/entrepot"},
        )
    )
    # The CEL rule says the same: its text is the model's message.
    (rule,) = [r for r in SPEC_RULES if "shared database" in r["message"]]
    assert "has(self.stats.database)" in rule["rule"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://entrepot:hunter2@db.example.com:5432/entrepot",
        "postgresql+asyncpg://:hunter2@db.example.com/entrepot",
    ],
)
def test_a_password_in_the_database_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="must not hold a password"):
        ModuleMirrorSpec.model_validate(_spec(stats={"database": url}))
    stats = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["stats"]
    pattern = stats["properties"]["database"]["pattern"]
    assert not re.match(pattern, url)
    assert re.match(pattern, "postgresql://entrepot@db.example.com:5432/entrepot")
    assert re.match(pattern, "postgresql://db.example.com/entrepot?sslmode=require")


def test_a_password_secret_needs_a_postgresql_database() -> None:
    secret = {"secretName": "db", "key": "password"}
    with pytest.raises(ValidationError, match=r"passwordSecret needs stats\.database"):
        ModuleMirrorSpec.model_validate(_spec(stats={"passwordSecret": secret}))
    ModuleMirrorSpec.model_validate(
        _spec(stats={"database": "postgresql://u@db.example.com/e", "passwordSecret": secret})
    )
    stats = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["stats"]
    assert stats["x-kubernetes-validations"][0]["message"].startswith("stats.passwordSecret")


def test_examples_in_the_crd_file_parse_as_yaml() -> None:
    doc = yaml.safe_load(crd_yaml())
    assert doc["metadata"]["name"] == "modulemirrors.entrepot.dev"


# --- go.sumdb ------------------------------------------------------------------------------

CORP_KEY = generate_key("sum.corp.example.com")[1]


def _database(**fields: Any) -> dict[str, Any]:
    return _spec(go={"proxy": "https://proxy.example.com", "sumdb": {"databases": [fields]}})


def test_a_database_needs_exactly_one_of_key_and_key_secret() -> None:
    secret = {"secretName": "corp-sumdb", "key": "verifier-key"}
    ModuleMirrorSpec.model_validate(_database(name="sum.corp.example.com", key=CORP_KEY))
    ModuleMirrorSpec.model_validate(_database(name="sum.corp.example.com", keySecret=secret))
    for fields in [
        {"name": "sum.corp.example.com", "key": CORP_KEY, "keySecret": secret},
        {"name": "sum.corp.example.com"},
    ]:
        with pytest.raises(ValidationError, match=r"exactly one of 'key' .* or 'keySecret'"):
            ModuleMirrorSpec.model_validate(_database(**fields))


def test_a_bad_verifier_key_is_refused_with_what_a_key_looks_like() -> None:
    name, hash_, data = CORP_KEY.split("+", 2)
    wrong_hash = f"{name}+{int(hash_, 16) ^ 1:08x}+{data}"
    for key, why in [
        (wrong_hash, "invalid verifier hash"),
        (f"{name}+nothex!!+{data}", "malformed verifier id"),
    ]:
        with pytest.raises(ValidationError) as refused:
            ModuleMirrorSpec.model_validate(_database(name=name, key=key))
        message = str(refused.value)
        assert why in message
        assert "invalid verifier key" in message
        assert "'<name>+<8 hex digits>+<base64 Ed25519 key>'" in message
        assert "go.sumdb.databases.0.key" in message
    other = generate_key("sum.other.example.com")[1]
    with pytest.raises(ValidationError, match=r"the key names database 'sum\.other\.example\.com'"):
        ModuleMirrorSpec.model_validate(_database(name="sum.corp.example.com", key=other))


def test_sumdb_rules_match_the_servers() -> None:
    with pytest.raises(ValidationError, match="database names must be distinct"):
        ModuleMirrorSpec.model_validate(
            _spec(
                go={
                    "proxy": "https://proxy.example.com",
                    "sumdb": {
                        "databases": [
                            {"name": "sum.corp.example.com", "key": CORP_KEY},
                            {
                                "name": "sum.corp.example.com",
                                "keySecret": {"secretName": "s", "key": "k"},
                            },
                        ]
                    },
                }
            )
        )
    with pytest.raises(ValidationError, match="white space"):
        ModuleMirrorSpec.model_validate(
            _spec(go={"proxy": "https://proxy.example.com", "sumdb": {"noSum": "a.example.com b"}})
        )
    with pytest.raises(ValidationError):
        ModuleMirrorSpec.model_validate(
            _database(name="sum.corp.example.com", key=CORP_KEY, proxy="ftp://x")
        )
    spec = ModuleMirrorSpec.model_validate(
        _spec(
            go={
                "proxy": "https://proxy.example.com",
                "sumdb": {"noSum": "a.example.com, b.example.com"},
            }
        )
    )
    assert spec.go.sumdb.no_sum == "a.example.com,b.example.com"  # no blanks, as the server
    assert spec.go.sumdb.unreachable == "refuse"
    assert spec.go.sumdb.latest_ttl == 60


def test_the_crd_checks_the_one_key_rule_and_distinct_names() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    sumdb = spec["properties"]["go"]["properties"]["sumdb"]
    assert sumdb["default"] == {}
    assert sumdb["properties"]["latestTtl"]["default"] == "1m"
    assert sumdb["properties"]["unreachable"]["enum"] == ["refuse", "serve_unverified"]
    databases = sumdb["properties"]["databases"]
    assert databases["nullable"] is True  # unset (the environment's) is not [] (off)
    assert databases["x-kubernetes-list-type"] == "map"
    assert databases["x-kubernetes-list-map-keys"] == ["name"]
    database = databases["items"]
    assert database["required"] == ["name"]
    assert database["x-kubernetes-validations"][0]["rule"] == "has(self.key) != has(self.keySecret)"
    assert set(database["properties"]["keySecret"]["required"]) == {"secretName", "key"}
    assert database["properties"]["key"]["pattern"] == KEY_PATTERN
    route = spec["properties"]["go"]["properties"]["routes"]["items"]
    assert route["properties"]["sumdb"] == {
        "default": True,
        "description": Route.model_fields["sumdb"].description,
        "type": "boolean",
    }
