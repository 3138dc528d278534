"""The CustomResourceDefinitions, one per kind (kinds.py), generated from the API models
(crds/ holds the output).

pydantic's JSON Schema becomes a Kubernetes *structural* OpenAPI v3 schema: references are
inlined, ``Optional`` becomes ``nullable``, ``int | str`` becomes
``x-kubernetes-int-or-string`` (a quantity), titles go, duration defaults are written the way
users write them, and the cross-field rules of api.py are attached as CEL validations.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from entrepot.config import _BLOCK_ENTRY, _NAME_GLOB, DURATION_PATTERN, format_duration
from entrepot_operator import GROUP, VERSION
from entrepot_operator.api import (
    DATABASE_RULES,
    MODULE_SPEC_RULES,
    NAME_RULES,
    NPM_SPEC_RULES,
    ROUTE_RULES,
    SPEC_RULES,
    STATS_RULES,
    STORAGE_RULES,
    MirrorStatus,
)
from entrepot_operator.kinds import KINDS, MODULE_MIRROR, NPM_MIRROR, MirrorKind

PLURAL, KIND = MODULE_MIRROR.plural, MODULE_MIRROR.kind
NAME = f"{PLURAL}.{GROUP}"


def crd_name(kind: MirrorKind) -> str:
    return f"{kind.plural}.{GROUP}"


def file_name(kind: MirrorKind) -> str:
    """The CRD's file in crds/ and helm/entrepot/crds/."""
    return f"{GROUP}_{kind.plural}.yaml"


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref``s and rewrite pydantic's JSON Schema into what Kubernetes accepts."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return walk({**target, **extra})
        node = {k: v for k, v in node.items() if k not in ("title", "$defs", "format")}
        any_of = node.pop("anyOf", None)
        if any_of is not None:
            kinds = [a for a in any_of if a.get("type") != "null"]
            nullable = len(kinds) < len(any_of)
            if sorted(k.get("type") for k in kinds) == ["integer", "string"]:
                # int | str: a quantity, as controller-gen writes resource.Quantity (the
                # string's bounds apply to strings only).
                bounds = {k: v for kind in kinds for k, v in kind.items() if k != "type"}
                kinds = [{"x-kubernetes-int-or-string": True, **bounds}]
            if len(kinds) != 1:
                raise ValueError(f"cannot express a union in a CRD schema: {any_of}")
            merged = {**walk(kinds[0]), **{k: walk(v) for k, v in node.items()}}
            if nullable:
                merged["nullable"] = True
            if merged.get("default", 0) is None:
                del merged["default"]
            return merged
        out = {k: walk(v) for k, v in node.items()}
        # Objects whose model has defaults get `default: {}` so the API server fills in their
        # fields (and CEL rules can rely on them) when the user leaves the object out.
        required = set(out.get("required", []))
        for name, prop in out.get("properties", {}).items():
            if (
                prop.get("type") == "object"
                and "properties" in prop
                and not prop.get("nullable")
                and name not in required
                and "default" not in prop
            ):
                prop["default"] = {}
        if "properties" in out or out.get("additionalProperties") is not None:
            out.setdefault("type", "object")
        if out.get("pattern") == DURATION_PATTERN and isinstance(out.get("default"), int | float):
            out["default"] = format_duration(out["default"])
        if out.get("x-kubernetes-preserve-unknown-fields"):
            out.pop("additionalProperties", None)
            out.pop("items", None)
            out.setdefault("type", "object")
            if out["type"] == "array":
                out["items"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if out.get("additionalProperties") is False:
            # Not allowed in a structural schema; unknown fields are refused anyway by the
            # API server's strict field validation (kubectl's default).
            del out["additionalProperties"]
        if out.get("additionalProperties") is True:
            out.pop("additionalProperties")
            out["x-kubernetes-preserve-unknown-fields"] = True
        return out

    result: dict[str, Any] = walk({k: v for k, v in schema.items() if k != "$defs"})
    return result


def _spec_schema(kind: MirrorKind) -> dict[str, Any]:
    schema = structural(kind.spec.model_json_schema(by_alias=True))
    schema["x-kubernetes-validations"] = list(SPEC_RULES)
    schema["properties"]["stats"]["x-kubernetes-validations"] = STATS_RULES
    schema["properties"]["storage"]["x-kubernetes-validations"] = STORAGE_RULES
    if kind is MODULE_MIRROR:
        schema["x-kubernetes-validations"] += MODULE_SPEC_RULES
        _go_rules(schema)
    elif kind is NPM_MIRROR:
        schema["x-kubernetes-validations"] += NPM_SPEC_RULES
        _npm_rules(schema)
    return schema


NPM_LIST_BOUNDS = {"maxItems": 1024}
NPM_NAME_BOUNDS = {"type": "string", "maxLength": 256}
# A publish rule's lists sit inside a list (spec.npm.registry.publish, at most 64 rules):
# smaller bounds keep the CEL cost of the whole list within the API server's limit.
PUBLISH_LIST_BOUNDS = {"maxItems": 64}
USERS_LIST_BOUNDS = {"maxItems": 128}
PROXY_LIST_BOUNDS = {"maxItems": 64}
PROXY_BOUNDS = {"type": "string", "maxLength": 64}
NOT_A_NETWORK = "every entry must be an IP address or a CIDR range, such as 10.0.0.0/8 or 192.0.2.7"


def _name_patterns(field: dict[str, Any], pattern: str, shape: str) -> None:
    field["items"] = dict(NPM_NAME_BOUNDS)
    field["x-kubernetes-validations"] = [
        {
            "rule": f"self.all(v, v.matches(r'{pattern}'))",
            "message": f"every entry must be a package name pattern: use {shape} (lower case)",
        }
    ]


def _npm_rules(schema: dict[str, Any]) -> None:
    """The name patterns of the policy and of the publish rules, checked by the API server as
    the server's model checks them (entrepot.config._check_name_globs), with its words, and
    the registry's trusted proxies (the server's ipaddress check, as CEL's isIP/isCIDR);
    bounded for CEL's cost limit."""
    npm = schema["properties"]["npm"]["properties"]
    policy = npm["policy"]["properties"]
    for field, (pattern, shape) in {
        "minReleaseAgeExempt": (_NAME_GLOB.pattern, "'name' or '@scope/*'"),
        "private": (_NAME_GLOB.pattern, "'name' or '@scope/*'"),
        "blocked": (_BLOCK_ENTRY.pattern, "'name', '@scope/*' or 'name@1.2.3'"),
    }.items():
        policy[field].update(NPM_LIST_BOUNDS)
        _name_patterns(policy[field], pattern, shape)
    registry = npm["registry"]["properties"]
    rule = registry["publish"]["items"]["properties"]
    rule["packages"].update(PUBLISH_LIST_BOUNDS)
    _name_patterns(rule["packages"], _NAME_GLOB.pattern, "'name' or '@scope/*'")
    rule["users"].update(USERS_LIST_BOUNDS)
    proxies = registry["trustedProxies"]
    proxies.update(PROXY_LIST_BOUNDS)
    proxies["items"] = dict(PROXY_BOUNDS)
    proxies["x-kubernetes-validations"] = [
        {"rule": "self.all(v, isIP(v) || isCIDR(v))", "message": NOT_A_NETWORK}
    ]


def _go_rules(schema: dict[str, Any]) -> None:
    route = schema["properties"]["go"]["properties"]["routes"]["items"]
    route["x-kubernetes-validations"] = ROUTE_RULES
    databases = schema["properties"]["go"]["properties"]["sumdb"]["properties"]["databases"]
    databases["items"]["x-kubernetes-validations"] = DATABASE_RULES
    # Distinct names, checked by the API server: a list keyed by name.
    databases["x-kubernetes-list-type"] = "map"
    databases["x-kubernetes-list-map-keys"] = ["name"]


def _status_schema(kind: MirrorKind) -> dict[str, Any]:
    schema = structural(MirrorStatus.model_json_schema(by_alias=True))
    schema["properties"]["url"]["description"] = kind.url_description
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def _upstream_column(kind: MirrorKind) -> dict[str, Any]:
    path = ".spec.go.proxy" if kind is MODULE_MIRROR else ".spec.npm.upstream"
    return {"name": "Upstream", "type": "string", "priority": 1, "jsonPath": path}


def crd(kind: MirrorKind = MODULE_MIRROR) -> dict[str, Any]:
    columns = [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        },
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            "name": "Message",
            "type": "string",
            "priority": 1,  # kubectl get -o wide
            "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
        },
        _upstream_column(kind),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": crd_name(kind),
            "labels": {
                "app.kubernetes.io/name": "entrepot",
                "app.kubernetes.io/part-of": "entrepot",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": kind.plural,
                "singular": kind.singular,
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "shortNames": list(kind.short_names),
                "categories": ["entrepot"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            # The name, which only a rule on the root can see.
                            "x-kubernetes-validations": NAME_RULES,
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(kind),
                                "status": _status_schema(kind),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml(kind: MirrorKind = MODULE_MIRROR) -> str:
    header = (
        "# Generated from operator/entrepot_operator/api.py by"
        " `entrepot-operator crds --out crds`.\n"
    )
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100, allow_unicode=True)


def all_crds_yaml() -> str:
    """Every kind's CRD, as one multi-document YAML stream."""
    return "---\n".join(crd_yaml(kind) for kind in KINDS)
