{{/* The chart's name, at most 63 characters (a label value). */}}
{{- define "modelrollout.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, with the chart's name unless it already has it. */}}
{{- define "modelrollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelrollout.labels" -}}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The leader election Lease: leaderElection.leaseName, else <full name>-leader. */}}
{{- define "modelrollout.leaseName" -}}
{{- default (printf "%s-leader" (include "modelrollout.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "modelrollout.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The rules the operator needs in a namespace it watches, shared by the ClusterRole (every
namespace) and the Roles (each listed namespace). Each rule names the code that needs it.
*/}}
{{- define "modelrollout.namespacedRules" -}}
# kopf lists and watches the experiments, and patches them for its finalizer
# (modelrollout.io/finalizer) and its own annotations (last handled spec, handler progress).
- apiGroups: [modelrollout.io]
  resources: [modelexperiments]
  verbs: [list, watch, patch]
# The status subresource: kube.patch_status() writes each tick's status (reconcile.run_tick),
# and kopf keeps its handler progress under status.kopf.
- apiGroups: [modelrollout.io]
  resources: [modelexperiments/status]
  verbs: [patch]
# Events on the experiments: kopf.event/info/warn in reconcile.py (transitions, InvalidSpec,
# RouteDriftHealed, WeightsRounded) and kopf's own handler-error Events. Create only.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# The variants' Services: kube.check_references() reads each one; routing/service.py reads the
# routed Service's selector.
- apiGroups: [""]
  resources: [services]
  verbs: [get]
# provider "service": routing/service.py reads the variants' Deployments and sets their
# spec.replicas with a merge patch (not the scale subresource); kube.check_references() reads them.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, patch]
# provider "istio": routing/istio.py (via routing/_routelist.py) reads the VirtualService and
# patches its routes' weights and mirrors, guarded by resourceVersion.
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, patch]
# provider "gatewayAPI": routing/gatewayapi.py (via routing/_routelist.py) reads and patches the
# HTTPRoute; kube.traffic_target() reads it to resolve ruleIndexes to rule names.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
{{- if .Values.rbac.readCredentials }}
# metrics/credentials.py reads the Secret and ConfigMap keys that spec.metrics.prometheus names
# (bearerTokenSecretRef, caSecretRef, caConfigMapRef), and reconcile.py the Secret key of a
# notification sink's urlSecretRef, by name: get, never list or watch.
- apiGroups: [""]
  resources: [secrets, configmaps]
  verbs: [get]
{{- end }}
{{- end -}}

{{/* Cluster-scoped reads of kopf's observers (kopf/_core/reactor/observation.py). */}}
{{- define "modelrollout.observerRules" -}}
# kopf's resource observer watches CRDs to notice the ModelExperiment CRD (or a new version of
# it) appearing or changing after the operator started.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
# kopf's namespace observer lists and watches namespaces when it serves named namespaces
# (`run --namespace`), to start and stop its watches as they come and go.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end -}}
