"""reconcile() against a fake applier: each child on its own, failures in the status, names
that are not the mirror's never applied over, retained cache claims adopted."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from entrepot_operator import reconcile as rec
from entrepot_operator.metrics import OperatorMetrics
from entrepot_operator.reconcile import Outcome, claim, reconcile
from entrepot_operator.render import Owner

UID = "uid-1"
OWNER = Owner(name="gomods", namespace="builds", uid=UID)


def mirror_body(generation: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "gomods", "namespace": "builds", "uid": UID, "generation": generation},
        "spec": {"go": {"proxy": "https://proxy.example.com,direct"}, **spec},
    }


def ready_deployment(body: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["metadata"]["generation"] = 1
    out["status"] = {
        "observedGeneration": 1,
        "readyReplicas": 1,
        "updatedReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    }
    return out


class FakeApplier:
    """Objects by (kind, name); ``fail``: kind -> the ApiException its apply raises."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[str] = []
        self.fail: dict[str, ApiException] = {}
        self.gets = 0
        self._seen: dict[tuple[str, str, str], str] = {}

    def known(self, kind: str, namespace: str, name: str) -> str | None:
        return self._seen.get((kind, namespace, name))

    def remember(self, body: dict[str, Any]) -> None:
        m = body["metadata"]
        self._seen[body["kind"], m.get("namespace", "builds"), m["name"]] = "v"

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._seen.pop((kind, namespace, name), None)

    def seen(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def seen_all(self, kind: str) -> list[dict[str, Any]]:
        return [o for (k, _), o in self.objects.items() if k == kind]

    def unchanged(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return None  # every reconcile applies (the real Applier's cache: test_apply_cache)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        self.gets += 1
        return self.objects.get((kind, name))

    def apply(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        kind, name = body["kind"], body["metadata"]["name"]
        if kind in self.fail:
            raise self.fail[kind]
        self.applied.append(kind)
        result = ready_deployment(body) if kind == "Deployment" else copy.deepcopy(body)
        self.objects[kind, name] = result
        self.remember(result)
        return result, True

    def delete_if_owned(self, kind: str, name: str, namespace: str, owner_uid: str) -> bool:
        return False

    def crd_exists(self, name: str) -> bool:
        return False


def run(applier: FakeApplier, body: dict[str, Any] | None = None) -> Outcome:
    return reconcile(
        body or mirror_body(),
        applier=applier,  # type: ignore[arg-type]
        image="registry.example.com/entrepot:1",
        metrics=OperatorMetrics(),
    )


def conditions(outcome: Outcome) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in outcome.status["conditions"]}


def forbidden(message: str) -> ApiException:
    e = ApiException(status=403, reason="Forbidden")
    e.body = f'{{"kind": "Status", "message": "{message}"}}'
    return e


def test_a_healthy_reconcile_is_ready() -> None:
    applier = FakeApplier()
    out = run(applier)
    assert out.failures == []
    assert applier.applied == ["ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"]
    assert conditions(out)["Ready"]["status"] == "True"


def test_a_failing_child_does_not_stop_the_others_and_the_status_says_so() -> None:
    applier = FakeApplier()
    applier.fail["PersistentVolumeClaim"] = forbidden(
        "only dynamically provisioned pvc can be resized"
    )
    out = run(applier, mirror_body(generation=3))
    assert applier.applied == ["ConfigMap", "Deployment", "Service"]
    cond = conditions(out)
    assert cond["Ready"]["status"] == "False"
    assert cond["Ready"]["reason"] == "ApplyFailed"
    assert (
        "PersistentVolumeClaim gomods-cache: 403 only dynamically provisioned"
        in cond["Ready"]["message"]
    )
    assert cond["Degraded"]["status"] == "True"
    assert out.status["observedGeneration"] == 3
    assert [(f.kind, f.reason) for f in out.failures] == [("PersistentVolumeClaim", "ApplyFailed")]


def test_the_deployment_waits_for_its_configmap() -> None:
    applier = FakeApplier()
    applier.fail["ConfigMap"] = forbidden("quota exceeded")
    out = run(applier)
    assert "Deployment" not in applier.applied
    assert [f.kind for f in out.failures] == ["ConfigMap", "Deployment"]
    assert conditions(out)["Ready"]["message"].endswith("(and 1 more)")


def test_an_object_that_is_not_the_mirrors_is_never_applied_over() -> None:
    applier = FakeApplier()
    users = {"kind": "ConfigMap", "metadata": {"name": "gomods-config", "namespace": "builds"}}
    applier.objects["ConfigMap", "gomods-config"] = users
    out = run(applier)
    assert "ConfigMap" not in applier.applied
    assert applier.objects["ConfigMap", "gomods-config"] is users
    cond = conditions(out)
    assert (cond["Ready"]["status"], cond["Ready"]["reason"]) == ("False", "NameConflict")
    assert "entrepot.dev/adopt=gomods" in cond["Ready"]["message"]
    # Asked again on the next reconcile (not remembered as ours).
    gets = applier.gets
    run(applier)
    assert applier.gets > gets


def test_adoption_only_on_the_annotation() -> None:
    applier = FakeApplier()
    applier.objects["Service", "gomods"] = {
        "kind": "Service",
        "metadata": {"name": "gomods", "annotations": {"entrepot.dev/adopt": "gomods"}},
    }
    out = run(applier)
    assert "Service" in applier.applied
    assert out.failures == []
    other = {"entrepot.dev/adopt": "someone-else"}
    assert claim({"kind": "Service", "metadata": {"annotations": other}}, OWNER) == "conflict"


def test_claim() -> None:
    ours = {"metadata": {"ownerReferences": [{"uid": UID, "controller": True}]}}
    theirs = {
        "metadata": {
            "ownerReferences": [{"uid": "old-uid", "controller": True, "kind": "ModuleMirror"}]
        }
    }
    retained = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"annotations": {"entrepot.dev/mirror": "builds/gomods"}},
    }
    elsewhere = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"annotations": {"entrepot.dev/mirror": "other/gomods"}},
    }
    assert claim(None, OWNER) == "ours"
    assert claim(ours, OWNER) == "ours"
    assert claim(theirs, OWNER) == "conflict"  # e.g. a child of a deleted mirror being collected
    assert claim(retained, OWNER) == "adopt"
    assert claim(elsewhere, OWNER) == "conflict"
    assert claim({"kind": "ConfigMap", "metadata": retained["metadata"]}, OWNER) == "conflict"


def test_a_retained_cache_claim_is_adopted_and_owns_no_reference() -> None:
    applier = FakeApplier()
    applier.objects["PersistentVolumeClaim", "gomods-cache"] = {
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "gomods-cache",
            "annotations": {"entrepot.dev/mirror": "builds/gomods"},
        },
    }
    out = run(applier)
    assert out.failures == []
    pvc = applier.objects["PersistentVolumeClaim", "gomods-cache"]
    assert "ownerReferences" not in pvc["metadata"]  # Retain, the default
    assert pvc["metadata"]["annotations"] == {
        "entrepot.dev/mirror": "builds/gomods",
        "entrepot.dev/mirror-kind": "ModuleMirror",
    }
    run(applier, mirror_body(storage={"deletionPolicy": "Delete"}))
    pvc = applier.objects["PersistentVolumeClaim", "gomods-cache"]
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == UID


def test_a_policy_violation_applies_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        rec, "violations", lambda spec, policy, default_image, kind: ["image not allowed"]
    )
    applier = FakeApplier()
    out = run(applier)
    assert applier.applied == []
    cond = conditions(out)
    assert (cond["Ready"]["reason"], cond["Ready"]["message"]) == (
        "PolicyViolation",
        "image not allowed",
    )
    assert [f.reason for f in out.failures] == ["PolicyViolation"]


def test_a_name_that_cannot_name_a_service_is_an_invalid_spec() -> None:
    applier = FakeApplier()
    body = mirror_body()
    body["metadata"]["name"] = "my.mirror"
    out = run(applier, body)
    assert applier.applied == []
    assert out.error is not None
    assert out.error.startswith("metadata.name: ")
    assert conditions(out)["Ready"]["reason"] == "InvalidSpec"


def rolling_deployment(name: str, image: str) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "other", "generation": 2},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": image}]}}},
        "status": {"observedGeneration": 2, "updatedReplicas": 1, "readyReplicas": 0},
    }


def test_an_operator_upgrade_rolls_a_few_mirrors_at_a_time() -> None:
    applier = FakeApplier()
    old, new = "registry.example.com/entrepot:1", "registry.example.com/entrepot:2"
    run(applier)  # on the old image
    assert (
        applier.objects["Deployment", "gomods"]["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
        == old
    )
    applier.objects["Deployment", "a"] = rolling_deployment("a", new)
    applier.objects["Deployment", "b"] = rolling_deployment("b", new)

    def upgrade(limit: int, body: dict[str, Any] | None = None) -> Outcome:
        return reconcile(
            body or mirror_body(),
            applier=applier,  # type: ignore[arg-type]
            image=new,
            metrics=OperatorMetrics(),
            upgrade_limit=limit,
        )

    def image() -> str:
        d = applier.objects["Deployment", "gomods"]
        return str(d["spec"]["template"]["spec"]["containers"][0]["image"])

    out = upgrade(2)  # two others are rolling onto the new image: wait
    assert image() == old
    assert out.queued is not None
    assert "2 other mirrors are rolling" in out.queued
    progressing = conditions(out)["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("True", "UpgradeQueued")
    assert conditions(out)["Ready"]["status"] == "True"  # still serving on the old image
    out = upgrade(3)  # a third may go
    assert (image(), out.queued) == (new, None)


def test_a_chosen_image_is_not_held_back() -> None:
    applier = FakeApplier()
    run(applier)
    applier.objects["Deployment", "a"] = rolling_deployment("a", "registry.example.com/entrepot:2")
    out = reconcile(
        mirror_body(image="registry.example.com/mine:7"),
        applier=applier,  # type: ignore[arg-type]
        image="registry.example.com/entrepot:2",
        metrics=OperatorMetrics(),
        upgrade_limit=1,
    )
    assert out.queued is None
    d = applier.objects["Deployment", "gomods"]
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/mine:7"
