"""Observed Deployment → conditions, with transition times that move only on change."""

from __future__ import annotations

from typing import Any

from entrepot_operator.status import compute_status, invalid_spec_status, not_ready_cause

T0, T1 = "2026-11-22T00:00:00Z", "2026-11-22T00:05:00Z"


def deployment(
    *,
    ready: int,
    updated: int,
    available: bool,
    generation: int = 1,
    observed: int = 1,
    extra: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    conditions = [{"type": "Available", "status": "True" if available else "False"}]
    return {
        "metadata": {"generation": generation},
        "status": {
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "observedGeneration": observed,
            "conditions": conditions + (extra or []),
        },
    }


def by_type(status: Any) -> dict[str, Any]:
    return {c.type: c for c in status.conditions}


def compute(dep: dict[str, Any] | None, previous: list[Any] | None = None, now: str = T0) -> Any:
    return compute_status(
        generation=3,
        replicas=2,
        url="http://m.ns.svc:8080",
        config_hash="abc",
        deployment=dep,
        previous=previous or [],
        now=now,
    )


def test_no_deployment_yet() -> None:
    c = by_type(compute(None))
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "Creating")
    assert c["Progressing"].status == "True"


def test_ready_and_stable() -> None:
    status = compute(deployment(ready=2, updated=2, available=True))
    c = by_type(status)
    assert (c["Ready"].status, c["Progressing"].status, c["Degraded"].status) == (
        "True",
        "False",
        "False",
    )
    assert status.ready_replicas == 2
    assert status.url == "http://m.ns.svc:8080"
    assert all(x.observed_generation == 3 for x in status.conditions)


def test_rolling_out_is_progressing_but_still_ready() -> None:
    c = by_type(compute(deployment(ready=1, updated=1, available=True)))
    assert c["Ready"].status == "True"
    assert (c["Progressing"].status, c["Progressing"].reason) == ("True", "RollingOut")


def test_stuck_rollout_is_degraded() -> None:
    stuck = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet has timed out progressing",
    }
    c = by_type(compute(deployment(ready=0, updated=0, available=False, extra=[stuck])))
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "RolloutFailed")
    assert "timed out" in c["Degraded"].message


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = compute(deployment(ready=2, updated=2, available=True), now=T0)
    again = compute(deployment(ready=2, updated=2, available=True), first.conditions, now=T1)
    assert by_type(again)["Ready"].last_transition_time == T0
    down = compute(deployment(ready=0, updated=2, available=False), again.conditions, now=T1)
    assert by_type(down)["Ready"].last_transition_time == T1


def test_invalid_spec_is_reported_not_crashed_on() -> None:
    c = by_type(invalid_spec_status(generation=4, message="go.proxy: bad", previous=[], now=T0))
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "InvalidSpec")
    assert c["Degraded"].message == "go.proxy: bad"


# --- why pods are not ready ---------------------------------------------------------------


def pod(name: str = "m-1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def event(kind: str, name: str, reason: str, message: str, at: str = T0) -> dict[str, Any]:
    return {
        "type": "Warning",
        "reason": reason,
        "message": message,
        "lastTimestamp": at,
        "involvedObject": {"kind": kind, "name": name},
    }


def test_a_pending_claim_is_the_cause_with_its_events_words() -> None:
    claim = {"metadata": {"name": "m-cache"}, "status": {"phase": "Pending"}}
    events = [
        event("PersistentVolumeClaim", "m-cache", "ProvisioningFailed", "old", T0),
        event(
            "PersistentVolumeClaim",
            "m-cache",
            "ProvisioningFailed",
            'storageclass.storage.k8s.io "shared-files" not found',
            T1,
        ),
    ]
    unscheduled = pod(conditions=[{"type": "PodScheduled", "status": "False", "message": "x"}])
    reason, message = not_ready_cause(pods=[unscheduled], claim=claim, events=events) or ("", "")
    assert reason == "StoragePending"
    assert message == (
        'PersistentVolumeClaim m-cache is Pending: storageclass.storage.k8s.io "shared-files"'
        " not found"
    )


def test_pod_causes() -> None:
    unscheduled = pod(
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity",
            }
        ]
    )
    assert not_ready_cause(pods=[unscheduled], claim=None, events=[]) == (
        "Unschedulable",
        "pod m-1: 0/3 nodes are available: 3 node(s) didn't match Pod's node affinity",
    )

    def waiting(reason: str, message: str = "", **more: Any) -> dict[str, Any]:
        state = {"waiting": {"reason": reason, "message": message}}
        return pod(containerStatuses=[{"name": "mirror", "state": state, **more}])

    assert not_ready_cause(
        pods=[waiting("ImagePullBackOff", "Back-off pulling image")], claim=None, events=[]
    ) == (
        "ImagePullBackOff",
        "pod m-1: Back-off pulling image",
    )
    crashing = waiting(
        "CrashLoopBackOff",
        "back-off 5m0s",
        lastState={"terminated": {"exitCode": 2, "message": "config: unknown key"}},
    )
    assert not_ready_cause(pods=[crashing], claim=None, events=[]) == (
        "CrashLoopBackOff",
        "pod m-1: back-off 5m0s; last exit code 2: config: unknown key",
    )
    config = waiting("CreateContainerConfigError", 'secret "netrc" not found')
    assert not_ready_cause(pods=[config], claim=None, events=[]) == (
        "SecretMissing",
        'pod m-1: secret "netrc" not found',
    )
    mounting = [
        event("Pod", "m-1", "FailedMount", 'MountVolume.SetUp failed: secret "tok" not found')
    ]
    assert not_ready_cause(pods=[pod()], claim=None, events=mounting) == (
        "SecretMissing",
        'pod m-1: MountVolume.SetUp failed: secret "tok" not found',
    )
    probe = [
        event(
            "Pod",
            "m-1",
            "Unhealthy",
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
        )
    ]
    assert not_ready_cause(pods=[pod()], claim=None, events=probe) == (
        "ReadinessFailing",
        "pod m-1: Readiness probe failed: HTTP probe failed with statuscode: 503",
    )
    assert not_ready_cause(pods=[pod()], claim=None, events=[]) is None


def test_the_cause_is_the_ready_reason_and_a_passed_deadline_is_never_stable() -> None:
    stuck = deployment(
        ready=0,
        updated=1,
        available=False,
        extra=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "m-1" has timed out progressing.',
            }
        ],
    )
    status = compute(stuck)
    assert by_type(status)["Progressing"].reason == "ProgressDeadlineExceeded"
    cause = ("Unschedulable", "pod m-1: 0/3 nodes are available")
    status = compute_status(
        generation=3,
        replicas=1,
        url="http://m.ns.svc:8080",
        config_hash="abc",
        deployment=stuck,
        previous=[],
        now=T0,
        cause=cause,
    )
    ready = by_type(status)["Ready"]
    assert (ready.reason, ready.message) == (
        "Unschedulable",
        "0/1 pods ready; pod m-1: 0/3 nodes are available",
    )
    assert "0/3 nodes are available" in by_type(status)["Degraded"].message
