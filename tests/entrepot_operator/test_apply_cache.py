"""The Applier skips an apply that would change nothing: same body, child not moved since."""

from __future__ import annotations

from typing import Any

from entrepot_operator.apply import Applier


class Result:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def to_dict(self) -> dict[str, Any]:
        return self.body


class Resource:
    def __init__(self) -> None:
        self.calls = 0
        self.generation = 1

    def server_side_apply(self, body: dict[str, Any], **_: Any) -> Result:
        self.calls += 1
        out = {**body, "metadata": {**body["metadata"], "generation": self.generation}}
        return Result(out)


def applier_with(resource: Resource) -> Applier:
    a = Applier.__new__(Applier)  # no API client: only the cache is exercised
    a._seen, a._applied, a._objects, a._crds, a._unserved = {}, {}, {}, {}, {}
    a._absent = set()
    a._resource = lambda kind: resource  # type: ignore[method-assign]
    return a


def deployment(image: str = "a:1") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
    }


def test_an_unchanged_child_is_not_applied_again_until_it_moves() -> None:
    resource = Resource()
    a = applier_with(resource)
    assert a.unchanged(deployment()) is None  # never applied
    a.apply(deployment())
    assert a.unchanged(deployment()) is not None
    assert a.unchanged(deployment("a:2")) is None  # another body: apply
    # A status update seen by the watch keeps the generation: still nothing to do, and the
    # newest copy (with its status) is what reconcile gets.
    seen = {**deployment(), "metadata": {"name": "m", "namespace": "ns", "generation": 1}}
    seen["status"] = {"readyReplicas": 1}
    a.observe("Deployment", seen)
    assert a.unchanged(deployment()) == seen
    # Someone scaled it by hand: the generation moved, so it is applied again.
    a.observe("Deployment", {**seen, "metadata": {**seen["metadata"], "generation": 2}})
    assert a.unchanged(deployment()) is None
    # Deleted: forgotten.
    a.apply(deployment())
    a.forget("Deployment", "ns", "m")
    assert a.unchanged(deployment()) is None
    assert a.known("Deployment", "ns", "m") is None


def test_a_late_event_does_not_replace_a_newer_state() -> None:
    resource = Resource()
    a = applier_with(resource)
    resource.generation = 5
    a.apply(deployment("a:2"))  # the apply left generation 5
    stale = {**deployment("a:1"), "metadata": {"name": "m", "namespace": "ns", "generation": 4}}
    a.observe("Deployment", stale)  # the initial listing's event, handed over late
    seen = a.seen("Deployment", "ns", "m")
    assert seen is not None
    assert seen["spec"]["template"]["spec"]["containers"][0]["image"] == "a:2"
    newer = {
        **deployment("a:2"),
        "metadata": {"name": "m", "namespace": "ns", "generation": 5, "resourceVersion": "90"},
    }
    a.observe("Deployment", newer)
    later = {
        **newer,
        "metadata": {**newer["metadata"], "resourceVersion": "91"},
        "status": {"x": 1},
    }
    a.observe("Deployment", later)
    assert a.seen("Deployment", "ns", "m") == later
    a.observe("Deployment", newer)  # resourceVersion 90 after 91: ignored
    assert a.seen("Deployment", "ns", "m") == later
