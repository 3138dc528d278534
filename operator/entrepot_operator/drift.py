"""Fields of a child that someone else set: read from its managedFields. Pure.

The operator applies its children with force, so a hand edit of a field it sets is put back
by the next reconcile. A field it does not set (`kubectl set env … HTTPS_PROXY=…`, a patch
adding `hostNetwork: true`) stays, owned by that other field manager: these are listed here
and reported as the mirror's Drifted condition, with who set what.
"""

from __future__ import annotations

import json
from typing import Any

from entrepot_operator import FIELD_MANAGER

# Managers whose fields are expected: ours, and the controllers that keep their own
# bookkeeping on what we make.
EXPECTED_MANAGERS = frozenset({FIELD_MANAGER, "kube-controller-manager"})
# Set on purpose by users, without harm: `kubectl rollout restart`.
EXPECTED_PATHS = ("spec.template.metadata.annotations[kubectl.kubernetes.io/restartedAt]",)


def _leaves(fields: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, sub in fields.items():
        if key == ".":
            continue
        kind, _, rest = key.partition(":")
        if kind == "f":
            path = f"{prefix}.{rest}" if prefix else rest
        elif kind == "k":
            try:
                keys = json.loads(rest)
                label = ",".join(f"{k}={v}" for k, v in keys.items())
            except (ValueError, AttributeError):
                label = rest
            path = f"{prefix}[{label}]"
        else:  # v: a value of a set
            path = f"{prefix}[{rest}]"
        if isinstance(sub, dict) and any(k != "." for k in sub):
            out += _leaves(sub, path)
        else:
            out.append(path)
    return out


def _annotation_key(path: str) -> str:
    """``…annotations.kubectl.kubernetes.io/restartedAt`` in the form of EXPECTED_PATHS."""
    head, sep, key = path.partition(".annotations.")
    return f"{head}.annotations[{key}]" if sep else path


def foreign_fields(obj: dict[str, Any]) -> dict[str, list[str]]:
    """{manager: [paths under spec]} of the fields other managers set on ``obj``."""
    found: dict[str, list[str]] = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        manager = str(entry.get("manager") or "")
        if manager in EXPECTED_MANAGERS or entry.get("subresource"):
            continue
        paths = [
            _annotation_key(p)
            for p in _leaves(entry.get("fieldsV1") or {})
            if p.startswith("spec.")
        ]
        paths = [p for p in paths if p not in EXPECTED_PATHS]
        if paths:
            found.setdefault(manager, []).extend(paths)
    return found


def drift_message(
    kind: str, name: str, found: dict[str, list[str]], *, owner: str = "ModuleMirror"
) -> str:
    """``owner``: the kind of the mirror (ModuleMirror, NpmMirror)."""
    parts = [
        f"{manager} set {', '.join(sorted(paths))}" for manager, paths in sorted(found.items())
    ]
    return (
        f"{kind} {name}: {'; '.join(parts)}. Not the {owner}'s fields, so not put back:"
        f" remove them (or delete the {kind}: it is made again), and set what you need in the"
        f" {owner}"
    )
