"""Microbenchmark of the ingest's event decoding (``decode_event``): ``python -m bench.decode``.

Times decoding a few typical bodies (the README's example, the load generator's 256-byte event, a
larger nested one) in-process, best of several repeats, in microseconds per body. Used to price
checks added to the hot path (docs/BENCHMARKS.md); not part of ``make bench``.
"""

from __future__ import annotations

import functools
import timeit

import msgspec

from medevents.loadgen.events import EventFactory
from medevents.model import decode_event

_README = (
    b'{"patientId": "patient-123", "type": "vitals",'
    b' "data": {"heartRate": 72, "bloodPressure": "120/80"}, "ts": "2025-10-01T10:30:00Z"}'
)
_NESTED = msgspec.json.encode(
    {
        "patientId": "patient-456",
        "type": "labs",
        "eventId": "lab-2025-10-01-0001",
        "data": {
            "panel": "CBC",
            "results": [
                {"code": f"L{i}", "value": i * 1.5, "unit": "g/dL", "range": {"low": 1, "high": 9}}
                for i in range(20)
            ],
            "orderedBy": {"name": "Dr. A", "dept": "ICU", "notes": "repeat at 10:00"},
        },
        "ts": "2025-10-01T10:30:00+02:00",
    }
)
BODIES = {
    "readme (120 B)": _README,
    "loadgen (256 B)": EventFactory("bench", 1000, 256).body(7, 42),
    f"nested ({len(_NESTED)} B)": _NESTED,
}


def main(repeat: int = 7, number: int = 20_000) -> None:
    for name, body in BODIES.items():
        decode_event(body)
        best = min(timeit.repeat(functools.partial(decode_event, body), repeat=repeat, number=number))
        print(f"{name:>18}: {best / number * 1e6:6.2f} us per body")


if __name__ == "__main__":
    main()
