"""The operator's pure parts: the CRD (schema completeness, defaults that match the code, examples
that validate), spec parsing, conditions, deletion costs and rates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml

from medevents.backlog import Backlog, rates
from medevents.cluster import Member
from medevents.operator.scale import deletion_costs
from medevents.operator.spec import EventPipelineSpec, SpecError, WorkloadRef, parse_spec, scale_spec, tuning
from medevents.operator.status import Conditions

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "charts/medevents/crds/eventpipelines.medevents.io.yaml"
EXAMPLES = sorted((ROOT / "k8s/examples").glob("eventpipeline-*.yaml"))


def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD.read_text()))


def schema() -> dict[str, Any]:
    return dict(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def leaves(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    props = node.get("properties")
    if node.get("type") == "object" and props:
        for name, child in props.items():
            yield from leaves(child, f"{path}.{name}" if path else name)
    else:
        yield path, node


def test_crd_shape() -> None:
    body = crd()
    assert body["metadata"]["name"] == "eventpipelines.medevents.io"
    assert body["spec"]["scope"] == "Namespaced"
    assert body["spec"]["names"]["shortNames"] == ["ep"]
    version = body["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Lag", "Rate in", "Rate out", "Replicas", "Desired", "Age"]


def test_every_spec_field_has_type_description_and_default() -> None:
    spec = schema()["properties"]["spec"]
    for path, node in leaves(spec):
        assert node.get("type"), path
        assert node.get("description"), path
        if path != "processor.name":  # the one required field
            assert "default" in node, path
        if node["type"] in ("integer", "number"):
            assert "minimum" in node, path


def test_every_status_field_is_typed_and_described() -> None:
    for path, node in leaves(schema()["properties"]["status"]):
        assert node.get("type") and node.get("description"), path


def test_code_defaults_match_the_crd() -> None:
    code = msgspec.to_builtins(EventPipelineSpec(processor=WorkloadRef(name="p")))
    for path, node in leaves(schema()["properties"]["spec"]):
        if "default" not in node:
            continue
        value: Any = code
        for part in path.split("."):
            value = value[part]
        assert value == node["default"], path


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_and_parse(path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    assert body["apiVersion"] == "medevents.io/v1alpha1" and body["kind"] == "EventPipeline"
    jsonschema.validate(body, schema())
    spec = parse_spec(body["spec"])
    assert spec.processor.name


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"eventpipeline-minimal.yaml", "eventpipeline-production.yaml"}


def test_schema_rejects_out_of_range_values() -> None:
    body = {
        "apiVersion": "x",
        "kind": "EventPipeline",
        "spec": {"processor": {"name": "p"}, "stream": {"partitions": 0}},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema())


def test_spec_parsing_names_the_field() -> None:
    with pytest.raises(SpecError, match="processor"):
        parse_spec({})
    with pytest.raises(SpecError, match="minReplicas"):
        parse_spec({"processor": {"name": "p"}, "scaling": {"minReplicas": 5, "maxReplicas": 2}})
    with pytest.raises(SpecError, match="bogus"):
        parse_spec({"processor": {"name": "p"}, "bogus": 1})


def test_spec_to_policy_and_tuning() -> None:
    spec = parse_spec(
        {
            "processor": {"name": "p", "kind": "StatefulSet"},
            "scaling": {"minReplicas": 0, "maxReplicas": 9},
            "processing": {"concurrency": 100, "delayMinMs": 1000, "delayMaxMs": 3000, "maxAttempts": 7},
        }
    )
    policy = scale_spec(spec, partitions=6)
    assert (policy.min_replicas, policy.max_replicas, policy.partitions, policy.delay_s) == (0, 9, 6, 2.0)
    assert policy.fallback_rate == 50.0
    assert spec.processor.plural == "statefulsets"
    t = tuning(spec, generation=4)
    assert (t.concurrency, t.delay_min_ms, t.delay_max_ms, t.max_attempts, t.generation) == (
        100,
        1000,
        3000,
        7,
        4,
    )


def test_conditions_keep_transition_time_until_they_flip() -> None:
    c = Conditions()
    assert c.set("Degraded", False, "LagFresh", "", "t1", 1)
    assert not c.set("Degraded", False, "LagFresh", "", "t2", 1)
    assert c.get("Degraded") is not None and c.get("Degraded").last_transition_time == "t1"  # type: ignore[union-attr]
    assert c.set("Degraded", True, "ConsumerMissing", "processor-1", "t3", 1)
    c.set("StreamReady", True, "Reconciled", "", "t3", 1)
    c.derive_ready("t3", 1)
    ready = c.get("Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "ConsumerMissing")
    c.set("Degraded", False, "LagFresh", "", "t4", 1)
    c.derive_ready("t4", 1)
    assert c.is_true("Ready")
    again = Conditions(c.to_list())  # read back from the status
    assert again.to_list() == c.to_list()
    assert [d["type"] for d in c.to_list()] == ["Ready", "StreamReady", "Degraded"]
    assert c.to_list()[0]["lastTransitionTime"] == "t4"


def test_deletion_cost_is_the_events_a_pod_holds() -> None:
    def member(pod: str, in_flight: int, draining: bool = False) -> Member:
        return Member(
            id=pod + "x",
            pod=pod,
            in_flight=in_flight,
            capacity=10,
            partitions=[],
            processed_per_s=1.0,
            draining=draining,
        )

    costs = deletion_costs(["a", "b", "c"], [member("a", 5), member("a", 2), member("b", 9, draining=True)])
    assert costs == {"a": 7, "b": 0, "c": 0}


def test_rates_between_two_reads() -> None:
    first = Backlog(at=10.0, took_s=0.01, partitions=4, last_seq=100, pending=50, ack_pending=10)
    second = Backlog(at=12.0, took_s=0.01, partitions=4, last_seq=140, pending=20, ack_pending=10)
    r = rates(first, second)
    # 40 arrived in 2 s; the lag fell by 30, so 70 were processed
    assert (r.arrival, r.processing) == (20.0, 35.0)
    assert rates(None, second).arrival == 0.0
    assert second.lag == 30 and second.complete
    assert not Backlog(
        at=1, took_s=0, partitions=1, last_seq=0, pending=0, ack_pending=0, missing=("p",)
    ).complete


def test_a_read_some_leader_did_not_answer_is_partial_and_gives_no_rates() -> None:
    """A leader election leaves reads partial: marked, explained, never a rate to scale on."""
    complete = Backlog(at=10.0, took_s=0.01, partitions=4, last_seq=100, pending=50, ack_pending=10)
    leaderless = Backlog(
        at=12.0, took_s=2.0, partitions=4, last_seq=140, pending=5, ack_pending=0, leaderless=("processor-2",)
    )
    silent_stream = Backlog(
        at=12.0, took_s=2.0, partitions=4, last_seq=0, pending=5, ack_pending=0, stream_leaderless=True
    )
    for partial in (leaderless, silent_stream):
        assert not partial.complete
        assert rates(complete, partial) == rates(partial, complete) == rates(None, partial)
        assert rates(complete, partial).arrival == 0.0
    assert leaderless.gaps() == ["consumers without a leader: processor-2"]
    assert silent_stream.gaps() == ["stream EVENTS without a leader"]
    assert complete.gaps() == []


def test_status_marks_a_partial_read() -> None:
    from medevents.status import render

    status: dict[str, Any] = {
        "nats": "nats://a:4222,nats://b:4222",
        "complete": False,
        "partial": ["consumers without a leader: processor-2"],
        "partitions": 4,
        "lag": 5,
        "pending": 5,
        "ackPending": 0,
        "arrivalRate": 0.0,
        "processingRate": 0.0,
        "processors": None,
        "autoscaler": None,
    }
    text = render(status)
    assert "lag         at least 5" in text
    assert "PARTIAL     consumers without a leader: processor-2" in text
    assert "processors  unknown" in text


def test_nats_urls_lose_their_passwords_in_messages() -> None:
    from medevents.operator.pipeline import _redacted

    redacted = _redacted("nats://app:secret@nats-0:4222, tls://nats-1:4222")
    assert redacted == "nats://app:***@nats-0:4222,tls://nats-1:4222"
