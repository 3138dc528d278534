"""Names, labels and owner references shared by every child."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entrepot_operator import API_VERSION

CONFIG_PATH = "/etc/entrepot/config.yaml"
SECRETS_DIR = "/etc/entrepot/secrets"
CACHE_DIR = "/var/cache/entrepot"
PORT = 8080
CONFIG_HASH_ANNOTATION = "entrepot.dev/config-hash"
# Put on an object by its owner to hand it over to the mirror of that name.
ADOPT_ANNOTATION = "entrepot.dev/adopt"
# "<namespace>/<name>" of the mirror a cache claim was made for, and its kind (absent: a
# ModuleMirror, which did not write it before NpmMirrors existed): a retained claim is adopted
# by a mirror of that kind created again with that name, never by the other kind.
MIRROR_ANNOTATION = "entrepot.dev/mirror"
MIRROR_KIND_ANNOTATION = "entrepot.dev/mirror-kind"


@dataclass(frozen=True)
class Owner:
    """The mirror a child belongs to: its kind (ModuleMirror, NpmMirror) and the component
    label of its children (kinds.py gives both)."""

    name: str
    namespace: str
    uid: str
    kind: str = "ModuleMirror"
    component: str = "module-mirror"

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def selector_labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "entrepot",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": owner.component,
    }


def labels(owner: Owner) -> dict[str, str]:
    return {
        **selector_labels(owner),
        "app.kubernetes.io/part-of": "entrepot",
        "app.kubernetes.io/managed-by": "entrepot-operator",
    }


def metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner),
        "ownerReferences": [owner.reference()],
    }


def config_name(owner: Owner) -> str:
    return f"{owner.name}-config"


def cache_claim_name(owner: Owner) -> str:
    return f"{owner.name}-cache"
