"""The CRD is generated from the API models; crds/ must match, and the schema must be one the
API server accepts (structural: no refs, no unions, no additionalProperties: false)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from entrepot_operator.api import ModuleMirrorSpec
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
    ModuleMirrorSpec.model_validate(_spec(replicas=3, storage={"accessMode": "ReadWriteMany"}))
    ModuleMirrorSpec.model_validate(_spec(replicas=3, storage={"emptyDir": {}}))
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


def test_examples_in_the_crd_file_parse_as_yaml() -> None:
    doc = yaml.safe_load(crd_yaml())
    assert doc["metadata"]["name"] == "modulemirrors.entrepot.dev"
