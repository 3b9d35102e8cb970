"""Settings: one Struct per concern, all loaded from environment variables here and only here.

Each field's environment variable is the Struct's ``ENV_PREFIX`` plus the field name in upper case;
``ENV_ALIASES`` keeps the old demo's names (``PORT``, ``MONGO_URI``) working. A malformed or
out-of-range value stops start-up with a :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

__all__ = [
    "AutoscaleSettings",
    "IngestSettings",
    "LocalSettings",
    "LogSettings",
    "MongoSettings",
    "NatsSettings",
    "OperatorSettings",
    "ProcessorSettings",
    "SettingsError",
    "StreamSettings",
    "TracingSettings",
    "load",
    "redact_url",
]

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]


class SettingsError(Exception):
    """A setting is malformed or out of range; the message names the variable."""


def redact_url(url: str) -> str:
    """``url`` with any password or token in it replaced by ``***``, to print or log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, _ = userinfo.partition(":")
    hidden = f"{user}:***" if sep else "***"
    return parts._replace(netloc=f"{hidden}@{host}").geturl()


class _Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ENV_PREFIX: ClassVar[str] = ""
    ENV_ALIASES: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    @classmethod
    def env_names(cls, field: str) -> tuple[str, ...]:
        """The variables that set ``field``, the first present one wins."""
        return (cls.ENV_PREFIX + field.upper(), *cls.ENV_ALIASES.get(field, ()))


class NatsSettings(_Settings, frozen=True):
    ENV_PREFIX = "NATS_"

    url: str = "nats://127.0.0.1:4222"  # server URL(s), comma separated
    user: str = ""  # user name for user/password auth
    password: str = ""  # password for user/password auth
    token: str = ""  # token auth
    creds_file: str = ""  # path of a .creds file (JWT + nkey seed)
    nkey_seed_file: str = ""  # path of an nkey seed file
    tls_ca_file: str = ""  # CA bundle that signs the server certificate; enables TLS
    tls_cert_file: str = ""  # client certificate for mutual TLS
    tls_key_file: str = ""  # client key for mutual TLS
    connect_timeout_s: Positive = 2.0  # seconds for one connection attempt
    request_timeout_s: Positive = 5.0  # seconds for a JetStream API request
    # Monitoring URL(s) of the NATS servers (http://host:8222), comma separated, one per server:
    # read to check that JetStream fsyncs before it acknowledges. Empty: not checked.
    monitor_url: str = ""

    def __post_init__(self) -> None:
        for url in self.servers:
            if urlsplit(url).scheme not in ("nats", "tls", "ws", "wss"):
                raise SettingsError(
                    f"NATS_URL: expected nats://host:port (comma separated), got {redact_url(url)!r}"
                )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE: set both or neither")
        for url in self.monitor_url.split(","):
            parts = urlsplit(url.strip())
            if url.strip() and (parts.scheme not in ("http", "https") or not parts.hostname):
                raise SettingsError(
                    "NATS_MONITOR_URL: expected http://host:8222 (comma separated, one per server), "
                    f"got {redact_url(url.strip())!r}"
                )

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]


class StreamSettings(_Settings, frozen=True):
    """The JetStream stream `EVENTS`; the stream, once created, is the source of truth."""

    ENV_PREFIX = "MEDEVENTS_STREAM_"
    ENV_ALIASES = {"partitions": ("MEDEVENTS_PARTITIONS",)}

    partitions: Annotated[int, Meta(ge=1, le=1024)] = 16  # patient shards, fixed at creation
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1  # stream replicas (3 on a cluster)
    duplicate_window_s: Positive = 120.0  # seconds a Nats-Msg-Id is remembered
    max_age_s: NonNegative = 0.0  # seconds an unprocessed event is kept, 0 = forever
    max_bytes: Annotated[int, Meta(ge=-1)] = -1  # stream size cap in bytes, -1 = none


class MongoSettings(_Settings, frozen=True):
    ENV_PREFIX = "MONGO_"

    uri: str = "mongodb://127.0.0.1:27017/medical_events"  # MONGO_URI, as in the old demo
    db: str = ""  # database name; default: the URI's path, else medical_events
    timeout_ms: Annotated[int, Meta(ge=100)] = 5000  # server selection and socket timeout

    def __post_init__(self) -> None:
        if urlsplit(self.uri).scheme not in ("mongodb", "mongodb+srv"):
            raise SettingsError(
                f"MONGO_URI: expected mongodb://... or mongodb+srv://..., got {redact_url(self.uri)!r}"
            )

    @property
    def database(self) -> str:
        return self.db or urlsplit(self.uri).path.lstrip("/") or "medical_events"


class LogSettings(_Settings, frozen=True):
    ENV_PREFIX = "LOG_"
    ENV_ALIASES = {"patient_hash_key": ("MEDEVENTS_PATIENT_HASH_KEY",)}

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # LOG_LEVEL
    # Key of the patient-id hash in logs; set the same value everywhere to correlate across
    # processes. Empty: a random key per process (hashes then correlate within one process only).
    patient_hash_key: str = ""


class IngestSettings(_Settings, frozen=True):
    ENV_PREFIX = "INGEST_"
    ENV_ALIASES = {"port": ("PORT",), "host": ("HOST",)}

    host: str = "0.0.0.0"  # listen address
    port: Port = 3000  # listen port (PORT, as in the old demo)
    workers: Annotated[int, Meta(ge=1, le=64)] = 1  # uvicorn worker processes
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 256 * 1024  # POST /events body cap (413 beyond)
    max_batch_bytes: Annotated[int, Meta(ge=1024)] = 16 * 1024 * 1024  # POST /events/batch body cap
    batch_max_items: Annotated[int, Meta(ge=1, le=100_000)] = 1000  # events per batch request
    body_timeout_s: Positive = 10.0  # seconds to receive a whole body (408 beyond: slow clients)
    publish_timeout_s: Positive = 5.0  # seconds to wait for the JetStream PubAck (503 beyond)
    max_pending_publishes: Annotated[int, Meta(ge=1)] = 4000  # publishes awaiting a PubAck at once
    retry_after_s: Annotated[int, Meta(ge=1)] = 2  # Retry-After on 503
    auth_tokens: str = ""  # bearer tokens, comma separated; empty with no file = auth off
    auth_tokens_file: str = ""  # file with one bearer token per line (a mounted Secret), re-read on change
    rate_limit_per_s: NonNegative = 0.0  # requests per second per token (per address if auth is off); 0 = off
    rate_limit_burst: Annotated[int, Meta(ge=1)] = 100  # requests a client may send at once before the limit

    def tokens(self) -> tuple[str, ...]:
        """Every accepted bearer token, from the variable and the file. A configured file that
        cannot be read or holds no token is an error: it must never turn authentication off."""
        found = [t.strip() for t in self.auth_tokens.split(",")]
        if self.auth_tokens_file:
            try:
                with open(self.auth_tokens_file, encoding="utf-8") as f:
                    from_file = [line.strip() for line in f if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
                raise SettingsError(f"INGEST_AUTH_TOKENS_FILE: cannot read: {reason}") from exc
            if not from_file:
                raise SettingsError("INGEST_AUTH_TOKENS_FILE: the file holds no token")
            found += from_file
        return tuple(t for t in found if t)


class ProcessorSettings(_Settings, frozen=True):
    ENV_PREFIX = "PROCESSOR_"
    ENV_ALIASES = {"port": ("PORT",), "host": ("HOST",)}

    host: str = "0.0.0.0"  # listen address of the health/metrics server
    port: Port = 3001  # health/metrics port (PORT, as in the old demo)
    handler: str = "medevents.processor.handlers:simulate"  # module:function of the async handler
    concurrency: Annotated[int, Meta(ge=1, le=100_000)] = 5000  # events in flight per pod (README: sizing)
    delay_min_ms: Annotated[int, Meta(ge=0)] = 5000  # simulated processing time, lower bound
    delay_max_ms: Annotated[int, Meta(ge=0)] = 6000  # simulated processing time, upper bound
    max_attempts: Annotated[int, Meta(ge=1)] = 5  # same error this often -> dead letter
    ack_wait_s: Annotated[float, Meta(ge=1)] = 30.0  # JetStream ack wait; heartbeats keep work alive
    shutdown_grace_s: NonNegative = 25.0  # seconds to finish held work on SIGTERM
    member_ttl_s: Annotated[float, Meta(ge=1)] = 10.0  # membership heartbeat expiry
    member_id: str = ""  # unique member id; default: HOSTNAME + a random suffix
    max_ack_pending: Annotated[int, Meta(ge=1)] = 5000  # per partition consumer, when creating it
    fetch_batch: Annotated[int, Meta(ge=1, le=10_000)] = 256  # most messages one pull asks for
    retry_initial_ms: Annotated[int, Meta(ge=1)] = 100  # first back-off after a transient error
    retry_max_ms: Annotated[int, Meta(ge=1)] = 10_000  # back-off cap for transient errors
    write_batch: Annotated[int, Meta(ge=1, le=10_000)] = 256  # events per batched MongoDB write
    write_window_ms: NonNegative = 5.0  # how long a write batch waits to fill up
    read_window_ms: NonNegative = 2.0  # how long a batched watermark read waits to fill up
    unhealthy_after_s: Positive = 30.0  # /readyz fails when transient errors last this long

    def __post_init__(self) -> None:
        if self.delay_min_ms > self.delay_max_ms:
            raise SettingsError(
                "PROCESSOR_DELAY_MIN_MS, PROCESSOR_DELAY_MAX_MS: the minimum "
                f"({self.delay_min_ms}) must not exceed the maximum ({self.delay_max_ms})"
            )
        if self.retry_initial_ms > self.retry_max_ms:
            raise SettingsError(
                "PROCESSOR_RETRY_INITIAL_MS, PROCESSOR_RETRY_MAX_MS: the initial back-off "
                f"({self.retry_initial_ms}) must not exceed the cap ({self.retry_max_ms})"
            )
        if ":" not in self.handler:
            raise SettingsError(f"PROCESSOR_HANDLER: expected module:function, got {self.handler!r}")


class AutoscaleSettings(_Settings, frozen=True):
    """The local autoscaler of ``medevents up`` (on Kubernetes the EventPipeline spec decides)."""

    ENV_PREFIX = "MEDEVENTS_AUTOSCALE_"

    enabled: bool = True  # let the backlog start and stop local processor processes
    min_processors: Annotated[int, Meta(ge=0, le=64)] = 1  # fewest processors; 0 = stop all when idle
    max_processors: Annotated[int, Meta(ge=1, le=64)] = 4  # most processors (each is a process)
    target_drain_s: Annotated[float, Meta(ge=1)] = 30.0  # drain the backlog within this many seconds
    poll_s: Annotated[float, Meta(ge=0.1, le=60)] = 2.0  # seconds between two decisions
    scale_down_window_s: NonNegative = 30.0  # scale down only to the highest target seen this long
    max_scale_down_step: Annotated[int, Meta(ge=1)] = 1  # processors stopped per decision
    idle_s: NonNegative = 120.0  # with min 0: no lag and no arrivals this long -> no processors

    def __post_init__(self) -> None:
        if self.min_processors > self.max_processors:
            raise SettingsError(
                "MEDEVENTS_AUTOSCALE_MIN_PROCESSORS, MEDEVENTS_AUTOSCALE_MAX_PROCESSORS: the minimum "
                f"({self.min_processors}) must not exceed the maximum ({self.max_processors})"
            )


class LocalSettings(_Settings, frozen=True):
    """The servers ``medevents up`` runs itself (and the tests start the same way)."""

    ENV_PREFIX = "MEDEVENTS_"

    # When the embedded nats-server fsyncs a publish: `always` = before it acknowledges it, so a
    # 202 survives a power failure; `interval` = nats-server's own default (every 2 minutes), an
    # explicit opt-out that loses the accepted events of the last two minutes on a power failure.
    nats_sync: Literal["always", "interval"] = "always"


class OperatorSettings(_Settings, frozen=True):
    """The kopf operator (``medevents operator``); each EventPipeline carries its own NATS settings."""

    ENV_PREFIX = "OPERATOR_"

    namespaces: str = ""  # namespaces to watch, comma separated (globs allowed); empty = all
    kube_api_url: str = ""  # Kubernetes API URL; empty = in-cluster service account, else kubeconfig
    kube_insecure: bool = False  # skip TLS verification of kube_api_url (tests and local clusters only)
    liveness_port: Port = 8080  # /healthz for the liveness probe; 0 = off
    metrics_port: Port = 8081  # Prometheus /metrics (lag, rates, replicas per EventPipeline); 0 = off
    peering: str = "medevents-operator"  # KopfPeering object for leader election among replicas
    standalone: bool = False  # run without peering (one replica only)
    watch_server_timeout_s: Annotated[float, Meta(ge=1)] = 300.0  # the API server closes watches after this
    watch_client_timeout_s: Annotated[float, Meta(ge=1)] = 330.0  # give up on a silent watch after this
    request_timeout_s: Positive = 10.0  # Kubernetes API requests of the operator's own client

    def __post_init__(self) -> None:
        if self.kube_api_url and urlsplit(self.kube_api_url).scheme not in ("http", "https"):
            raise SettingsError(
                f"OPERATOR_KUBE_API_URL: expected https://host:port, got {self.kube_api_url!r}"
            )
        if self.watch_client_timeout_s <= self.watch_server_timeout_s:
            raise SettingsError(
                "OPERATOR_WATCH_CLIENT_TIMEOUT_S: must exceed OPERATOR_WATCH_SERVER_TIMEOUT_S "
                f"({self.watch_server_timeout_s:g}), so the server ends watches cleanly first"
            )

    @property
    def namespace_patterns(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]

    @property
    def exact_namespaces(self) -> bool:
        """Namespaces are given, each by its name (no glob, no negation): kopf then needs to
        observe neither namespaces nor CRDs, so the operator needs no cluster-scoped rights."""
        patterns = self.namespace_patterns
        return bool(patterns) and not any(c in p for p in patterns for c in "*?!")


class TracingSettings(_Settings, frozen=True):
    """OpenTelemetry tracing, by the standard ``OTEL_*`` variables (the SDK reads the rest: headers,
    timeouts, sampler, batch sizes). Off unless an OTLP endpoint or an exporter is named."""

    ENV_PREFIX = "OTEL_"

    sdk_disabled: bool = False  # OTEL_SDK_DISABLED=true: off, whatever else is set
    traces_exporter: str = ""  # otlp, console (comma separated) or none; empty: otlp if an endpoint is set
    exporter_otlp_endpoint: str = ""  # OTLP base URL, e.g. http://collector:4318
    exporter_otlp_traces_endpoint: str = ""  # OTLP traces URL (overrides the base URL for traces)
    exporter_otlp_protocol: str = ""  # http/protobuf (default) or grpc (needs the grpc exporter)
    exporter_otlp_traces_protocol: str = ""  # the same, for traces only
    service_name: str = ""  # overrides the component's name (medevents-ingest, -processor, -operator)
    resource_attributes: str = ""  # key=value,... added to every span's resource

    def __post_init__(self) -> None:
        unknown = [e for e in self.exporters_named if e not in ("otlp", "console", "none")]
        if unknown:
            raise SettingsError(
                f"OTEL_TRACES_EXPORTER: expected otlp, console or none, got {self.traces_exporter!r}"
            )
        if self.protocol not in ("http/protobuf", "grpc"):
            raise SettingsError(
                f"{self.protocol_variable}: expected http/protobuf or grpc, got {self.protocol!r}"
            )
        for name, url in (
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.exporter_otlp_endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", self.exporter_otlp_traces_endpoint),
        ):
            if url and urlsplit(url).scheme not in ("http", "https"):
                raise SettingsError(
                    f"{name}: expected http://host:port or https://..., got {redact_url(url)!r}"
                )

    @property
    def exporters_named(self) -> list[str]:
        return [e.strip().lower() for e in self.traces_exporter.split(",") if e.strip()]

    @property
    def exporters(self) -> list[str]:
        """The exporters to run: those named, else ``otlp`` when an endpoint is set, else none."""
        named = [e for e in self.exporters_named if e != "none"]
        if self.exporters_named:
            return named
        return ["otlp"] if self.exporter_otlp_endpoint or self.exporter_otlp_traces_endpoint else []

    @property
    def wanted(self) -> bool:
        return not self.sdk_disabled and bool(self.exporters)

    @property
    def trigger(self) -> str:
        """The variable that turned tracing on (for error messages)."""
        if self.traces_exporter:
            return "OTEL_TRACES_EXPORTER"
        if self.exporter_otlp_traces_endpoint:
            return "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        return "OTEL_EXPORTER_OTLP_ENDPOINT"

    @property
    def protocol(self) -> str:
        return (self.exporter_otlp_traces_protocol or self.exporter_otlp_protocol or "http/protobuf").lower()

    @property
    def protocol_variable(self) -> str:
        if self.exporter_otlp_traces_protocol:
            return "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        return "OTEL_EXPORTER_OTLP_PROTOCOL"


S = TypeVar("S", bound=_Settings)

_AT_FIELD = re.compile(r" - at `\$\.(\w+)`$")


def load(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build ``cls`` from the environment; raise :class:`SettingsError` naming a bad variable."""
    env = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    source: dict[str, str] = {}
    for info in msgspec.structs.fields(cls):
        for name in cls.env_names(info.name):
            if name in env:
                raw[info.name], source[info.name] = env[name], name
                break
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT_FIELD.search(message)
        if match is None:
            raise SettingsError(message) from None
        field = match.group(1)
        variable = source.get(field, cls.env_names(field)[0])
        expected = message[: match.start()]
        raise SettingsError(f"{variable}: {expected.lower()}, got {raw.get(field)!r}") from None
