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

{{/* host:port for --metrics-listen: admin.bindAddress with metrics.port. */}}
{{- define "hss-operator.metricsListen" -}}
{{- $host := .Values.admin.bindAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int .Values.metrics.port) }}
{{- else }}
{{- printf "%s:%d" $host (int .Values.metrics.port) }}
{{- end }}
{{- end }}

{{/* Where metrics.certSecret is mounted (--metrics-cert-dir). */}}
{{- define "hss-operator.metricsCertDir" -}}
/etc/hss-operator/metrics-tls
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
{{- /* With reports.selfClusterId the operator also lists and deletes the Reports it wrote in
affected namespaces (they carry no ownerReference). */}}
{{- $verbs := ternary (list "create" "patch" "list" "delete") (list "create" "patch") (ne (toString .Values.reports.selfClusterId) "") }}
{{- include "hss-operator.reportRules" (dict "verbs" $verbs "Values" .Values) }}
{{- end }}

{{/*
The report kinds reports.mode may write, with the given verbs: the operator applies them
(server-side apply is a patch, and one that creates the object is also authorized as a create);
the view role reads them.
*/}}
{{- define "hss-operator.reportRules" -}}
{{- $mode := .Values.reports.mode }}
{{- if or (eq $mode "auto") (eq $mode "openreports") }}
- apiGroups: ["openreports.io"]
  resources: ["reports"]
  verbs: [{{ range $i, $v := .verbs }}{{ if $i }}, {{ end }}{{ $v | quote }}{{ end }}]
{{- end }}
{{- if or (eq $mode "auto") (eq $mode "policyreport") }}
- apiGroups: ["wgpolicyk8s.io"]
  resources: ["policyreports"]
  verbs: [{{ range $i, $v := .verbs }}{{ if $i }}, {{ end }}{{ $v | quote }}{{ end }}]
{{- end }}
{{- end }}

{{/*
Default credentials without long-lived keys (credentials.source): combinations that cannot work
fail the render, naming the value to set.
*/}}
{{- define "hss-operator.validateCredentials" -}}
{{- $c := .Values.credentials }}
{{- if eq $c.source "federation" }}
{{- if not $c.federation.idpId }}
{{- fail "credentials.federation.idpId is required with credentials.source federation: the id of the IAM identity provider that trusts this cluster's ServiceAccount tokens" }}
{{- end }}
{{- if not $c.federation.audience }}
{{- fail "credentials.federation.audience is required with credentials.source federation: the identity provider's client ID, the audience of the projected ServiceAccount token" }}
{{- end }}
{{- end }}
{{- if eq $c.source "oidc" }}
{{- if not $c.oidc.providerUrn }}
{{- fail "credentials.oidc.providerUrn is required with credentials.source oidc: the URN of the IAM OpenID Connect provider" }}
{{- end }}
{{- if not $c.oidc.agencyUrn }}
{{- fail "credentials.oidc.agencyUrn is required with credentials.source oidc: the URN of the agency to assume" }}
{{- end }}
{{- if not $c.oidc.audience }}
{{- fail "credentials.oidc.audience is required with credentials.source oidc: one of the provider's client IDs, the audience of the projected ServiceAccount token" }}
{{- end }}
{{- end }}
{{- if and $c.existingSecret (not (has $c.source (list "auto" "static" "env"))) }}
{{- fail (printf "credentials.existingSecret holds long-lived keys, which credentials.source %s does not use: leave it empty (or use source auto, static or env)" $c.source) }}
{{- end }}
{{- if and $c.existingSecret (has $c.source (list "static" "env")) (ne $c.mode "env") }}
{{- fail (printf "credentials.source %s reads keys from the container's environment only: use credentials.mode env with credentials.existingSecret" $c.source) }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (eq $c.source "pod-identity") (not .Values.networkPolicy.podIdentityAgent.cidrs) }}
{{- fail "networkPolicy.podIdentityAgent.cidrs is required with credentials.source pod-identity and networkPolicy.enabled: the address of the CCE Pod Identity agent, the host of HC_CONTAINER_CREDENTIALS_FULL_URI in the operator pod's spec (kubectl get pod -o yaml)" }}
{{- end }}
{{- end }}

{{/* "true" when the operator may fall through to the SDK's chain (ECS metadata, CCE Pod Identity, ...): source auto and no Secret. */}}
{{- define "hss-operator.credentialsChain" -}}
{{- if and (eq .Values.credentials.source "auto") (not .Values.credentials.existingSecret) }}true{{ end }}
{{- end }}

{{/* Where the projected ServiceAccount token of sources federation and oidc is mounted. */}}
{{- define "hss-operator.identityTokenDir" -}}
/var/run/secrets/hss-operator/identity
{{- end }}

{{- define "hss-operator.identityTokenFile" -}}
{{- printf "%s/token" (include "hss-operator.identityTokenDir" .) }}
{{- end }}

{{/*
The projected ServiceAccount token volume, for sources federation and oidc alike. Called with
their settings (credentials.federation or credentials.oidc): audience and expirationSeconds.
*/}}
{{- define "hss-operator.identityTokenVolume" -}}
- name: identity-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .audience | quote }}
          expirationSeconds: {{ int .expirationSeconds }}
          path: token
{{- end }}
