{{/*
Names, labels, the image reference and the RBAC rules, defined once.
*/}}

{{- define "entrepot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: <release>-entrepot, or just <release> when it already contains the
chart name. Truncated to 63 characters (DNS label limit of some fields).
*/}}
{{- define "entrepot.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The full name with a suffix: (list . "metrics") -> <fullname>-metrics, the full name cut so
that the whole fits in 63 characters (a Service name is a DNS label). A 53-character release
name (Helm's longest) gives a 62-character full name, which alone leaves no room for one.
*/}}
{{- define "entrepot.suffixedName" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $room := int (sub 62 (len $suffix)) }}
{{- printf "%s-%s" (include "entrepot.fullname" $ctx | trunc $room | trimSuffix "-") $suffix }}
{{- end }}

{{/*
Cluster-scoped objects (ClusterRole, ClusterRoleBinding, ValidatingAdmissionPolicy) carry the
release namespace too, so two releases of the same name in different namespaces do not fight
over them. Their names may be longer than 63 characters.
*/}}
{{- define "entrepot.clusterScopedName" -}}
{{- printf "%s-%s" .Release.Namespace (include "entrepot.fullname" .) }}
{{- end }}

{{- define "entrepot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "entrepot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "entrepot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "entrepot.labels" -}}
helm.sh/chart: {{ include "entrepot.chart" . }}
{{ include "entrepot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: entrepot
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "entrepot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "entrepot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest, else repository:tag (tag defaults to the chart's appVersion). */}}
{{- define "entrepot.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "entrepot.mirrorImage" -}}
{{- default (include "entrepot.image" .) .Values.mirrorImage }}
{{- end }}

{{/* The mirror image without its tag or digest: its tags and digests are always allowed. */}}
{{- define "entrepot.mirrorRepository" -}}
{{- $image := regexReplaceAll "@.*$" (include "entrepot.mirrorImage" .) "" }}
{{- regexReplaceAll ":[^/]*$" $image "" }}
{{- end }}

{{/*
The policy as the operator reads it (ENTREPOT_POLICY, operator/entrepot_operator/policy.py):
the policy values with the mirror image's repository added to allowedImages.
*/}}
{{- define "entrepot.policyImages" -}}
{{- prepend .Values.policy.allowedImages (include "entrepot.mirrorRepository" .) | uniq | toJson }}
{{- end }}

{{- define "entrepot.policyJson" -}}
{{- $p := .Values.policy }}
{{- $images := include "entrepot.policyImages" . | fromJsonArray }}
{{- $ingress := dict "hosts" $p.ingress.hosts "classNames" $p.ingress.classNames }}
{{- dict "allowedImages" $images "serviceTypes" $p.serviceTypes "ingress" $ingress "tolerationKeys" $p.tolerationKeys "secretNamePattern" $p.secretNamePattern "bearerTokenHosts" $p.bearerTokenHosts | toJson }}
{{- end }}

{{/*
Host patterns as anchored regular expressions (JSON list): "*.example.com" matches one more
DNS label, anything else itself (policy.py's host_regex does the same).
*/}}
{{- define "entrepot.hostRegexes" -}}
{{- $out := list }}
{{- range . }}
{{- if hasPrefix "*." . }}
{{- $out = append $out (printf "^[a-z0-9]([-a-z0-9]*[a-z0-9])?%s$" (regexQuoteMeta (trimPrefix "*" .))) }}
{{- else }}
{{- $out = append $out (printf "^%s$" (regexQuoteMeta .)) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* A list for a message: "a, b", or "(none)". */}}
{{- define "entrepot.listed" -}}
{{- if . }}{{ join ", " . }}{{ else }}(none){{ end }}
{{- end }}

{{/*
RBAC. Every rule is explained in docs/helm.md and tested, rule by rule, against a table in
tests/packaging/helmchart.py. Verbs are listed explicitly: no wildcards, no Secrets.

entrepot.namespacedRules: what the operator does inside a namespace it watches. Granted
cluster-wide (ClusterRole) when watchNamespaces is empty, else by a Role in each namespace.
*/}}
{{- define "entrepot.namespacedRules" -}}
# The mirrors, of both kinds (ModuleMirror, NpmMirror): watch them, and patch them for
# kopf's annotations.
- apiGroups: [entrepot.dev]
  resources: [modulemirrors, npmmirrors]
  verbs: [get, list, watch, patch]
# Their status: conditions, observedGeneration (written with PATCH; read with the mirror
# itself).
- apiGroups: [entrepot.dev]
  resources: [modulemirrors/status, npmmirrors/status]
  verbs: [patch]
# Children carry an ownerReference with blockOwnerDeletion to their mirror; clusters with the
# OwnerReferencesPermissionEnforcement admission plugin require this for it.
- apiGroups: [entrepot.dev]
  resources: [modulemirrors/finalizers, npmmirrors/finalizers]
  verbs: [update]
# Children every mirror has: server-side apply (patch; create when absent) and observe (get,
# list, watch). Never deleted by the operator: garbage collection removes them with their
# mirror.
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# Children only some specs want: also deleted when the spec no longer wants them.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, list, watch, create, patch, delete]
# The mirrors' pods and the Events about them and their PVCs: why a mirror is not Ready
# (unschedulable, image pull, crash loop, storage pending). Read only.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Events: read (as above), and create them about the mirrors (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: [events]
  verbs: [get, list, watch, create]
{{- end }}

{{/*
entrepot.clusterRules: cluster-scoped reads. Namespaces only when watching a list: kopf then
lists and watches namespaces to match its list (refused, it retries for about a minute
before it reconciles anything); watching all, it never does (docs/helm.md, "RBAC").
*/}}
{{- define "entrepot.clusterRules" -}}
# The mirrors' CRDs fit this operator (checked at start); is the ServiceMonitor CRD
# installed? kopf also watches CRDs to notice new resources.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- if .Values.watchNamespaces }}
# kopf's namespace observer (namespaced mode only).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}

{{/*
entrepot.leaseRules: leader election, in the release namespace only: read, create, then
compare-and-swap renewals with PUT (operator/entrepot_operator/leader.py). `create` cannot be
limited to a name (the name is not known before the object exists); the rest can.
*/}}
{{- define "entrepot.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [entrepot-operator]
  verbs: [get, update]
{{- end }}
