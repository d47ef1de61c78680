{{/* Chart name, overridable. */}}
{{- define "hss-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name, plus the chart name unless the release name already contains it. */}}
{{- define "hss-operator.fullname" -}}
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

{{- define "hss-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hss-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hss-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hss-operator.labels" -}}
helm.sh/chart: {{ include "hss-operator.chart" . }}
{{ include "hss-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: hss-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "hss-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hss-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: asked for, or more than one replica. */}}
{{- define "hss-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "hss-operator.claimsName" -}}
{{- printf "%s-claims" (include "hss-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hss-operator.leaseName" -}}
{{- default (include "hss-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "hss-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* host:port for --admin-listen; IPv6 hosts in brackets. */}}
{{- define "hss-operator.adminListen" -}}
{{- $host := .Values.admin.bindAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int .Values.admin.port) }}
{{- else }}
{{- printf "%s:%d" $host (int .Values.admin.port) }}
{{- end }}
{{- end }}

{{/*
Rules the operator needs wherever it watches ClusterScanTasks: cluster-wide in a ClusterRole,
or in a Role per watched namespace. Every verb is one the code uses (scripts/check-deploy.sh
checks the exact set): the controller lists and watches ClusterScanTasks, patches them (its
finalizer) and their status (server-side apply); the trigger controller also creates runs,
reads one back by name after a conflict and deletes old ones.
*/}}
{{- define "hss-operator.watchRules" -}}
- apiGroups: ["hss.scanops.dev"]
  resources: ["clusterscantasks"]
  {{- if .Values.triggers.enabled }}
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
  {{- else }}
  verbs: ["list", "watch", "patch"]
  {{- end }}
- apiGroups: ["hss.scanops.dev"]
  resources: ["clusterscantasks/status"]
  verbs: ["patch"]
{{- if .Values.triggers.enabled }}
- apiGroups: ["hss.scanops.dev"]
  resources: ["clusterscantriggers"]
  verbs: ["list", "watch"]
- apiGroups: ["hss.scanops.dev"]
  resources: ["clusterscantriggers/status"]
  verbs: ["patch"]
# Runs are ClusterScanTasks owned by their trigger; an owner reference with
# blockOwnerDeletion needs this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["hss.scanops.dev"]
  resources: ["clusterscantriggers/finalizers"]
  verbs: ["update"]
{{- end }}
# Credentials Secrets named by ClusterScanTasks (spec.credentialsSecretRef), read when the
# object is reconciled: get only, never list or watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events through kube's Recorder (events.k8s.io/v1): create, and patch for a repeated one.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
