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
Cluster-scoped objects (ClusterRole, ClusterRoleBinding) carry the release namespace too, so
two releases of the same name in different namespaces do not fight over them.
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

{{/*
RBAC. Every rule is explained in docs/helm.md and tested, rule by rule, against a table in
tests/packaging/helmchart.py. Verbs are listed explicitly: no wildcards, no Secrets.

entrepot.namespacedRules: what the operator does inside a namespace it watches. Granted
cluster-wide (ClusterRole) when watchNamespaces is empty, else by a Role in each namespace.
*/}}
{{- define "entrepot.namespacedRules" -}}
# ModuleMirrors: watch them, and patch them for kopf's finalizer and annotations.
- apiGroups: [entrepot.dev]
  resources: [modulemirrors]
  verbs: [get, list, watch, patch]
# ModuleMirror status: conditions, observedGeneration.
- apiGroups: [entrepot.dev]
  resources: [modulemirrors/status]
  verbs: [get, patch]
# Children carry an ownerReference with blockOwnerDeletion to their ModuleMirror; clusters
# with the OwnerReferencesPermissionEnforcement admission plugin require this for it.
- apiGroups: [entrepot.dev]
  resources: [modulemirrors/finalizers]
  verbs: [update]
# Children: server-side apply (patch; create when absent), observe (get, list, watch), and
# delete what the spec no longer wants.
- apiGroups: [""]
  resources: [configmaps, services, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
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
# Events about ModuleMirrors (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/*
entrepot.clusterRules: cluster-scoped reads. Namespaces only when watching a list: kopf then
lists and watches namespaces to match its list (refused, it retries for about a minute
before it reconciles anything); watching all, it never does (docs/helm.md, "RBAC").
*/}}
{{- define "entrepot.clusterRules" -}}
# Is the ServiceMonitor CRD installed? kopf also watches CRDs to notice new resources.
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
