"""Benchmark 5, autoscaling: our ScalePolicy against a KEDA-like scaler (the NATS JetStream scaler
under the Kubernetes HPA with their defaults) on the same burst, in simulated time.

The simulation is the operator's own (``tests/unit/test_scaling_simulation.py``, which also
asserts its targets in ``make test``); this benchmark runs it and reports its numbers. Without
that file (the operator's work not merged yet) it reports "not done"."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from ._common import REPO, Outcome, Row, check

NAME = "autoscale"
TITLE = "5. Autoscaling on the same burst: ScalePolicy vs KEDA-like (simulated time)"

SIMULATION = REPO / "tests" / "unit" / "test_scaling_simulation.py"
TARGET_DECISION_S = 5.0


def _simulation() -> ModuleType | None:
    if not SIMULATION.exists():
        return None
    spec = importlib.util.spec_from_file_location("medevents_scaling_simulation", SIMULATION)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    needed = ("Summary", "run", "ours", "keda_summary")
    return module if all(hasattr(module, n) for n in needed) else None


async def run() -> Outcome:
    sim = _simulation()
    if sim is None:
        note = "not done: the operator's ScalePolicy simulation is not in this tree yet"
        return Outcome([Row("not_done", note, None)], {"not_done": note})
    ours = sim.Summary("ScalePolicy, 2 s poll", [sim.run(sim.ours(phase)) for phase in (0, 1)])
    tuned = sim.keda_summary("KEDA-like, lagThreshold 1500", 1500)
    default = sim.keda_summary("KEDA-like, lagThreshold 10 (default)", 10)
    rows: list[Row] = []
    for key, s in (("ours", ours), ("keda_tuned", tuned), ("keda_default", default)):
        first = s.worst("first_decision_s")
        burst = s.worst("burst_decision_s")
        target = f"<= {TARGET_DECISION_S:g} s" if key == "ours" else ""
        rows += [
            Row(f"{key}_first_decision", f"{s.name}: first decision from zero pods (worst)", first, "s",
                target, check(first, "<=", TARGET_DECISION_S) if key == "ours" else None),
            Row(f"{key}_burst_decision", f"{s.name}: decision after the burst starts (worst)", burst, "s",
                target, check(burst, "<=", TARGET_DECISION_S) if key == "ours" else None),
            Row(f"{key}_drain", f"{s.name}: burst start to drained (mean)", s.mean("drain_s"), "s"),
            Row(f"{key}_peak_lag", f"{s.name}: peak lag (mean)", s.mean("peak_lag"), "events"),
            Row(f"{key}_pod_seconds", f"{s.name}: pod-seconds (mean)", s.mean("pod_seconds"), "pod-s"),
        ]  # fmt: skip
    return Outcome(rows, {"load_curve": getattr(sim, "LOAD_CURVE", None)})
