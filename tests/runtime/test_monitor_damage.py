"""A missing, emptied or damaged metrics database: writers rebuild it from the model versions
(a damaged file moved aside, kept), readers say how; a storage fault is never taken for damage.

Before: the runtime stopped on a damaged database (``error: metrics database ...: file is not a
database``, exit 2: the device stopped detecting), ``monitor summary``/``report`` gave no
advice, an emptied one read as nothing learnt, and a lost one was rebuilt with one warning per
round."""

import logging
import os
import re
import sqlite3

import pytest

from edgecl.continual.evaluate import EvalResult
from edgecl.continual.round import ROUND_RECORD_FILE, read_round_record, write_round_record
from edgecl.continual.round_state import load_state
from edgecl.errors import StorageError
from edgecl.models.registry import Registry
from edgecl.runtime import monitor as monitor_mod
from edgecl.runtime.learner import monitor_recorder, record_in_monitor, record_missing_rounds
from edgecl.runtime.monitor import DB_RELPATH, Monitor
from edgecl.runtime.promote import promote_version

TASKS = ["cars", "drone"]
# (round, {task: mAP50-95}, status, reason) of the three rounds of state_with_rounds
ROUNDS = ((1, {"cars": 0.8}, "staged", "first"),
          (2, {"cars": 0.6, "drone": 0.5}, "staged", "better"),
          (3, {"cars": 0.2, "drone": 0.6}, "rejected", "forgot cars"))
# their rows as recorded, each over the versions promoted before it (v0001, then v0002):
#   r1 [[0.8, nan]]                          ACC 0.8,  BWT 0,                        forgetting 0
#   r2 [[0.8, nan], [0.6, 0.5]]              ACC 0.55, BWT 0.6-0.8 = -0.2,           cars 0.2
#   r3 [[0.8, nan], [0.6, 0.5], [0.2, 0.6]]  ACC 0.4,  BWT (-0.6 + 0.1) / 2 = -0.25,
#                                            forgetting cars 0.8-0.2, drone 0.5-0.6: 0.25
EXPECTED = [(1, "v0001", "promoted", "first", 0.8, 0.0, 0.0, 1.0),
            (2, "v0002", "promoted", "better", 0.55, -0.2, 0.2, 2.0),
            (3, "v0003", "rejected", "forgot cars", 0.4, -0.25, 0.25, 3.0)]


def _ap(value):
    return EvalResult(map50_95=value, map50=value, recall=0.5, precision=0.5,
                      per_class_ap50_95={0: value}, n_images=2, n_boxes=2, dece=0.0)


def state_with_rounds(tmp_path):
    """A state directory as the runtime leaves it after three rounds: each version (tiny fake
    model files) keeps its round's record, the database holds the rounds, v0001 then v0002
    promoted, v0003 rejected; the learner's progress file is not written (round 0)."""
    state = tmp_path / "state"
    registry = Registry(state / "models")
    Monitor(state)  # made by the runtime before any round
    for round_no, aps, status, reason in ROUNDS:
        src = tmp_path / f"src{round_no}"
        src.mkdir()
        (src / "model.onnx").write_bytes(b"onnx %d" % round_no)
        record = write_round_record(src / ROUND_RECORD_FILE, round_no=round_no, status=status,
                                    reason=reason, seconds=float(round_no),
                                    evaluation={t: _ap(v) for t, v in aps.items()},
                                    columns=TASKS, class_names={0: "car"}, calibration=None)
        version = registry.stage({"model.onnx": src / "model.onnx", ROUND_RECORD_FILE: record},
                                 {"classes": {0: "car"}}, status=status)
        assert record_in_monitor(state, registry, version, read_round_record(record))
        if status == "staged":
            promote_version(state, version)
    assert rounds(state) == EXPECTED
    return state, registry


def rounds(state):
    """The rounds table without its time stamps (figures to 6 decimals)."""
    return [tuple(round(v, 6) if isinstance(v, float) else v
                  for v in (r["round"], r["model_version"], r["status"], r["reason"], r["acc"],
                            r["bwt"], r["mean_forgetting"], r["seconds"]))
            for r in Monitor(state, create=False, private_copy=True).rounds()]


def _zero_fill(path):
    path.write_bytes(b"\0" * path.stat().st_size)


def _truncate_half(path):
    os.truncate(path, path.stat().st_size // 2)


def _random_bytes(path):
    path.write_bytes(os.urandom(path.stat().st_size))


DAMAGE = {"zero-filled": (_zero_fill, "file is not a database"),
          "half-truncated": (_truncate_half, "database disk image is malformed"),
          "random bytes": (_random_bytes, "file is not a database")}


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _aside(state):
    return sorted(p.name for p in (state / DB_RELPATH).parent.iterdir() if ".corrupt-" in p.name)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("opener", ["runtime", "round"])
def test_a_damaged_database_is_moved_aside_and_its_rounds_re_recorded(tmp_path, caplog, damage,
                                                                       opener):
    """The runtime's open (wait_for_room) and a learning round's recording hook (what
    ``edgecl learn`` writes through) both make it afresh instead of stopping."""
    state, registry = state_with_rounds(tmp_path)
    db = state / DB_RELPATH
    spoil, reason = DAMAGE[damage]
    spoil(db)
    damaged = db.read_bytes()
    (db.parent / "metrics.sqlite-wal").write_bytes(b"the damaged one's WAL")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        if opener == "runtime":
            Monitor(state, wait_for_room=True)
        else:  # the hook records the newest round again after the rebuild: same row
            record = read_round_record(registry.file_path("v0003", ROUND_RECORD_FILE))
            monitor_recorder(state)(version="v0003", **record)
    aside = _aside(state)  # with the WAL and the index beside it, under the same name
    assert aside[1:] == [aside[0] + "-shm", aside[0] + "-wal"]
    assert re.fullmatch(r"metrics\.sqlite\.corrupt-\d{4}-\d\d-\d\dT\d{6}\+0000", aside[0])
    assert (db.parent / aside[0]).read_bytes() == damaged  # kept as it was
    assert (db.parent / aside[2]).read_bytes() == b"the damaged one's WAL"
    assert _warnings(caplog) == [
        f"metrics database {db} is damaged ({reason}): made afresh and re-recorded 3 rounds "
        f"from the model versions; the damaged copy is kept as {db.parent / aside[0]}"]
    assert rounds(state) == EXPECTED
    assert load_state(state).round == 3  # moved past the rejected round, as at a start
    caplog.clear()
    assert record_missing_rounds(state, registry) == [] and _warnings(caplog) == []


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_a_lost_database_is_rebuilt_with_one_warning_not_one_per_round(tmp_path, caplog, how):
    """What the runtime's start does first (record_missing_rounds): before, one warning per
    round, each blaming a shutdown or a full disk; a 0-byte file got no warning at all."""
    state, registry = state_with_rounds(tmp_path)
    db = state / DB_RELPATH
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    if how == "empty":
        db.write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert record_missing_rounds(state, registry) == []
    said = "was missing" if how == "missing" else "was empty (0 bytes)"
    assert _warnings(caplog) == [f"metrics database {db} {said}: made afresh and re-recorded 3 "
                                 f"rounds from the model versions"]
    assert rounds(state) == EXPECTED and _aside(state) == []


@pytest.mark.parametrize("status", ["staged", "rejected"])
def test_a_devices_first_round_makes_the_database_without_a_warning(tmp_path, caplog, status):
    """A fleet device that never ran the runtime records its first adopted version (staged,
    or rejected by its gate): there was no database to lose. Before: "metrics database ...
    was missing: made afresh and re-recorded 1 round" on every fresh device."""
    state = tmp_path / "state"
    registry = Registry(state / "models")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    record = write_round_record(tmp_path / ROUND_RECORD_FILE, round_no=1, status=status,
                                reason="fleet round 1", seconds=1.0,
                                evaluation={"cars": _ap(0.8)}, columns=["cars"],
                                class_names={0: "car"}, calibration=None)
    version = registry.stage({"model.onnx": tmp_path / "model.onnx", ROUND_RECORD_FILE: record},
                             {"classes": {0: "car"}}, status=status)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert record_in_monitor(state, registry, version, read_round_record(record))
    assert _warnings(caplog) == []
    assert [r[:3] for r in rounds(state)] == [(1, "v0001", status)]


class _RefusingConnection:
    """A connection on which every statement fails as SQLite fails on a storage fault."""

    def __init__(self, message):
        self.message = message
        self.in_transaction = False

    def execute(self, *args, **kwargs):
        raise sqlite3.OperationalError(self.message)

    executescript = execute

    def close(self):
        pass


@pytest.mark.parametrize("message", ["database or disk is full",
                                     "attempt to write a readonly database",
                                     "unable to open database file", "disk I/O error"])
def test_a_storage_fault_is_not_damage_nothing_is_moved_aside(tmp_path, monkeypatch, caplog,
                                                              message):
    state, _ = state_with_rounds(tmp_path)
    db = state / DB_RELPATH
    before = db.read_bytes()

    def never(self):
        raise AssertionError("a storage fault was taken for damage")

    monkeypatch.setattr(Monitor, "_move_aside", never)
    monkeypatch.setattr(Monitor, "_rebuild", never)
    real_connect = sqlite3.connect

    def connect(path, *args, **kwargs):
        if message == "unable to open database file":
            raise sqlite3.OperationalError(message)
        return _RefusingConnection(message)

    monkeypatch.setattr(monitor_mod.sqlite3, "connect", connect)
    with pytest.raises(StorageError, match=message):
        Monitor(state)
    with caplog.at_level(logging.WARNING):
        Monitor(state, wait_for_room=True)  # the runtime starts on a full card all the same
    assert "cannot be opened for writing" in caplog.text and message in caplog.text
    monkeypatch.setattr(monitor_mod.sqlite3, "connect", real_connect)
    assert db.read_bytes() == before and _aside(state) == []
    assert rounds(state) == EXPECTED


def test_a_damaged_database_that_cannot_be_moved_aside_is_a_storage_fault(tmp_path,
                                                                          monkeypatch, caplog):
    """Damage on a read-only card: nothing is renamed or lost, the runtime starts anyway."""
    import errno

    state, _ = state_with_rounds(tmp_path)
    db = state / DB_RELPATH
    _zero_fill(db)

    def refuse(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(src))

    monkeypatch.setattr(monitor_mod.os, "replace", refuse)
    with pytest.raises(StorageError, match=r"is damaged \(file is not a database\) and cannot "
                                           r"be moved aside: Read-only file system"):
        Monitor(state)
    with caplog.at_level(logging.WARNING):
        Monitor(state, wait_for_room=True)
    assert "cannot be moved aside" in caplog.text
    assert db.read_bytes() == b"\0" * db.stat().st_size and _aside(state) == []


def _cli(capsys, *argv):
    from edgecl.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [["summary"], ["report", "--out", "REPORT"]])
def test_summary_and_report_on_a_damaged_database_say_how_to_rebuild_it(tmp_path, capsys,
                                                                        command):
    state, _ = state_with_rounds(tmp_path)
    db = state / DB_RELPATH
    _zero_fill(db)
    argv = ["monitor", *[str(tmp_path / a) if a == "REPORT" else a for a in command],
            "--state-dir", str(state)]
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"error: metrics database {db} is damaged (file is not a database): start `edgecl run` "
        f"on this state directory: it rebuilds the database from the model versions (so does "
        f"the next round of `edgecl learn`), keeping the damaged copy as "
        f"metrics.sqlite.corrupt-<time>"]
    assert _aside(state) == [] and db.read_bytes() == b"\0" * db.stat().st_size  # only read

    db.unlink()
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and err.splitlines() == [
        f"error: no metrics database at {db} (3 model versions hold their rounds): start "
        f"`edgecl run` on this state directory: it rebuilds the database from the model "
        f"versions (so does the next round of `edgecl learn`)"]
    assert not db.exists()


def test_summary_of_an_emptied_database_warns_instead_of_reading_as_nothing_learnt(tmp_path,
                                                                                   capsys,
                                                                                   caplog):
    state, _ = state_with_rounds(tmp_path)
    db = state / DB_RELPATH
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        code, out, _ = _cli(capsys, "monitor", "summary", "--state-dir", str(state))
    assert code == 0 and out.splitlines()[0] == "model_version    -"
    assert _warnings(caplog) == [
        f"metrics database {db} lacks the rounds of 3 model versions (v0001, v0002, v0003): "
        f"start `edgecl run` on this state directory: it rebuilds the database from the model "
        f"versions (so does the next round of `edgecl learn`)"]
    assert db.read_bytes() == b""  # only read


def test_a_folder_where_the_database_belongs_is_set_aside_and_rebuilt(tmp_path, caplog):
    """Before: 'monitor summary' said the runtime would rebuild the database, and the runtime
    could not: SQLite's 'unable to open' read as a storage fault, so nothing was moved aside."""
    state, _registry = state_with_rounds(tmp_path)
    db = state / DB_RELPATH
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.mkdir()
    (db / "something.txt").write_text("kept")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Monitor(state, wait_for_room=True)
    aside = _aside(state)
    assert len(aside) == 1 and (db.parent / aside[0] / "something.txt").read_text() == "kept"
    assert _warnings(caplog) == [
        f"metrics database {db} is damaged (a folder stands where the database file belongs): "
        f"made afresh and re-recorded 3 rounds from the model versions; the damaged copy is kept "
        f"as {db.parent / aside[0]}"]
    assert rounds(state) == EXPECTED


@pytest.mark.parametrize("table, column, value", [("class_ap", "ap50_95", "x"),
                                                  ("evaluations", "map50_95", b"\x01\x02"),
                                                  ("rounds", "acc", "n/a")])
def test_text_where_a_number_belongs_is_damage(tmp_path, capsys, caplog, table, column, value):
    """Before: one text value in a number column passed SQLite's page check: 'monitor summary'
    said 'internal error (ValueError: could not convert string to float)', every round failed
    after staging its version (a traceback each try), and the runtime never rebuilt it."""
    state, _registry = state_with_rounds(tmp_path)
    db = state / DB_RELPATH
    conn = sqlite3.connect(db)
    conn.execute(f"UPDATE {table} SET {column}=? WHERE rowid=(SELECT MIN(rowid) FROM {table})",
                 (value,))
    conn.commit()
    conn.close()
    shown = repr(value)
    code, out, err = _cli(capsys, "monitor", "summary", "--state-dir", str(state))
    assert code == 2 and err.splitlines() == [
        f"error: metrics database {db} is damaged (table {table}, column {column} holds {shown} "
        f"where a number belongs): start `edgecl run` on this state directory: it rebuilds the "
        f"database from the model versions (so does the next round of `edgecl learn`), keeping "
        f"the damaged copy as metrics.sqlite.corrupt-<time>"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Monitor(state, wait_for_room=True)
    aside = _aside(state)
    assert _warnings(caplog) == [
        f"metrics database {db} is damaged (table {table}, column {column} holds {shown} where a "
        f"number belongs): made afresh and re-recorded 3 rounds from the model versions; the "
        f"damaged copy is kept as {db.parent / aside[0]}"]
    assert rounds(state) == EXPECTED


def test_a_round_record_is_strict_json_and_reads_back_nan(tmp_path):
    """Before: a score that could not be computed was written as a bare NaN, which jq and
    every strict JSON reader refuse."""
    import dataclasses
    import json
    import math

    res = dataclasses.replace(_ap(0.5), dece=float("nan"))
    path = write_round_record(tmp_path / ROUND_RECORD_FILE, round_no=4, status="staged",
                              reason="ok", seconds=float("nan"), evaluation={"cars": res},
                              columns=["cars"], class_names={0: "Fahrrad_ü"}, calibration=None)
    text = path.read_text(encoding="utf-8")
    body = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in {path.name}"))
    assert body["evaluation"]["cars"]["dece"] is None and body["seconds"] is None
    back = read_round_record(path)
    assert math.isnan(back["evaluation"]["cars"].dece) and back["seconds"] is None
    assert back["evaluation"]["cars"].map50_95 == 0.5 and back["class_names"] == {0: "Fahrrad_ü"}


@pytest.mark.parametrize("command", [["summary"], ["report", "--out", "REPORT"]])
def test_a_rollback_the_database_missed_is_said_by_summary_and_report(tmp_path, capsys, caplog,
                                                                      monkeypatch, command):
    """Before: a rollback on a full card (or killed between the registry's write and the
    database's) left the database naming the rolled-back version as serving, and summary and
    report showed it without a word until the next round."""
    from edgecl.runtime import promote
    from edgecl.runtime.promote import rollback_version

    state, registry = state_with_rounds(tmp_path)
    monkeypatch.setattr(Monitor, "follow_registry", lambda self, statuses: (_ for _ in ()).throw(
        StorageError("the disk is full")))
    assert rollback_version(state, registry) == "v0001"
    monkeypatch.undo()
    caplog.clear()
    db = state / DB_RELPATH
    argv = ["monitor", *[str(tmp_path / a) if a == "REPORT" else a for a in command],
            "--state-dir", str(state)]
    with caplog.at_level(logging.WARNING):
        code, out, _ = _cli(capsys, *argv)
    assert code == 0
    assert _warnings(caplog) == [
        f"metrics database {db} names v0002 as the model serving, the model registry v0001 (a "
        f"rollback or promotion it could not record: a full disk or a stop); the figures "
        f"follow the database until the next 'edgecl learn' or 'edgecl run' brings it in line"]
    caplog.clear()
    assert promote.sync_monitor(state)  # what 'edgecl learn' and 'edgecl run' do at start
    with caplog.at_level(logging.WARNING):
        assert _cli(capsys, *argv)[0] == 0
    assert _warnings(caplog) == []


def test_a_device_with_no_round_yet_is_told_what_makes_one(tmp_path, capsys):
    """Before: 'monitor summary' on a device that had only imported labels said "no metrics
    database at ...", with no next step."""
    from edgecl.cli import main

    (tmp_path / "memory").mkdir()
    assert main(["monitor", "summary", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: no metrics database at {tmp_path / 'metrics' / 'metrics.sqlite'}"
                           f": no learning round or run recorded yet ('edgecl learn' runs a "
                           f"round, 'edgecl run' records a run)")


@pytest.mark.parametrize("field, value", [
    ("false_positives", "Infinity"), ("n_images", "1e400"),
    ("per_class_found", '{"0": ' + "9" * 401 + "}"),
    ("per_class_false_positives", '{"0": Infinity}'), ("n_boxes", '"abc"')])
def test_a_round_record_with_a_count_that_is_no_number_is_named_and_passed_over(
        tmp_path, caplog, field, value):
    """Before: a round record whose false_positives read Infinity (or 1e400, a 401-digit
    count) stopped every start with "internal error (OverflowError: cannot convert float
    infinity to integer)", naming no file; text where a count belongs was said without it."""
    import json

    state, registry = state_with_rounds(tmp_path)
    path = registry.file_path("v0003", ROUND_RECORD_FILE)
    body = json.loads(path.read_text(encoding="utf-8"))
    text = json.dumps({**body, "evaluation": {t: {**r, field: "@@"}
                                              for t, r in body["evaluation"].items()}})
    path.write_text(text.replace('"@@"', value), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": not a round record"):
        read_round_record(path)
    db = state / DB_RELPATH
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING):
        record_missing_rounds(state, registry)  # the start goes on
    assert str(path) in caplog.text
