{{- define "sockgate.labels" -}}
app.kubernetes.io/name: sockgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
