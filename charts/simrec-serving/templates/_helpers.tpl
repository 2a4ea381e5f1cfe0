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

{{/* vectorEngine refused as simrec.config refuses evaluate.vector_engine, with the value's name. */}}
{{- define "simrec-serving.checkVectorEngine" -}}
{{- $engine := .Values.vectorEngine | default dict -}}
{{- with $engine.uri -}}
{{- if not (regexMatch "^\\S+$" (toString .)) -}}
{{- fail (printf "vectorEngine.uri %q: no spaces, e.g. http://milvus.milvus:19530" (toString .)) -}}
{{- end -}}
{{- if regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" (toString .) -}}
{{- fail "vectorEngine.uri carries credentials (user:password@): give the token by vectorEngine.tokenSecret instead" -}}
{{- end -}}
{{- end -}}
{{- with $engine.tokenSecret -}}
{{- if not $engine.uri -}}
{{- fail "vectorEngine.tokenSecret needs vectorEngine.uri (the deploy step sets both from evaluate.vector_engine)" -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$" (toString .)) -}}
{{- fail (printf "vectorEngine.tokenSecret %q is not a Secret name (lower-case letters, digits, '-', '.')" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- end }}
