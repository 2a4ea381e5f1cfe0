{{/* Labels every object carries (Kubernetes' recommended labels). */}}
{{- define "simrec.labels" -}}
app.kubernetes.io/part-of: simrec
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "simrec.mlflow.selector" -}}
app.kubernetes.io/name: mlflow
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Secret (and key) holding the backend store's URI: an existing one, or the one this chart makes. */}}
{{- define "simrec.mlflow.dbSecret" -}}
{{- .Values.mlflow.backendStore.existingSecret | default (printf "%s-db" .Values.mlflow.name) -}}
{{- end }}

{{- define "simrec.image" -}}
{{- if .digest }}{{ .repository }}@{{ .digest }}{{ else }}{{ .repository }}:{{ .tag }}{{ end -}}
{{- end }}
