"""The CRD is generated from the API models; crds/ must match, and the schema must be one the
API server accepts (structural: no refs, no unions, no additionalProperties: false)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from entrepot.config import KEY_PATTERN, Route
from entrepot.sumdb.note import generate_key
from entrepot_operator.api import (
    ACCESS_MODE_FIXED,
    BAD_NAME,
    DNS_LABEL_PATTERN,
    HOST_PATTERN,
    MODULE_SPEC_RULES,
    NOT_A_HOST,
    NOT_A_QUANTITY,
    RESOURCES_RULES,
    SIZE_PATTERN,
    SIZE_SHRINKS,
    SPREAD_RULES,
    TOLERATION_RULES,
    ModuleMirrorSpec,
    check_mirror_name,
    quantity,
)
from entrepot_operator.crd import crd, crd_yaml
from entrepot_operator.kinds import KINDS, MODULE_MIRROR, MirrorKind
from entrepot_operator.render import Owner

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_checked_in_crds_match_the_models(kind: MirrorKind) -> None:
    """Regenerate with `entrepot-operator crds --out crds` (and --out helm/entrepot/crds)."""
    assert (ROOT / "crds" / f"entrepot.dev_{kind.plural}.yaml").read_text() == crd_yaml(kind)
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(
        f"entrepot.dev_{k.plural}.yaml" for k in KINDS
    )


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


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_schema_is_structural(kind: MirrorKind) -> None:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
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
        "Reason",
        "URL",
        "Age",
        "Message",
        "Upstream",
    ]
    assert [c.get("priority") for c in version["additionalPrinterColumns"][-2:]] == [1, 1]
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
    (rule,) = [r for r in MODULE_SPEC_RULES if "shared database" in r["message"]]
    assert "has(self.stats.database)" in rule["rule"]
    (written,) = [
        r
        for r in crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
            "x-kubernetes-validations"
        ]
        if "shared database" in r["message"]
    ]
    assert written == rule


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


# --- Admitted, then stuck (issue 11, point 6): what the pod spec would refuse ---------------


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _spec_props() -> dict[str, Any]:
    props: dict[str, Any] = _schema()["properties"]["spec"]["properties"]
    return props


POD_FIELDS: dict[str, Any] = {
    "resources": {
        "requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": 1},
        "limits": {"cpu": 2, "memory": "1Gi", "nvidia.com/gpu": "1"},
    },
    "tolerations": [
        {"operator": "Exists"},
        {"key": "dedicated", "operator": "Equal", "value": "mirrors", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "tolerationSeconds": 30},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchFields": [{"key": "x", "operator": "Exists"}]}}
            ],
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "m"}},
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
            "labelSelector": {
                "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]
            },
            "nodeTaintsPolicy": "Honor",
        }
    ],
}


def test_typed_pod_fields_reach_the_pod_exactly_as_written() -> None:
    """Typed (checked) yet kept as the user's dicts: render passes them through unchanged."""
    parsed = ModuleMirrorSpec.model_validate(_spec(**POD_FIELDS))
    assert parsed.resources == POD_FIELDS["resources"]
    assert parsed.tolerations == POD_FIELDS["tolerations"]
    assert parsed.affinity == POD_FIELDS["affinity"]
    assert parsed.topology_spread_constraints == POD_FIELDS["topologySpreadConstraints"]
    children = MODULE_MIRROR.render(
        parsed,
        Owner(name="m", namespace="ns", uid="u"),
        image="registry.example.com/e:1",
        service_monitor_available=False,
    )
    pod = children["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == POD_FIELDS["resources"]
    for key in ("tolerations", "affinity", "topologySpreadConstraints"):
        assert pod[key] == POD_FIELDS[key], key


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"resources": {"limitz": {"cpu": "1"}}}, "Extra inputs are not permitted"),
        ({"resources": {"limits": {"cpu": "lots"}}}, "must be a quantity such as 500m"),
        ({"resources": {"requests": {"memory": -1}}}, "must be a quantity such as 500m"),
        (
            {"resources": {"limits": {"cpu": 1}, "requests": {"cpu": "1500m"}}},
            "a request must not exceed the limit",
        ),
        ({"tolerations": [{"operator": "Sometimes"}]}, "'Exists', 'Equal' or ''"),
        ({"tolerations": [{"effect": "NoExecute"}]}, "without a key must have operator: Exists"),
        (
            {"tolerations": [{"operator": "Exists", "value": "v"}]},
            "with operator: Exists must not have a value",
        ),
        (
            {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]},
            "tolerationSeconds needs effect: NoExecute",
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 0, "preference": {}}
                        ]
                    }
                }
            },
            "greater than or equal to 1",
        ),
        (
            {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]}}},
            "topologyKey",
        ),
        ({"affinity": {"nodeAfinity": {}}}, "Extra inputs are not permitted"),
        (
            {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]},
            "whenUnsatisfiable",
        ),
        (
            {
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "minDomains": 2,
                    }
                ]
            },
            "minDomains needs whenUnsatisfiable: DoNotSchedule",
        ),
    ],
)
def test_pod_fields_a_pod_would_refuse_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ModuleMirrorSpec.model_validate(_spec(**fields))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ingress": {"host": "Not A Host!"}}, "must be a DNS host name"),
        ({"ingress": {"host": "10.0.0.1"}}, "not an IP address"),
        ({"ingress": {"host": "mirror.example.com."}}, "must be a DNS host name"),
        ({"ingress": {"host": "a.example.com", "tlsSecretName": "TLS"}}, "must be a Secret name"),
        ({"ingress": {"host": "a.example.com", "className": "a_b"}}, "must be an IngressClass"),
        ({"imagePullSecrets": ["Bad Name!"]}, "must be a Secret name"),
        ({"credentials": {"netrc": {"secretName": "n", "key": "a/b"}}}, "must be a Secret key"),
        ({"storage": {"size": "0"}}, "must be a positive size"),
        ({"storage": {"size": "0.0Gi"}}, "must be a positive size"),
        ({"storage": {"size": "-1Gi"}}, "must be a positive size"),
        ({"storage": {"size": "10GB"}}, "must be a positive size"),
        ({"storage": {"storageClassName": "Fast SSD"}}, "must be a StorageClass name"),
        ({"storage": {"emptyDir": {"sizeLimit": "0"}}}, "must be a positive size"),
        ({"storage": {"deletionPolicy": "Keep"}}, "'Retain' or 'Delete'"),
    ],
)
def test_names_hosts_and_sizes_are_checked(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ModuleMirrorSpec.model_validate(_spec(**fields))


def test_valid_names_hosts_and_sizes_pass() -> None:
    parsed = ModuleMirrorSpec.model_validate(
        _spec(
            ingress={"host": "*.example.com", "tlsSecretName": "tls.example", "className": "nginx"},
            imagePullSecrets=["regcred", "pull.example.com"],
            storage={"size": "0.5Ti", "storageClassName": "shared-files"},
            credentials={"netrc": {"secretName": "netrc", "key": ".netrc_1-A"}},
        )
    )
    assert parsed.ingress is not None
    assert parsed.ingress.host == "*.example.com"
    assert parsed.storage.size == "0.5Ti"


def test_the_storage_deletion_policy_defaults_to_retain() -> None:
    assert ModuleMirrorSpec.model_validate(_spec()).storage.deletion_policy == "Retain"
    deleting = ModuleMirrorSpec.model_validate(_spec(storage={"deletionPolicy": "Delete"}))
    assert deleting.storage.deletion_policy == "Delete"
    field = _spec_props()["storage"]["properties"]["deletionPolicy"]
    assert field["enum"] == ["Retain", "Delete"]
    assert field["default"] == "Retain"
    assert field["description"].startswith(
        "What happens to the cache volume (PVC) when the mirror is deleted: Retain keeps"
    )


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("gomods", True),
        ("go-mirror-2", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("my.mirror", False),
        ("2mirror", False),
        ("mirror-", False),
        ("Mirror", False),
    ],
)
def test_a_mirror_name_is_a_dns_1035_label(name: str, valid: bool) -> None:
    """The name is the Service's name and the instance label's value."""
    if valid:
        assert check_mirror_name(name) == name
    else:
        with pytest.raises(ValueError, match="at most 63 characters"):
            check_mirror_name(name)
    (rule,) = _schema()["x-kubernetes-validations"]
    assert rule["message"] == BAD_NAME
    assert "self.metadata.name.size() <= 63" in rule["rule"]
    assert DNS_LABEL_PATTERN in rule["rule"]


def test_each_field_rule_is_in_the_crd_with_the_models_message() -> None:
    """One definition, two checks: every message the model gives is the CRD rule's."""
    props = _spec_props()
    host = props["ingress"]["properties"]["host"]
    assert host["maxLength"] == 253
    assert host["x-kubernetes-validations"][0]["message"] == NOT_A_HOST
    assert HOST_PATTERN in host["x-kubernetes-validations"][0]["rule"]
    pull = props["imagePullSecrets"]
    assert pull["maxItems"] == 32
    assert "must be a Secret name" in pull["items"]["x-kubernetes-validations"][0]["message"]
    size = props["storage"]["properties"]["size"]
    assert size["default"] == "10Gi"
    assert SIZE_PATTERN in size["x-kubernetes-validations"][0]["rule"]
    # Quantities are int-or-string, as controller-gen writes resource.Quantity.
    resources = props["resources"]
    cpu = resources["properties"]["limits"]["additionalProperties"]
    assert cpu["x-kubernetes-int-or-string"] is True
    assert "type" not in cpu
    assert "nullable" not in cpu
    assert cpu["maxLength"] == 64
    assert cpu["x-kubernetes-validations"][0]["message"] == NOT_A_QUANTITY
    assert resources["x-kubernetes-validations"] == RESOURCES_RULES
    # No free-form object is left in the spec.
    for path, node in _walk(_schema()["properties"]["spec"]):
        assert not node.get("x-kubernetes-preserve-unknown-fields"), path
    toleration = props["tolerations"]["items"]
    assert toleration["properties"]["operator"]["enum"] == ["Exists", "Equal", ""]
    assert toleration["x-kubernetes-validations"] == TOLERATION_RULES
    spread = props["topologySpreadConstraints"]["items"]
    assert set(spread["required"]) == {"maxSkew", "topologyKey", "whenUnsatisfiable"}
    assert spread["x-kubernetes-validations"] == SPREAD_RULES
    affinity = props["affinity"]["properties"]
    term = affinity["podAntiAffinity"]["properties"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]["items"]
    assert term["properties"]["weight"]["maximum"] == 100
    assert term["properties"]["podAffinityTerm"]["required"] == ["topologyKey"]


def test_immutable_storage_fields_have_transition_rules() -> None:
    """CEL-only (oldSelf): the API server refuses the change with the way out."""
    storage = _spec_props()["storage"]
    rules = {r["fieldPath"]: r for r in storage["x-kubernetes-validations"]}
    assert set(rules) == {".emptyDir", ".accessMode", ".storageClassName", ".size"}
    for rule in rules.values():
        assert "oldSelf" in rule["rule"]
        assert "create a new mirror" in rule["message"]
    assert rules[".accessMode"]["message"] == ACCESS_MODE_FIXED
    assert ACCESS_MODE_FIXED.startswith(
        "storage.accessMode cannot change on an existing mirror (the PVC's access mode is"
        " immutable)"
    )
    assert rules[".size"]["message"] == SIZE_SHRINKS
    assert "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0" in rules[".size"]["rule"]


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        (2, "2"),
        ("500m", "0.5"),
        ("1.5Gi", str(3 * 2**29)),
        ("1e3", "1000"),
        ("2E", "2000000000000000000"),
        (".5", "0.5"),
        ("+1k", "1000"),
        ("100n", "0.0000001"),
    ],
)
def test_quantities_are_read_as_kubernetes_reads_them(text: int | str, amount: str) -> None:
    assert quantity(text) == Decimal(amount)
