"""The ordering fence's decision under hypothesis: a model of the stream, the store and many
workers that hold any message at any time (overlapping owners, unordered redeliveries, lost acks,
crashes), interleaved at random. Whatever happens, events are applied in stream order, each once."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from medevents.processor.fence import Decision, decide


@given(st.integers(1, 10**6), st.integers(0, 10**6), st.none() | st.integers(1, 10**6), st.booleans())
def test_decision_rules(sequence: int, watermark: int, first: int | None, gone: bool) -> None:
    if first is not None and first <= watermark:
        first = watermark + 1  # the lookup starts after the watermark
    d = decide(sequence, watermark, first, confirmed_gone=gone)
    if sequence <= watermark:
        assert d is Decision.DONE
    elif first == sequence:
        assert d is Decision.APPLY
    elif first is not None and first < sequence:
        assert d is Decision.WAIT
    else:
        assert d is (Decision.APPLY if gone else Decision.GONE)


@dataclass
class Held:
    seq: int
    phase: str = "read"  # read -> lookup -> run -> insert -> cas -> ack
    watermark: int = 0
    gone_seen: bool = False
    ran: bool = False  # the handler already ran for this holding; a lost CAS only rewrites


@dataclass
class World:
    stream: set[int]  # messages not yet acknowledged
    watermark: int = 0
    docs: dict[int, int] = field(default_factory=dict)  # seq -> times inserted successfully
    applied: list[int] = field(default_factory=list)  # successful compare-and-sets, in order
    started: list[tuple[int, frozenset[int]]] = field(default_factory=list)  # (seq, applied then)

    def step(self, h: Held, lose_ack: bool) -> bool:
        """Advance one holding by one phase; False when the worker lets go of it."""
        match h.phase:
            case "read":
                h.watermark, h.phase = self.watermark, "lookup"
            case "lookup":
                later = [s for s in self.stream if s > h.watermark]
                first = min(later) if later else None
                d = decide(h.seq, h.watermark, first, confirmed_gone=h.gone_seen)
                if d is Decision.DONE:
                    self.stream.discard(h.seq)
                    return False
                if d is Decision.WAIT:
                    h.phase = "read"
                elif d is Decision.GONE:
                    h.gone_seen, h.phase = True, "read"
                elif h.ran:
                    h.phase = "cas"
                else:
                    self.started.append((h.seq, frozenset(self.applied)))
                    h.ran, h.phase = True, "insert"
            case "insert":
                if h.seq not in self.docs:
                    self.docs[h.seq] = 1
                h.phase = "cas"
            case "cas":
                if self.watermark == h.watermark:
                    self.watermark = h.seq
                    self.applied.append(h.seq)
                    h.phase = "ack"
                elif self.watermark >= h.seq:
                    self.stream.discard(h.seq)
                    return False
                else:
                    h.watermark, h.phase = self.watermark, "lookup"
            case "ack":
                if not lose_ack:
                    self.stream.discard(h.seq)
                return False
        return True


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=8),
    st.integers(1, 4),
    st.data(),
)
def test_any_interleaving_applies_in_order_once(gaps: list[int], workers: int, data: st.DataObject) -> None:
    seqs = [sum(gaps[: i + 1]) for i in range(len(gaps))]  # one patient's sequences, with gaps
    world = World(stream=set(seqs))
    held: list[dict[int, Held]] = [{} for _ in range(workers)]
    for _ in range(data.draw(st.integers(0, 150))):
        w = data.draw(st.integers(0, workers - 1))
        action = data.draw(st.sampled_from(["deliver", "step", "step", "step", "crash"]))
        if action == "deliver" and world.stream:
            seq = data.draw(st.sampled_from(sorted(world.stream)))
            held[w].setdefault(seq, Held(seq))
        elif action == "step" and held[w]:
            seq = data.draw(st.sampled_from(sorted(held[w])))
            if not world.step(held[w][seq], lose_ack=data.draw(st.booleans())):
                del held[w][seq]
        elif action == "crash":
            held[w].clear()
    # Liveness: one healthy worker, given every remaining message, finishes the patient.
    for _ in range(10 * len(seqs) + 10):
        if not world.stream:
            break
        seq = min(world.stream)
        h = Held(seq)
        for _ in range(20):
            if not world.step(h, lose_ack=False):
                break
    assert not world.stream
    assert world.applied == seqs, "applied out of order, twice, or not at all"
    assert all(n == 1 for n in world.docs.values()) and sorted(world.docs) == seqs
    for seq, applied_then in world.started:
        assert {s for s in seqs if s < seq} <= applied_then, "ran before an earlier event was applied"
