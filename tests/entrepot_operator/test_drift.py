"""Fields another manager set on a child, from managedFields."""

from __future__ import annotations

from typing import Any

from entrepot_operator.drift import drift_message, foreign_fields


def entry(manager: str, fields: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": "Update",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        **more,
    }


def test_set_env_and_host_network_are_found_and_ours_and_the_controllers_are_not() -> None:
    env = {
        "f:spec": {
            "f:template": {
                "f:spec": {
                    "f:containers": {
                        'k:{"name":"mirror"}': {
                            "f:env": {
                                ".": {},
                                'k:{"name":"HTTPS_PROXY"}': {".": {}, "f:name": {}, "f:value": {}},
                            }
                        }
                    }
                }
            }
        }
    }
    host = {"f:spec": {"f:template": {"f:spec": {"f:hostNetwork": {}}}}}
    restart = {
        "f:spec": {
            "f:template": {
                "f:metadata": {"f:annotations": {"f:kubectl.kubernetes.io/restartedAt": {}}}
            }
        }
    }
    deployment = {
        "metadata": {
            "managedFields": [
                entry("entrepot-operator", {"f:spec": {"f:replicas": {}}}, operation="Apply"),
                entry("kube-controller-manager", {"f:metadata": {"f:annotations": {}}}),
                entry("kube-controller-manager", {"f:status": {}}, subresource="status"),
                entry("kubectl-set", env),
                entry("kubectl-patch", host),
                entry("kubectl-rollout", restart),
                entry("kubectl-label", {"f:metadata": {"f:labels": {"f:team": {}}}}),
            ]
        }
    }
    found = foreign_fields(deployment)
    assert found == {
        "kubectl-set": [
            "spec.template.spec.containers[name=mirror].env[name=HTTPS_PROXY].name",
            "spec.template.spec.containers[name=mirror].env[name=HTTPS_PROXY].value",
        ],
        "kubectl-patch": ["spec.template.spec.hostNetwork"],
    }
    text = drift_message("Deployment", "gomods", found)
    assert text.startswith("Deployment gomods: kubectl-patch set spec.template.spec.hostNetwork;")
    assert (
        "kubectl-set set spec.template.spec.containers[name=mirror].env[name=HTTPS_PROXY]" in text
    )


def test_nothing_foreign() -> None:
    assert foreign_fields({"metadata": {}}) == {}
