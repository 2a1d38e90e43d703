"""Ctrl-C during a run that would wait for its learner: the run ends at once, the runtime says
it was interrupted (the benchmarks built on it then stop instead of going on), and a ``.pt``
named with ``--model`` is what the first round learns on."""

from edgecl.config import load_config
from edgecl.runtime.app import RunOptions, Runtime


def _looping_runtime(tmp_path, hook) -> Runtime:
    """A runtime on a looping synthetic stream, no server and no learner, whose supervisor
    step calls ``hook(runtime)``."""
    cfg = load_config(None, [f"state_dir={tmp_path}", "model.imgsz=64", "server.enabled=false",
                             "learner.enabled=false"])
    return Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&imgsz=64&loop=1&fps=50",
                                   model="yolo11n.yaml", quiet=True), supervise_hook=hook)


def test_interrupt_marks_the_run_and_skips_waiting(tmp_path):
    ticks = []

    def hook(runtime):
        ticks.append(1)
        if len(ticks) == 2:
            runtime._interrupt()  # what the SIGINT/SIGTERM handler calls (stop_on_signals)

    runtime = _looping_runtime(tmp_path, hook)
    report = runtime.run(wait_for_learner=True)
    assert runtime.interrupted
    assert report.frames >= 1


def test_a_pt_named_with_model_is_what_the_first_round_learns_on(tmp_path):
    from edgecl.continual.round import base_checkpoint
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    pt = save_checkpoint(build_detection_model(2, names={0: "car", 1: "boat"}), tmp_path / "mine.pt",
                         meta={"names": {0: "car", 1: "boat"}, "imgsz": 64})
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", "model.imgsz=64"])
    runtime = Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&imgsz=64",
                                      model=str(pt), quiet=True))
    assert base_checkpoint(runtime.cfg) == pt.resolve()
    onnx_only = Runtime(cfg, RunOptions(source_uri="synthetic://", model="x.onnx", quiet=True))
    assert base_checkpoint(onnx_only.cfg) is None
    # an untrained detector saved only to name the first classes (the demo's) is no base to
    # learn on: its first round is a first round (fresh training, nothing frozen)
    fresh = save_checkpoint(build_detection_model(2, names={0: "car", 1: "boat"}),
                            tmp_path / "fresh.pt",
                            meta={"names": {0: "car", 1: "boat"}, "imgsz": 64, "untrained": True})
    demo = Runtime(cfg, RunOptions(source_uri="synthetic://", model=str(fresh), quiet=True))
    assert base_checkpoint(demo.cfg) is None


def test_a_second_signal_during_the_close_only_asks_the_stop_again(tmp_path, monkeypatch):
    """Before: the runtime's handler was removed before close() ran, so a second SIGTERM
    (timeout and service managers send two) raised inside the close: the server's stop and the
    lock's release were skipped, and the process could end in a segmentation fault."""
    import os
    import signal

    from edgecl.stop_signals import unwind_once_on_stop_signals

    closed = []
    runtime = _looping_runtime(tmp_path, lambda rt: os.kill(os.getpid(), signal.SIGTERM))
    real_close = runtime.close

    def close():
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal, while the runtime closes
        real_close()
        closed.append(True)

    monkeypatch.setattr(runtime, "close", close)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        unwind_once_on_stop_signals()  # what the command line installs
        runtime.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert runtime.interrupted and closed == [True]
    assert runtime.stop_signal == signal.SIGTERM, "the first signal is kept: benchmarks exit 143"


def test_a_signal_after_the_run_stopped_changes_nothing(tmp_path):
    """Before: once the run had ended, the command line's own handler was back, and a second
    SIGTERM 50-100 ms after the first raised there: the summary was printed, but the process
    ended with the signal's status instead of 0."""
    import os
    import signal

    from edgecl.stop_signals import unwind_once_on_stop_signals

    runtime = _looping_runtime(tmp_path, lambda rt: os.kill(os.getpid(), signal.SIGTERM))
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        unwind_once_on_stop_signals()  # what the command line installs
        runtime.run()
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal, after the run returned
        os.kill(os.getpid(), signal.SIGINT)
        summary_printed = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert runtime.interrupted and summary_printed


def test_a_run_started_ignoring_sigint_keeps_ignoring_it(tmp_path):
    """Before: the runtime's handler replaced the SIG_IGN a background start ('cmd &', nohup)
    gave SIGINT, and a Ctrl-C meant for the shell stopped the run."""
    import os
    import signal

    ticks = []

    def hook(runtime):
        ticks.append(1)
        if len(ticks) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # ignored
        if len(ticks) == 4:
            runtime.loop.request_stop()

    runtime = _looping_runtime(tmp_path, hook)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runtime.run()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not runtime.interrupted and len(ticks) >= 4
