"""An operator answer's ``skip`` is a JSON boolean, nothing else: over HTTP, through the CLI's
boxes file and the runtime's Python hook, ``"yes"`` (or ``1``, ``"false"``, ``null``) is one error
line (a 422 over HTTP) and the item stays pending, nothing stored."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.data.answers import check_skip, parse_answer
from edgecl.errors import LabelError
from edgecl.frames import Detections, Frame
from edgecl.models.classes import ClassRegistry
from edgecl.runtime.labels import OperatorQueue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from labels_fakes import textured  # noqa: E402

NOT_BOOLEANS = ["yes", "true", "false", 1, 0, None, [], {}]


@pytest.fixture()
def state(tmp_path):
    state = tmp_path / "state"
    ClassRegistry(state).seed({0: "car"})
    q = OperatorQueue(state / "labels")
    dets = Detections(np.array([[20, 10, 60, 50]], np.float32), np.array([0.5], np.float32), np.array([0]))
    item = q.push(Frame(textured(0), 0, 0.0, "cam://0"), dets, priority=0.5, reasons={"uncertain": 0.9},
                  names={0: "car"})
    return state, item


@pytest.mark.parametrize("value", NOT_BOOLEANS)
def test_python_api_refuses_a_skip_that_is_not_a_boolean(value):
    with pytest.raises(LabelError, match=r"^'skip' must be true or false \(a JSON boolean\), got "):
        check_skip(value)
    with pytest.raises(LabelError, match="'skip' must be true or false"):
        parse_answer({"boxes": [], "skip": value})
    assert parse_answer({"skip": True}) == ([], True)
    assert parse_answer({"boxes": [{"class": "car", "xyxy": [0, 0, 1, 1]}], "skip": False})[1] is False
    assert parse_answer([]) == ([], False)


@pytest.mark.parametrize("value", ["yes", 1, "false"])
def test_cli_boxes_file_with_a_string_skip_changes_nothing(state, capsys, tmp_path, value):
    root, item = state
    answer = tmp_path / "a.json"
    answer.write_text(json.dumps({"skip": value}))
    code = main(["labels", "answer", item, "--boxes", str(answer), "--state-dir", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"'skip' must be true or false (a JSON boolean), got {value!r}" in err
    assert [p["id"] for p in OperatorQueue(root / "labels").pending()] == [item]
    assert not (root / "memory").exists()  # nothing stored


def test_cli_boxes_file_skip_true_skips(state, capsys, tmp_path):
    root, item = state
    answer = tmp_path / "a.json"
    answer.write_text(json.dumps({"skip": True}))
    assert main(["labels", "answer", item, "--boxes", str(answer), "--json", "--state-dir", str(root)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"id": item, "skipped": True}
    assert OperatorQueue(root / "labels").pending() == []


@pytest.mark.parametrize("value", NOT_BOOLEANS)
def test_http_skip_must_be_a_json_boolean(value, tmp_path):
    from fastapi.testclient import TestClient

    from edgecl.web import ConsoleHooks, create_app

    calls = []
    hooks = ConsoleHooks(health=lambda: {"status": "ok"},
                         answer=lambda i, b, s: calls.append((i, b, s)) or {"id": i})
    client = TestClient(create_app(hooks))
    response = client.post("/api/labels/f0001", json={"boxes": [], "skip": value})
    assert response.status_code == 422
    assert response.json() == {"error": "invalid answer: 'skip' must be true or false (a JSON "
                                        f"boolean), got {value!r}"}  # the CLI's words
    response = client.post("/api/labels/f0001",
                           json={"boxes": [{"class": "car", "xyxy": ["1", 2, 30, 40]}]})
    assert response.status_code == 422 and "box 0: xyxy must be 4 finite" in response.json()["error"]
    assert calls == []  # no hook ran: nothing changed
    assert client.post("/api/labels/f0001", json={"skip": True}).status_code == 200
    assert calls == [("f0001", [], True)]


def test_runtime_hook_refuses_a_string_skip(tmp_path):
    """The real runtime's answer hook (what the console calls) checks the flag itself."""
    from types import SimpleNamespace

    from edgecl.runtime.console import build_console_hooks

    skipped = []
    queue = SimpleNamespace(pending=list, image_path=str)
    sink = SimpleNamespace(skip=lambda i: skipped.append(i) or {"id": i, "skipped": True},
                           answer=lambda i, b: pytest.fail("must not store"), queue=queue,
                           answers=list, answered_image=str, correct=None, withdraw=None)
    runtime = SimpleNamespace(memory_sink=sink, cfg=SimpleNamespace(state_dir=str(tmp_path)),
                              monitor=object(), live_view=None, health=dict, live=dict, vitals=dict,
                              registry=None, classes=None)
    hooks = build_console_hooks(runtime)
    with pytest.raises(LabelError, match="'skip' must be true or false"):
        hooks.answer("f0001", [], "yes")
    assert skipped == []
    assert hooks.answer("f0001", [], True) == {"id": "f0001", "skipped": True}
