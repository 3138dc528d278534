"""The Entrepôt operator: ModuleMirror custom resources become running Go module mirrors."""

GROUP = "entrepot.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "entrepot-operator"
