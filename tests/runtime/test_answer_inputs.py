"""Bad operator answers, as a buggy client, a confused person or a hostile device sends them: the
one rule that reads an answer (``decode_answer`` + ``parse_answer``, shared by the CLI and the
console's API), boxes against the frame, and an answer that arrives while the runtime stops."""

import threading

import numpy as np
import pytest
from labels_fakes import FakeClasses, FakeMemory, dets, result, textured

from edgecl.config import LabelsConfig, SelectionConfig
from edgecl.errors import LabelError, UnavailableError
from edgecl.frames import Frame
from edgecl.runtime.labels import MemorySink, OperatorQueue
from edgecl.data.answers import decode_answer, parse_answer, parse_boxes

CAR = {"class": "car", "xyxy": [20, 10, 60, 50]}


def queued(tmp_path):
    q = OperatorQueue(tmp_path / "labels")
    item = q.push(Frame(textured(0), 0, 0.0, "cam://0"), dets([0.5]), priority=0.5,
                  reasons={"uncertain": 0.8}, names={0: "car"})
    return q, item


@pytest.mark.parametrize("raw, match", [
    ('{"boxes": []}'.encode("utf-16"), "x looks like UTF-16 text: send it as UTF-8"),
    ('{"boxes": []}'.encode("utf-16-le"), "x looks like UTF-16 text"),
    (b'{"boxes": [{"class": "\xff"}]}', r"x is not UTF-8 text \(byte 0xff at offset 22\)"),
    (b"", "x is empty"),
    (b"  \n", "x is empty"),
    (b'{"boxes": [', "x is not JSON: Expecting value at line 1 column 12"),
    # before: "Unterminated string starting at at line 1"
    (b'{"boxes": "ab', "x is not JSON: Unterminated string starting at line 1 column 11$"),
    (b'[{"class": "car", "xyxy": [NaN, 1, 2, 3]}]', "x is not usable JSON: NaN is not a JSON number"),
    (b'[{"class": "car", "xyxy": [1, 1, Infinity, 3]}]',
     "x is not usable JSON: Infinity is not a JSON number"),
    (b'{"skip": true, "skip": false}', "x is not usable JSON: key 'skip' given twice"),
    (b'[{"class": "car", "class": "boat", "xyxy": [1, 1, 5, 5]}]',
     "x is not usable JSON: key 'class' given twice"),
    (b"[" * 100_000 + b"]" * 100_000, "x is not usable JSON: nested too deeply"),
    (b"[" + b"9" * 5000 + b"]", "x is not usable JSON: Exceeds the limit"),
])
def test_an_answer_that_is_not_utf8_json_is_one_line_naming_where(raw, match):
    """Before: the API took UTF-16 bodies and read NaN; the CLI let a repeated key's last value
    win (``{"skip": true, "skip": false}`` stored the frame as "nothing here")."""
    with pytest.raises(LabelError, match=f"^{match}") as caught:
        decode_answer(raw, "x")
    assert "\n" not in str(caught.value)


def test_a_utf8_byte_order_mark_is_allowed():
    assert decode_answer(b'\xef\xbb\xbf{"boxes": []}', "x") == {"boxes": []}


@pytest.mark.parametrize("answer, match", [
    ({"boxes": [CAR], "skip": True}, r'"skip": true with 1 box\(es\)'),
    ({"boxes": [dict(CAR, score="high")]}, "box 0: score must be a finite number or null"),
    ({"boxes": [dict(CAR, xyxy=[True, 1, 5, 5])]}, r"box 0: xyxy must be 4 finite .*got \[True"),
    ({"boxes": [dict(CAR, xyxy=[1, 1, 5])]}, r"got \[1, 1, 5\]"),
    ({"boxes": None}, "boxes must be a JSON list .*got null"),
    ("car", "expected a list of boxes .*got a string"),
])
def test_bad_answers_are_refused_by_the_one_rule(answer, match):
    with pytest.raises(LabelError, match=match):
        parse_answer(answer)


def test_the_api_body_is_an_object_not_a_bare_list():
    assert parse_answer([CAR]) == ([{"class": "car", "xyxy": [20.0, 10.0, 60.0, 50.0]}], False)
    with pytest.raises(LabelError, match=r'^expected a JSON object \{"boxes".*got a list$'):
        parse_answer([CAR], allow_list=False)


def test_parsed_boxes_are_clean():
    boxes = parse_boxes([{"class": "  truck ", "xyxy": [1, 2, 3, 4], "score": None},
                         {"class": "a/b", "xyxy": [1.5, 2, 3, 4], "score": 0.3}])
    assert boxes == [{"class": "truck", "xyxy": [1.0, 2.0, 3.0, 4.0]},
                     {"class": "a/b", "xyxy": [1.5, 2.0, 3.0, 4.0]}]


def test_a_pending_items_proposed_boxes_are_an_answer_as_they_are(tmp_path):
    """Before: the proposals GET /api/labels/pending lists carry 'class_id', which an answer
    refused ("unknown key(s) 'class_id'"): keeping them over HTTP needed that key stripped."""
    q, item = queued(tmp_path)
    proposed = q.item(item)["proposed"]
    assert set(proposed[0]) == {"class", "class_id", "xyxy", "score"}
    boxes, skip = parse_answer({"boxes": proposed}, allow_list=False)
    assert not skip and boxes == [{"class": "car", "xyxy": proposed[0]["xyxy"], "class_id": 0}]
    with pytest.raises(LabelError, match=r"unknown key\(s\) 'conf' \(a box has 'class', 'xyxy' "
                                         r"and, ignored, 'score' and 'class_id'\)"):
        parse_answer({"boxes": [dict(proposed[0], conf=0.5)]})


def test_duplicate_boxes_are_stored_once_and_new_classes_keep_their_ids(tmp_path):
    """Before: the same box twice (a client that sent each box twice) was stored twice, so
    training counted that object twice."""
    q, item = queued(tmp_path)
    mem, classes = FakeMemory(), FakeClasses({0: "car"})
    boxes = [CAR, dict(CAR, **{"class": "CAR"}), {"class": "bus", "xyxy": [1, 1, 9, 9]},
             {"class": "van", "xyxy": [2, 2, 8, 8]}, {"class": "Bus", "xyxy": [1, 1, 9, 9]},
             {"class": "van", "xyxy": [30, 30, 40, 40]}]
    out = q.answer(item, boxes, mem, classes)
    assert out["boxes"] == 4 and out["classes_added"] == ["bus", "van"]
    assert classes.names() == {0: "car", 1: "bus", 2: "van"}
    np.testing.assert_array_equal(mem.samples[0].labels[:, 0], [0, 1, 2, 2])


def test_a_class_id_that_names_another_class_than_class_is_refused(tmp_path):
    """Before: a proposal sent back with its class_id changed to 3 (Bicycle) and its class left
    'Car' was stored as a car, without a word: which class the client meant was guessed."""
    from edgecl.data.answers import boxes_to_labels

    known = {"car": 0, "person": 1, "kar": 0}  # kar: merged into car
    box = {"class": "car", "xyxy": [10, 10, 40, 40]}
    for agrees in (dict(box, class_id=0), box, dict(box, class_id=7), dict(box, class_id=None),
                   dict(box, **{"class": "kar", "class_id": 0})):
        rows, _ = boxes_to_labels(parse_boxes([agrees]), 640, 512, known)
        assert rows[:, 0].tolist() == [0]  # agrees, absent, an id no class has, null
    for typed in ("1", True, 1.5):  # before: ignored, whatever class it meant
        with pytest.raises(LabelError, match=r"^box 0: class_id must be an integer \(the "
                                             r"class's id\) or left out, got "):
            parse_boxes([dict(box, class_id=typed)])
    with pytest.raises(LabelError, match=r"^box 1: class_id 1 is another class than 'car' "
                                         r"\(id 0\): send the class you mean \('class' decides; "
                                         r"'class_id' may be left out\)$"):
        boxes_to_labels(parse_boxes([box, dict(box, class_id=1)]), 640, 512, known)
    with pytest.raises(LabelError, match=r"^box 0: class_id 0 is another class than 'tank' "
                                         r"\(a new class\)"):
        boxes_to_labels(parse_boxes([dict(box, **{"class": "tank", "class_id": 0})]), 640, 512,
                        known)
    q, item = queued(tmp_path)  # through the queue, as the HTTP API answers: nothing stored
    mem, classes = FakeMemory(), FakeClasses({0: "car", 1: "person"})
    with pytest.raises(LabelError, match="class_id 1 is another class than 'car'"):
        q.answer(item, parse_answer({"boxes": [dict(CAR, class_id=1)]}, allow_list=False)[0],
                 mem, classes)
    assert mem.samples == [] and q.pending()


def test_a_box_given_again_a_pixel_off_is_stored_once():
    """Before: two car boxes 0.2 px apart were stored as two cars (a double submit a pixel
    off), as a box given twice exactly was not. Boxes of two classes at one place are kept."""
    from edgecl.data.answers import boxes_to_labels

    boxes = [{"class": "car", "xyxy": [10, 10, 20, 20]},
             {"class": "car", "xyxy": [10.2, 10.2, 20.2, 20.2]},   # every side within 1.5 px
             {"class": "car", "xyxy": [11.5, 8.5, 21.5, 18.5]},    # 1.5 px exactly: the same
             {"class": "car", "xyxy": [10, 10, 21.6, 20]},         # one side 1.6 px off: another
             {"class": "bicycle", "xyxy": [10, 10, 20, 20]}]
    rows, new = boxes_to_labels(boxes, 640, 512, {"car": 0})
    assert new == ["bicycle"] and rows[:, 0].tolist() == [0, 0, -1]
    np.testing.assert_allclose(rows[:2, 3] * 640, [10, 11.6], atol=1e-4)


@pytest.mark.parametrize("xyxy, match", [
    ([140, 40, 230, 60], r"lies partly outside the 200x100 frame \(boxes are in pixels"),
    ([300, 300, 400, 400], "lies entirely outside the 200x100 frame"),
    ([-50, -50, -10, -10], "lies entirely outside"),
])
def test_a_box_outside_the_frame_says_whether_partly_or_entirely(tmp_path, xyxy, match):
    q, item = queued(tmp_path)
    mem = FakeMemory()
    with pytest.raises(LabelError, match=match):
        q.answer(item, [{"class": "car", "xyxy": xyxy}], mem, FakeClasses())
    assert mem.samples == [] and len(q.pending()) == 1


def _sink(tmp_path):
    cfg = LabelsConfig(mode="field", selection=SelectionConfig(
        uncertain=1.0, novel=0, disagreement=0, forgetting=0, random=0))
    mem = FakeMemory()
    sink = MemorySink(mem, cfg, OperatorQueue(tmp_path / "labels", cfg.max_pending),
                      classes=FakeClasses({0: "car"}))
    sink.write(result(textured(0), dets([0.45]), 0))
    (item,) = sink.queue.pending()
    return sink, mem, item["id"]


def test_an_answer_after_the_sink_closed_is_unavailable_and_stores_nothing(tmp_path):
    """Before: an answer sent while the runtime stopped reached a closed memory index: a 500
    with a traceback in the device's log (AttributeError on the closed SQLite connection)."""
    sink, mem, item = _sink(tmp_path)
    sink.close()
    with pytest.raises(UnavailableError, match=f"'{item}' not answered: the runtime is stopping"):
        sink.answer(item, [CAR])
    assert mem.samples == [] and [p["id"] for p in sink.queue.pending()] == [item]


def test_the_consoles_reads_after_the_sink_closed_are_unavailable(tmp_path):
    """Before: the loop's end closed the memory while the console still served: the Live page's
    figures and the answered list read the closed index (HTTP 500, a logged traceback ending
    in "'NoneType' object has no attribute 'execute'")."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory

    cfg = LabelsConfig(mode="field")
    memory = ReplayMemory(tmp_path / "memory", MemoryConfig(capacity=20, holdout_fraction=0.0))
    sink = MemorySink(memory, cfg, OperatorQueue(tmp_path / "labels", cfg.max_pending),
                      classes=FakeClasses({0: "car"}))
    assert sink.memory_stats()["samples"] == 0 and sink.answers() == []
    sink.close()
    for read in (sink.memory_stats, sink.answers, lambda: sink.answered_image("abc")):
        with pytest.raises(UnavailableError, match="the runtime is stopping; ask again once it runs"):
            read()


def test_closing_waits_for_an_answer_being_stored(tmp_path):
    sink, mem, item = _sink(tmp_path)
    entered, release = threading.Event(), threading.Event()
    add = mem.add

    def slow_add(sample):
        entered.set()
        release.wait(5)
        return add(sample)

    mem.add = slow_add
    answering = threading.Thread(target=sink.answer, args=(item, [CAR]))
    answering.start()
    assert entered.wait(5)
    closing = threading.Thread(target=sink.close)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive()  # the memory is not closed under the answer
    release.set()
    answering.join(5)
    closing.join(5)
    assert not closing.is_alive() and sink.closed and len(mem.samples) == 1
    assert sink.queue.pending() == []


def test_a_box_under_one_pixel_is_refused_and_normalised_coordinates_are_named():
    """Before: [0.1, 0.1, 0.2, 0.2] (a YOLO user's normalised box) was stored as a 0.1 px box."""
    from edgecl.data.answers import boxes_to_labels

    with pytest.raises(LabelError) as normalised:
        boxes_to_labels([{"class": "car", "xyxy": [0.1, 0.1, 0.2, 0.2]}], 640, 512, {"car": 0})
    assert str(normalised.value) == (
        "box 0: [0.1, 0.1, 0.2, 0.2] is 0.1 x 0.1 px, under one pixel (it looks like coordinates "
        "normalised to 0..1, as in YOLO label files; boxes are in pixels of the 640x512 frame)")
    with pytest.raises(LabelError, match=r"box 0: \[10.0, 10.0, 10.5, 40.0\] is 0.5 x 30 px, under "
                                         r"one pixel \(boxes are in pixels of the 640x512 frame\)"):
        boxes_to_labels([{"class": "car", "xyxy": [10, 10, 10.5, 40]}], 640, 512, {"car": 0})
    rows, _ = boxes_to_labels([{"class": "car", "xyxy": [10, 10, 11, 11]}], 640, 512, {"car": 0})
    assert rows.shape == (1, 5)  # one pixel is a box


@pytest.mark.parametrize("name", ["DontCare", "dont_care", "IGNORE", "ignored regions"])
def test_an_ignore_region_name_is_no_new_class_of_an_answer(name):
    """Before: an answer naming 'DontCare' made it a class, which imports (and the device's own
    'memory export' imported again) drop as an ignore region."""
    from edgecl.data.answers import boxes_to_labels

    box = {"class": name, "xyxy": [10, 10, 40, 40]}
    with pytest.raises(LabelError, match=rf"box 1: '{name}' marks a region to ignore in the label "
                                         r"formats edgecl imports \(VOC, COCO, KITTI\), not a class"):
        boxes_to_labels([{"class": "car", "xyxy": [1, 1, 9, 9]}, box], 640, 512, {"car": 0})
    # a class of the device's own model (a KITTI-style checkpoint seeds it) is answered as any
    rows, new = boxes_to_labels([box], 640, 512, {"car": 0, name: 1})
    assert rows[:, 0].tolist() == [1] and new == []


def test_a_class_name_repeated_over_many_boxes_is_cleaned_once(monkeypatch):
    """Before: 1,000 boxes of one 99-character name took 0.2 s of the interpreter per answer
    (its Unicode checks ran per box)."""
    import edgecl.data.answers as answers

    calls = []
    clean = answers.clean_name
    monkeypatch.setattr(answers, "clean_name", lambda name: calls.append(name) or clean(name))
    boxes = [{"class": " 車 " if i % 2 else "車", "xyxy": [1, 2, 30, 40]} for i in range(1000)]
    parsed = answers.parse_boxes(boxes)
    assert [b["class"] for b in parsed] == ["車"] * 1000 and calls == ["車", " 車 "]
    with pytest.raises(LabelError, match=r"^box 3: class name is empty"):
        answers.parse_boxes(boxes[:3] + [{"class": " ", "xyxy": [1, 2, 30, 40]}])
