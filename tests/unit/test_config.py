"""Settings load from the environment and fail naming the variable."""

from __future__ import annotations

import pytest

from medevents.config import (
    IngestSettings,
    LocalSettings,
    MongoSettings,
    NatsSettings,
    OperatorSettings,
    ProcessorSettings,
    SettingsError,
    StreamSettings,
    TracingSettings,
    _Settings,
    load,
)


def test_defaults_match_the_old_demo() -> None:
    assert load(IngestSettings, {}).port == 3000
    assert load(ProcessorSettings, {}).port == 3001
    assert load(MongoSettings, {}).database == "medical_events"


def test_old_names_keep_working() -> None:
    assert load(IngestSettings, {"PORT": "8080"}).port == 8080
    settings = load(MongoSettings, {"MONGO_URI": "mongodb://db:27017/other"})
    assert (settings.uri, settings.database) == ("mongodb://db:27017/other", "other")
    assert load(StreamSettings, {"MEDEVENTS_PARTITIONS": "8"}).partitions == 8


def test_nats_fsyncs_before_acknowledging_unless_opted_out() -> None:
    assert load(LocalSettings, {}).nats_sync == "always"
    assert load(LocalSettings, {"MEDEVENTS_NATS_SYNC": "interval"}).nats_sync == "interval"


def test_prefixed_name_wins_over_alias() -> None:
    assert load(IngestSettings, {"INGEST_PORT": "1", "PORT": "2"}).port == 1


@pytest.mark.parametrize(
    ("cls", "env", "variable"),
    [
        (IngestSettings, {"PORT": "http"}, "PORT"),
        (IngestSettings, {"INGEST_PORT": "70000"}, "INGEST_PORT"),
        (StreamSettings, {"MEDEVENTS_PARTITIONS": "0"}, "MEDEVENTS_PARTITIONS"),
        (ProcessorSettings, {"PROCESSOR_CONCURRENCY": "-3"}, "PROCESSOR_CONCURRENCY"),
        (
            ProcessorSettings,
            {"PROCESSOR_DELAY_MIN_MS": "9", "PROCESSOR_DELAY_MAX_MS": "1"},
            "PROCESSOR_DELAY_MIN_MS",
        ),
        (ProcessorSettings, {"PROCESSOR_HANDLER": "nocolon"}, "PROCESSOR_HANDLER"),
        (MongoSettings, {"MONGO_URI": "postgres://x"}, "MONGO_URI"),
        (NatsSettings, {"NATS_URL": "http://x"}, "NATS_URL"),
        (NatsSettings, {"NATS_TLS_CERT_FILE": "/c"}, "NATS_TLS_CERT_FILE"),
        (NatsSettings, {"NATS_MONITOR_URL": "nats://x:8222"}, "NATS_MONITOR_URL"),
        (NatsSettings, {"NATS_MONITOR_URL": "http://a:8222,8222"}, "NATS_MONITOR_URL"),
        (IngestSettings, {"INGEST_AUTH_TOKENS_FILE": "/does/not/exist"}, "INGEST_AUTH_TOKENS_FILE"),
        (LocalSettings, {"MEDEVENTS_NATS_SYNC": "never"}, "MEDEVENTS_NATS_SYNC"),
        (TracingSettings, {"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (TracingSettings, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (
            TracingSettings,
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        (TracingSettings, {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (TracingSettings, {"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"),
    ],
)
def test_bad_value_names_the_variable(cls: type[_Settings], env: dict[str, str], variable: str) -> None:
    def load_fully() -> None:
        settings = load(cls, env)
        if isinstance(settings, IngestSettings):
            settings.tokens()

    with pytest.raises(SettingsError, match=variable):
        load_fully()


def test_tokens_from_variable_and_file(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    path = tmp_path / "tokens"
    path.write_text("t2\n\n t3 \n")
    settings = load(IngestSettings, {"INGEST_AUTH_TOKENS": "t1, ", "INGEST_AUTH_TOKENS_FILE": str(path)})
    assert settings.tokens() == ("t1", "t2", "t3")


@pytest.mark.parametrize(
    ("namespaces", "exact"),
    [
        ("", False),  # cluster-wide: kopf watches CRDs
        (" , ", False),
        ("medevents", True),  # the chart
        ("team-a, team-b", True),
        ("med-*", False),  # globs and negations need the namespace list
        ("team-a,team-?", False),
        ("!kube-system", False),
    ],
)
def test_exact_namespaces_need_no_cluster_scanning(namespaces: str, exact: bool) -> None:
    assert load(OperatorSettings, {"OPERATOR_NAMESPACES": namespaces}).exact_namespaces is exact
