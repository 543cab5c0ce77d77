{{/*
Name of an object: <resourceNamePrefix>-<suffix>.
Call with (dict "root" $ "suffix" "dag-processor").
*/}}
{{- define "astro-agent.name" -}}
{{- printf "%s-%s" .root.Values.resourceNamePrefix .suffix -}}
{{- end }}

{{/*
Labels that select a component's Pods. Call with (dict "root" $ "component" "worker" "queue" "default");
"queue" only for workers.
*/}}
{{- define "astro-agent.selectorLabels" -}}
app: astro-agent
component: {{ .component }}
release: {{ .root.Release.Name }}
{{- with .queue }}
queue: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Labels of every object and Pod: the selector labels plus .Values.labels. Same arguments. */}}
{{- define "astro-agent.labels" -}}
{{ include "astro-agent.selectorLabels" . }}
{{- with .root.Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
metadata of a namespaced object: name, namespace, labels and annotations (.Values.annotations merged with
the optional "annotations" argument). Call with (dict "root" $ "name" ... "component" ... ["queue" ...] ["annotations" ...]).
*/}}
{{- define "astro-agent.metadata" -}}
name: {{ .name }}
namespace: {{ .root.Values.namespace }}
labels:
  {{- include "astro-agent.labels" . | nindent 2 }}
{{- with mergeOverwrite (dict) (.root.Values.annotations | default dict) (.annotations | default dict) }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
ServiceAccount settings as JSON {create, name, annotations}: defaults create=true, name=.defaultName,
annotations = .Values.annotations + serviceAccount.annotations; then each map in .overrides (in order)
overrides create and name and adds annotations.
Call with (dict "root" $ "defaultName" ... "overrides" (list ...)).
*/}}
{{- define "astro-agent.serviceAccount" -}}
{{- $annotations := mergeOverwrite (dict) (.root.Values.annotations | default dict) ((.root.Values.serviceAccount | default dict).annotations | default dict) -}}
{{- $sa := dict "create" true "name" .defaultName "annotations" $annotations -}}
{{- range .overrides }}
{{- if hasKey . "create" }}{{ $_ := set $sa "create" .create }}{{ end }}
{{- with .name }}{{ $_ := set $sa "name" . }}{{ end }}
{{- $_ := mergeOverwrite $annotations (.annotations | default dict) }}
{{- end }}
{{- toJson $sa -}}
{{- end }}

{{/* ServiceAccount settings of a workers[] entry: serviceAccount.workers, then the entry's serviceAccount. */}}
{{- define "astro-agent.workerServiceAccount" -}}
{{- $defaults := (.root.Values.serviceAccount | default dict).workers | default dict -}}
{{- include "astro-agent.serviceAccount" (dict "root" .root
      "defaultName" (include "astro-agent.name" (dict "root" .root "suffix" (printf "worker-%s" .worker.name)))
      "overrides" (list $defaults (.worker.serviceAccount | default dict))) -}}
{{- end }}

{{/*
ServiceAccount settings of dagProcessor / triggerer / sentinel. Call with (dict "root" $ "key" "dagProcessor" "suffix" "dag-processor").
The real chart documents the Dag processor's and triggerer's default names as
<resourceNamePrefix>-<component>-<name> without saying what <name> is; here it is the release name,
so that anything that relies on those defaults instead of setting serviceAccount.<component>.name
breaks in the sandbox too.
*/}}
{{- define "astro-agent.componentServiceAccount" -}}
{{- $override := get ((.root.Values.serviceAccount | default dict)) .key | default dict -}}
{{- $default := include "astro-agent.name" (dict "root" .root "suffix" .suffix) -}}
{{- if has .key (list "dagProcessor" "triggerer") }}{{ $default = printf "%s-%s" $default .root.Release.Name }}{{ end -}}
{{- include "astro-agent.serviceAccount" (dict "root" .root "defaultName" $default "overrides" (list $override)) -}}
{{- end }}

{{/* Name of the image pull Secret: imagePullSecretName, or the chart-created one for imagePullSecretData. */}}
{{- define "astro-agent.imagePullSecretName" -}}
{{- .Values.imagePullSecretName | default (include "astro-agent.name" (dict "root" . "suffix" "image-pull-secret")) -}}
{{- end }}

{{/* Agent token env: from agentTokenSecretName, the chart Secret (agentToken), or agentTokenFile. */}}
{{- define "astro-agent.tokenEnv" -}}
{{- if or .Values.agentTokenSecretName .Values.agentToken }}
- name: ASTRO_AGENT_CLIENT_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.agentTokenSecretName | default (include "astro-agent.name" (dict "root" . "suffix" "agent-token")) }}
      key: token
{{- else if .Values.agentTokenFile }}
- name: ASTRO_AGENT_CLIENT_API_TOKEN_FILE
  value: {{ .Values.agentTokenFile | quote }}
{{- end }}
{{- end }}

{{/* OpenLineage env of the agent containers. */}}
{{- define "astro-agent.openLineageEnv" -}}
{{- $ol := .Values.openLineage | default dict }}
{{- if $ol.enabled }}
{{- range $key, $var := dict "url" "OPENLINEAGE_URL" "endpoint" "OPENLINEAGE_ENDPOINT" "namespace" "OPENLINEAGE_NAMESPACE" }}
{{- with get $ol $key }}
- name: {{ $var }}
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if or $ol.apiKeySecret $ol.apiKey }}
- name: OPENLINEAGE_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $ol.apiKeySecret | default (include "astro-agent.name" (dict "root" . "suffix" "openlineage-api-key")) }}
      key: api-key
{{- end }}
{{- else }}
- name: OPENLINEAGE_DISABLED
  value: "true"
{{- end }}
{{- end }}

{{/*
Environment of an agent container: connection, backends, logging, OpenLineage, then commonEnv, then the
component's env (a later entry with the same name wins). Call with (dict "root" $ "env" <component env list>).
*/}}
{{- define "astro-agent.agentEnv" -}}
{{- $v := .root.Values -}}
- name: ASTRO_AGENT_CLIENT_API_URL
  value: {{ $v.astroDeploymentAPIURL | quote }}
{{- include "astro-agent.tokenEnv" .root }}
- name: AIRFLOW__CORE__XCOM_BACKEND
  value: {{ $v.xcomBackend | quote }}
- name: AIRFLOW__SECRETS__BACKEND
  value: {{ $v.secretBackend | quote }}
{{- with $v.stateStoreBackend }}
- name: AIRFLOW__WORKERS__STATE_STORE_BACKEND
  value: {{ . | quote }}
{{- end }}
- name: AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST
  value: {{ $v.dagBundleConfigList | quote }}
- name: AIRFLOW__LOGGING__LOGGING_LEVEL
  value: {{ $v.logLevel | default "INFO" | quote }}
{{- include "astro-agent.openLineageEnv" .root }}
{{- with $v.commonEnv }}
{{ toYaml . }}
{{- end }}
{{- with .env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Default probe of the agent containers: GET /healthz on port 39091. */}}
{{- define "astro-agent.probe" -}}
httpGet:
  path: /healthz
  port: 39091
initialDelaySeconds: 5
periodSeconds: 5
timeoutSeconds: 5
failureThreshold: 3
{{- end }}

{{/* Default resources of the agent containers (limits = requests). */}}
{{- define "astro-agent.resources" -}}
{{- $r := dict "cpu" "1" "memory" "2Gi" "ephemeral-storage" "1Gi" -}}
{{- toYaml (dict "limits" $r "requests" $r) -}}
{{- end }}

{{/*
Deployment of an agent component (worker, dag-processor, triggerer).
Call with (dict "root" $ "name" <Deployment name> "component" <label> "command" <entrypoint command>
"values" <component values> "replicas" <int> "serviceAccountName" <name> "env" <extra env list>
["queue" <q>] ["terminationGracePeriodSeconds" <default>]).
*/}}
{{- define "astro-agent.agentDeployment" -}}
{{- $root := .root }}
{{- $c := .values }}
{{- $selector := dict "root" $root "component" .component "queue" .queue }}
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "astro-agent.metadata" (merge (dict "name" .name) $selector) | nindent 2 }}
spec:
  replicas: {{ .replicas }}
  selector:
    matchLabels:
      {{- include "astro-agent.selectorLabels" $selector | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "astro-agent.labels" $selector | nindent 8 }}
      {{- with $root.Values.annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ .serviceAccountName }}
      imagePullSecrets:
        - name: {{ include "astro-agent.imagePullSecretName" $root }}
      {{- $grace := .terminationGracePeriodSeconds }}
      {{- if hasKey $c "terminationGracePeriodSeconds" }}{{ $grace = $c.terminationGracePeriodSeconds }}{{ end }}
      {{- if not (kindIs "invalid" $grace) }}
      terminationGracePeriodSeconds: {{ $grace }}
      {{- end }}
      securityContext:
        {{- toYaml ($c.podSecurityContext | default $root.Values.podSecurityContext | default dict) | nindent 8 }}
      {{- with $c.initContainers }}
      initContainers:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ $c.image | default $root.Values.image }}
          imagePullPolicy: {{ $c.imagePullPolicy | default $root.Values.imagePullPolicy | default "IfNotPresent" }}
          args: [{{ .command | quote }}]
          ports:
            - name: agent-api
              containerPort: 39091
          env:
            {{- include "astro-agent.agentEnv" (dict "root" $root "env" (concat .env ($c.env | default list))) | nindent 12 }}
          resources:
            {{- $c.resources | default (include "astro-agent.resources" . | fromYaml) | toYaml | nindent 12 }}
          livenessProbe:
            {{- $c.livenessProbe | default (include "astro-agent.probe" . | fromYaml) | toYaml | nindent 12 }}
          readinessProbe:
            {{- $c.readinessProbe | default (include "astro-agent.probe" . | fromYaml) | toYaml | nindent 12 }}
          securityContext:
            {{- toYaml ($c.containerSecurityContext | default $root.Values.containerSecurityContext | default dict) | nindent 12 }}
          {{- with $c.volumeMounts }}
          volumeMounts:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        {{- with $c.extraContainers }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $c.volumes }}
      volumes:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
