"""The two kinds of mirror, as descriptors: one pipeline (parse, render, apply, status, the
handlers, the CRD) reads everything that differs between them from here.

A ModuleMirror serves the Go module proxy; an NpmMirror serves the npm registry at its root.
They share every Kubernetes part of their spec (api.MirrorSpec), every child, the status and
the policy; they differ in their protocol settings, how those become the server's config file
(``sections``), the URL their status gives, and the ``component`` label of their children.

Both kinds name their children after the mirror (``<name>``, ``<name>-config``,
``<name>-cache``): a ModuleMirror and an NpmMirror of the same name in one namespace would
want the same objects. The one created second finds them held by the first and says so
(Ready=False, NameConflict, the usual path of reconcile.claim); a retained cache claim is
adopted only by a mirror of the kind that made it. Give the two different names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from entrepot_operator.api import MirrorSpec, ModuleMirrorSpec, NpmMirrorSpec
from entrepot_operator.render import Child, Owner, render_all
from entrepot_operator.render.configmap import Sections, go_sections, npm_sections
from entrepot_operator.render.service import registry_url, service_url


@dataclass(frozen=True)
class MirrorKind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    component: str  # app.kubernetes.io/component of its children and pods
    spec: type[MirrorSpec]
    description: str  # the CRD's, for `kubectl explain`
    url_description: str  # status.url's
    # (spec, owner) -> the server config's protocol sections; the URL the status gives.
    sections: Callable[[Any, Owner], Sections]
    url: Callable[[Any, Owner], str]

    def owner(self, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return Owner(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            kind=self.kind,
            component=self.component,
        )

    def parse(self, spec: dict[str, Any]) -> MirrorSpec:
        return self.spec.model_validate(spec)

    def render(
        self, spec: MirrorSpec, owner: Owner, *, image: str, service_monitor_available: bool
    ) -> dict[str, Child | None]:
        return render_all(
            spec,
            owner,
            sections=self.sections(spec, owner),
            image=image,
            service_monitor_available=service_monitor_available,
        )


MODULE_MIRROR = MirrorKind(
    kind="ModuleMirror",
    plural="modulemirrors",
    singular="modulemirror",
    short_names=("mm",),
    component="module-mirror",
    spec=ModuleMirrorSpec,
    description="A Go module mirror (GOPROXY) run by Entrepôt.",
    url_description="Put this in GOPROXY.",
    sections=go_sections,
    url=service_url,
)
NPM_MIRROR = MirrorKind(
    kind="NpmMirror",
    plural="npmmirrors",
    singular="npmmirror",
    short_names=("npmm",),
    component="npm-mirror",
    spec=NpmMirrorSpec,
    description="An npm registry mirror (npm_config_registry) run by Entrepôt.",
    url_description=(
        "Put this in npm_config_registry (npm config set registry): the registry URL, under"
        " which tarball URLs are written."
    ),
    sections=npm_sections,
    url=registry_url,
)
KINDS = (MODULE_MIRROR, NPM_MIRROR)
BY_KIND = {k.kind: k for k in KINDS}
BY_PLURAL = {k.plural: k for k in KINDS}
BY_COMPONENT = {k.component: k for k in KINDS}
