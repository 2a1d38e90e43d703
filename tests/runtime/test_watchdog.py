"""The watchdog on a fake clock: working stages turn stuck, idle and stopped ones never do."""

from edgecl.runtime.watchdog import StageState, Watchdog


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def states(snapshot):
    return {name: stage["state"] for name, stage in snapshot["stages"].items()}


def test_a_working_stage_without_beats_turns_stuck_and_recovers():
    clock = Clock()
    wd = Watchdog(clock, stuck_after_s={"inference": 5.0})
    wd.beat("inference", "inferring")
    clock.now += 4.9
    assert wd.snapshot()["status"] == "ok"
    clock.now += 0.2
    snap = wd.snapshot()
    assert snap["status"] == "stuck" and states(snap) == {"inference": "stuck"}
    stage = snap["stages"]["inference"]
    assert stage["last_beat_s_ago"] == 5.1 and stage["stuck_after_s"] == 5.0
    assert "no progress for 5 s" in stage["detail"] and "inferring" in stage["detail"]
    wd.beat("inference")
    assert wd.snapshot()["status"] == "ok"


def test_idle_and_stopped_stages_are_never_stuck():
    clock = Clock()
    wd = Watchdog(clock, stuck_after_s={"capture": 1.0, "learner": 1.0})
    wd.idle("capture", "source paused")
    wd.idle("learner", "no round due")
    wd.stop("server", "disabled")
    clock.now += 10_000
    snap = wd.snapshot()
    assert snap["status"] == "ok"
    assert states(snap) == {"capture": "idle", "learner": "idle", "server": "stopped"}
    assert snap["stages"]["capture"]["detail"] == "source paused"


def test_a_registered_stage_that_never_starts_turns_stuck():
    clock = Clock()
    wd = Watchdog(clock)
    wd.register("capture", stuck_after_s=3.0)
    assert states(wd.snapshot()) == {"capture": "starting"}
    clock.now += 3.5
    assert wd.snapshot()["status"] == "stuck"


def test_fault_is_degraded_and_a_waiting_fault_never_turns_stuck():
    clock = Clock()
    wd = Watchdog(clock, stuck_after_s={"learner": 2.0, "sinks": 2.0})
    wd.fault("learner", "3 failed rounds in a row; backing off 300 s", waiting=True)
    wd.fault("sinks", "write failed: OSError", part="memory")
    wd.beat("sinks", "writing", part="jsonl")
    snap = wd.snapshot()
    assert snap["status"] == "degraded"
    assert states(snap) == {"learner": "degraded", "sinks": "degraded"}
    assert snap["stages"]["sinks"]["detail"] == "memory: write failed: OSError"
    clock.now += 60
    snap = wd.snapshot()
    assert snap["stages"]["learner"]["state"] == "degraded"
    assert snap["stages"]["sinks"]["state"] == "stuck", "a failing sink that stops reporting is stuck"
    wd.idle("learner", "no round due")
    wd.idle("sinks", part="memory")
    wd.idle("sinks", part="jsonl")
    assert wd.snapshot()["status"] == "ok"


def test_a_stage_shows_its_worst_part_and_lists_every_part():
    clock = Clock()
    wd = Watchdog(clock, stuck_after_s={"sinks": 5.0})
    wd.register("sinks")
    wd.idle("sinks", "waiting", part="jsonl")
    wd.beat("sinks", "writing", part="video")
    clock.now += 1
    snap = wd.snapshot()["stages"]["sinks"]
    assert snap["state"] == "ok" and snap["detail"] == "video: writing"
    assert set(snap["parts"]) == {"jsonl", "video"} and snap["parts"]["jsonl"]["state"] == "idle"
    clock.now += 10
    snap = wd.snapshot()
    assert snap["status"] == "stuck" and snap["stages"]["sinks"]["detail"].startswith("video: no progress")


def test_a_probe_explains_a_stage_blocked_inside_a_call():
    clock = Clock()
    source = {"paused": False, "reconnecting": False}

    def probe():
        if source["paused"]:
            return StageState.IDLE, "source paused"
        if source["reconnecting"]:
            return StageState.DEGRADED, "source reconnecting"
        return None

    wd = Watchdog(clock, stuck_after_s={"capture": 2.0})
    wd.register("capture", probe=probe)
    wd.beat("capture", "reading")
    clock.now += 30
    assert wd.snapshot()["stages"]["capture"]["state"] == "stuck"
    source["paused"] = True
    snap = wd.snapshot()
    assert snap["status"] == "ok" and snap["stages"]["capture"]["detail"] == "source paused"
    source.update(paused=False, reconnecting=True)
    assert wd.snapshot()["status"] == "degraded"
    wd.idle("capture", "waiting for inference")
    source["paused"] = True
    assert wd.snapshot()["stages"]["capture"]["detail"] == "waiting for inference", \
        "the probe only speaks for a working stage"


def test_register_keeps_the_last_beat_and_unknown_stages_get_the_default_threshold():
    clock = Clock()
    wd = Watchdog(clock)
    wd.beat("custom")
    wd.register("custom", stuck_after_s=1.0)
    assert wd.snapshot()["stages"]["custom"]["state"] == "ok"
    clock.now += 1.5
    assert wd.snapshot()["stages"]["custom"]["state"] == "stuck"
    assert Watchdog(clock).snapshot() == {"status": "ok", "stages": {}}
