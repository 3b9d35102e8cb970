"""`medevents status` shows what `medevents up` wrote about its children, also while NATS is down."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medevents.local import free_port
from medevents.status import print_status

CHILDREN = {
    "runnerPid": os.getpid(),
    "children": [
        {"name": "nats-server", "kind": "server", "port": 4222, "pid": None, "running": False,
         "restarts": 2, "lastExit": -9, "lastRestart": "2026-12-03T08:36:17Z"},
        {"name": "ingest", "kind": "service", "port": 3000, "pid": 42, "running": True,
         "restarts": 0, "lastExit": None, "lastRestart": None},
    ],
    "time": "2026-12-03T08:36:18Z",
}  # fmt: skip


def test_children_and_restarts_are_shown_while_nats_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "children.json").write_text(json.dumps(CHILDREN))
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{free_port()}")  # nothing listens there
    assert print_status(tmp_path) == 1
    out, err = capsys.readouterr()
    assert "cannot read NATS" in err
    assert f"medevents up (pid {os.getpid()})" in out and "NOT RUNNING" not in out
    assert "nats-server    :4222   DOWN, restarting  restarts 2, last exit -9" in out
    assert "ingest         :3000   pid 42" in out

    assert print_status(tmp_path, as_json=True) == 1
    shown = json.loads(capsys.readouterr().out)
    assert shown["local"]["children"][0]["restarts"] == 2 and shown["local"]["runnerAlive"] is True


def test_a_stopped_runner_is_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = {**CHILDREN, "runnerPid": 2**22 + 12345}  # above pid_max: no such process
    (tmp_path / "children.json").write_text(json.dumps(gone))
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{free_port()}")
    assert print_status(tmp_path) == 1
    assert "NOT RUNNING; as it last wrote" in capsys.readouterr().out
