{{- define "simrec-serving.labels" -}}
app.kubernetes.io/part-of: simrec
app.kubernetes.io/name: simrec-serve
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* A CPU quantity ("2", "1500m", "0.5") rounded up to whole threads, as simrec.serving.kserve.cpu_threads. */}}
{{- define "simrec-serving.cpuThreads" -}}
{{- $cpu := toString . -}}
{{- $millicores := 0 -}}
{{- if hasSuffix "m" $cpu -}}
{{- $millicores = trimSuffix "m" $cpu | atoi -}}
{{- else -}}
{{- $millicores = round (mulf (float64 $cpu) 1000) 0 | int -}}
{{- end -}}
{{- max 1 (div (add $millicores 999) 1000) -}}
{{- end }}
