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
# Put on an object by its owner to hand it over to the ModuleMirror of that name.
ADOPT_ANNOTATION = "entrepot.dev/adopt"
# "<namespace>/<name>" of the mirror a cache claim was made for: a retained claim is adopted by
# a mirror created again with that name.
MIRROR_ANNOTATION = "entrepot.dev/mirror"


@dataclass(frozen=True)
class Owner:
    """The ModuleMirror a child belongs to."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "ModuleMirror",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def selector_labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "entrepot",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": "module-mirror",
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
