{{/* Chart name, overridable. */}}
{{- define "scan-engine-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects. */}}
{{- define "scan-engine-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "scan-engine-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator pods (also given to the operator as its pod labels, so
managed consoles' NetworkPolicies admit it on 3780). */}}
{{- define "scan-engine-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scan-engine-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "scan-engine-operator.labels" -}}
helm.sh/chart: {{ include "scan-engine-operator.chart" . }}
{{ include "scan-engine-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: scan-engine-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "scan-engine-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "scan-engine-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "true" when leader election is on: explicitly, or (null) with more than one replica. */}}
{{- define "scan-engine-operator.leaderElection" -}}
{{- if kindIs "bool" .Values.leaderElection.enabled -}}
{{- .Values.leaderElection.enabled -}}
{{- else -}}
{{- gt (int .Values.replicaCount) 1 -}}
{{- end -}}
{{- end -}}

{{- define "scan-engine-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "scan-engine-operator.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "scan-engine-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The operator's pod labels as `k=v,k=v` for --operator-pod-labels. */}}
{{- define "scan-engine-operator.podLabelsFlag" -}}
{{- $labels := include "scan-engine-operator.selectorLabels" . | fromYaml -}}
{{- $pairs := list -}}
{{- range $k := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $labels $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
