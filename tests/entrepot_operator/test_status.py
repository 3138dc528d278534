"""Observed Deployment → conditions, with transition times that move only on change."""

from __future__ import annotations

from typing import Any

from entrepot_operator.status import compute_status, invalid_spec_status

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
