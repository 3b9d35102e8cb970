{{/* Names, labels and the pieces every medevents pod shares. */}}

{{- define "medevents.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "medevents.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: <fullname>-<component>. Call with (list $ "ingest"). */}}
{{- define "medevents.componentName" -}}
{{- printf "%s-%s" (include "medevents.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{- define "medevents.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "medevents.selectorLabels" -}}
app.kubernetes.io/name: {{ include "medevents.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Labels of every object of one component. Call with (list $ "ingest"). */}}
{{- define "medevents.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "medevents.chart" $root }}
{{ include "medevents.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: medevents
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* metadata.annotations of every object (nothing when there are none), indented for metadata. */}}
{{- define "medevents.annotations" -}}
{{- with .Values.commonAnnotations }}
{{ printf "annotations:\n%s" (toYaml . | indent 2) | indent 2 }}
{{- end }}
{{- end -}}

{{- define "medevents.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "medevents.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s:4222" (include "medevents.componentName" (list . "nats")) -}}
{{- else -}}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* NATS monitoring URLs, one per server (in-release: each pod through the headless Service). */}}
{{- define "medevents.natsMonitorUrl" -}}
{{- if .Values.nats.enabled -}}
{{- $name := include "medevents.componentName" (list . "nats") -}}
{{- $urls := list -}}
{{- range $i, $_ := until (int .Values.nats.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless.%s.svc:8222" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- .Values.nats.monitorUrl -}}
{{- end -}}
{{- end -}}

{{- define "medevents.mongoSecretName" -}}
{{- if and (not .Values.mongodb.enabled) .Values.mongodb.existingSecret -}}
{{- .Values.mongodb.existingSecret -}}
{{- else -}}
{{- include "medevents.componentName" (list . "mongodb") -}}
{{- end -}}
{{- end -}}

{{- define "medevents.mongoSecretKey" -}}
{{- if and (not .Values.mongodb.enabled) .Values.mongodb.existingSecret -}}
{{- .Values.mongodb.existingSecretKey -}}
{{- else -}}
mongodb-uri
{{- end -}}
{{- end -}}

{{- define "medevents.hashKeySecretName" -}}
{{- default (include "medevents.componentName" (list . "hash-key")) .Values.patientHashKey.existingSecret -}}
{{- end -}}

{{- define "medevents.pipelineName" -}}
{{- default (include "medevents.fullname" .) .Values.pipeline.name -}}
{{- end -}}

{{- define "medevents.peeringName" -}}
{{- default (include "medevents.componentName" (list . "operator")) .Values.operator.peeringName -}}
{{- end -}}

{{- define "medevents.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "medevents.componentName" (list . "operator")) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* NATS connection environment (URL, credentials, TLS files). */}}
{{- define "medevents.natsEnv" -}}
- name: NATS_URL
  value: {{ include "medevents.natsUrl" . | quote }}
{{- with include "medevents.natsMonitorUrl" . }}
- name: NATS_MONITOR_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.nats.auth }}
{{- if eq .type "userPassword" }}
- name: NATS_USER
  valueFrom: {secretKeyRef: {name: {{ required "nats.auth.existingSecret is required for nats.auth.type" .existingSecret }}, key: user}}
- name: NATS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .existingSecret }}, key: password}}
{{- else if eq .type "token" }}
- name: NATS_TOKEN
  valueFrom: {secretKeyRef: {name: {{ required "nats.auth.existingSecret is required for nats.auth.type" .existingSecret }}, key: token}}
{{- else if eq .type "creds" }}
- name: NATS_CREDS_FILE
  value: /etc/medevents/nats-auth/creds
{{- end }}
{{- end }}
{{- if .Values.nats.tls.enabled }}
{{- if .Values.nats.tls.secret }}
- name: NATS_TLS_CA_FILE
  value: /etc/medevents/nats-tls/ca.crt
{{- end }}
{{- if .Values.nats.tls.mutual }}
- name: NATS_TLS_CERT_FILE
  value: /etc/medevents/nats-tls/tls.crt
- name: NATS_TLS_KEY_FILE
  value: /etc/medevents/nats-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* Stream settings, logging and the patient-hash key: the same in every medevents container. */}}
{{- define "medevents.baseEnv" -}}
- name: MEDEVENTS_PARTITIONS
  value: {{ .Values.stream.partitions | quote }}
- name: MEDEVENTS_STREAM_REPLICAS
  value: {{ .Values.stream.replicas | quote }}
- name: MEDEVENTS_STREAM_DUPLICATE_WINDOW_S
  value: {{ .Values.stream.duplicateWindowSeconds | quote }}
- name: MEDEVENTS_STREAM_MAX_AGE_S
  value: {{ .Values.stream.maxAgeSeconds | quote }}
- name: MEDEVENTS_STREAM_MAX_BYTES
  value: {{ .Values.stream.maxBytes | int64 | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: MEDEVENTS_PATIENT_HASH_KEY
  valueFrom: {secretKeyRef: {name: {{ include "medevents.hashKeySecretName" . }}, key: {{ .Values.patientHashKey.key }}}}
{{- end -}}

{{/* Environment of the data-path containers (ingest, processor): NATS, MongoDB, stream, logging. */}}
{{- define "medevents.commonEnv" -}}
{{ include "medevents.natsEnv" . }}
- name: MONGO_URI
  valueFrom: {secretKeyRef: {name: {{ include "medevents.mongoSecretName" . }}, key: {{ include "medevents.mongoSecretKey" . }}}}
{{- with .Values.mongodb.database }}
- name: MONGO_DB
  value: {{ . | quote }}
{{- end }}
{{ include "medevents.baseEnv" . }}
{{- end -}}

{{/* Volume mounts every medevents container gets: /tmp (the root filesystem is read-only), NATS secrets. */}}
{{- define "medevents.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if eq .Values.nats.auth.type "creds" }}
- name: nats-auth
  mountPath: /etc/medevents/nats-auth
  readOnly: true
{{- end }}
{{- if and .Values.nats.tls.enabled (or .Values.nats.tls.secret .Values.nats.tls.mutual) }}
- name: nats-tls
  mountPath: /etc/medevents/nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "medevents.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if eq .Values.nats.auth.type "creds" }}
- name: nats-auth
  secret:
    secretName: {{ required "nats.auth.existingSecret is required for nats.auth.type" .Values.nats.auth.existingSecret }}
    items: [{key: creds, path: creds}]
{{- end }}
{{- if and .Values.nats.tls.enabled (or .Values.nats.tls.secret .Values.nats.tls.mutual) }}
- name: nats-tls
  secret:
    secretName: {{ required "nats.tls.secret is required for mutual TLS" .Values.nats.tls.secret }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by the medevents pods. */}}
{{- define "medevents.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* Default topology spread: over nodes and zones, best effort. Call with (list $ "ingest" .constraints). */}}
{{- define "medevents.topologySpread" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $given := index . 2 -}}
topologySpreadConstraints:
{{- if $given }}
  {{- toYaml $given | nindent 2 }}
{{- else }}
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "medevents.selectorLabels" (list $root $component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Scheduling fields of one component's values (nodeSelector, tolerations, affinity). */}}
{{- define "medevents.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The restricted container securityContext. */}}
{{- define "medevents.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}
