"""Staged upgrades: a new operator image reaches the mirrors a few at a time.

The mirrors' image defaults to the operator's, so upgrading the operator changes every mirror's
Deployment at once: with one replica and `Recreate` (the default), every mirror was down at the
same time. Here a Deployment whose only pending change of image is the operator's default
keeps its current image while ``limit`` other mirrors are rolling onto the new one; the rest
of the spec still applies. A mirror with ``spec.image`` set is the user's choice and rolls at
once. Pure but for the counting, which reads the Deployments the Applier has seen.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any

DEFAULT_LIMIT = 2


def limit_from_env(environ: dict[str, str] | None = None) -> int:
    """ENTREPOT_OPERATOR_MAX_UPGRADES: mirrors rolling onto a new operator image at once
    (default 2; 0 means no limit)."""
    raw = (environ if environ is not None else os.environ).get("ENTREPOT_OPERATOR_MAX_UPGRADES")
    try:
        return DEFAULT_LIMIT if raw is None else max(0, int(raw))
    except ValueError:
        raise ValueError(f"ENTREPOT_OPERATOR_MAX_UPGRADES={raw!r}: want a whole number") from None


def image_of(deployment: dict[str, Any] | None) -> str | None:
    containers = (
        ((deployment or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers")
    ) or []
    return str(containers[0].get("image")) if containers else None


def with_image(deployment: dict[str, Any], image: str) -> dict[str, Any]:
    held = copy.deepcopy(deployment)
    held["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return held


def rolling(deployment: dict[str, Any]) -> bool:
    """Not yet every replica updated and ready (or the controller has not seen the change)."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    want = int((deployment.get("spec") or {}).get("replicas") or 1)
    return (
        int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0)
        or int(status.get("updatedReplicas") or 0) < want
        or int(status.get("readyReplicas") or 0) < want
    )


def may_roll(*, image: str, others: Iterable[dict[str, Any]], limit: int) -> tuple[bool, int]:
    """May one more mirror roll onto ``image``? (yes or no, how many are rolling onto it)."""
    busy = sum(1 for d in others if image_of(d) == image and rolling(d))
    return (limit == 0 or busy < limit), busy
