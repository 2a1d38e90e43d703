"""``edgecl bench soak`` at toy size: the full runtime over a looping source, resources sampled,
nothing left behind after shutdown."""

import argparse
import json

from edgecl.bench import soak


def _tiny_args(work, frames: int, sample_every_s: float) -> argparse.Namespace:
    """A soak of the torch backend on 6 images per task, no learning, quiet, JSON."""
    parser = argparse.ArgumentParser()
    soak.add_arguments(parser)
    return parser.parse_args(["--frames", str(frames), "--images-per-task", "6", "--backend",
                              "torch", "--learn-every-s", "0", "--sample-every-s",
                              str(sample_every_s), "--quiet", "--json", "--work-dir", str(work)])


def test_bench_soak_small(tmp_path, capsys, caplog):
    args = _tiny_args(tmp_path, 120, 0.2)
    assert soak.run(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 120 and summary["fps"] > 0 and summary["loop"]["frames"] == 120
    start, end = summary["start"], summary["end"]
    for point in (start, end):
        assert point["rss_bytes"] > 0 and point["fds"] > 0 and point["threads"] >= 1
    assert end["disk_bytes"] > start["disk_bytes"], "the replay memory stored samples"
    assert end["threads"] <= start["threads"], "a thread outlived the runtime"
    assert end["fds"] <= start["fds"] + 2, "a file descriptor outlived the runtime"
    assert summary["samples"][0] == start and summary["samples"][-1] == end
    assert {"rss_bytes", "fds", "threads", "disk_bytes", "from_frames"} <= set(summary["growth_after_warmup"])
    assert summary["loop"]["sink_errors"] == 0 and summary["loop"]["refused_labels"] == 0
    # before: a warning that the labels name no class, about the scenario the bench made
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "name no class" in
                r.getMessage()]
    # every task's frames are stored: the device knows the folder's classes (before: frames of
    # the second task's classes were refused, 'class id 2 is not in the class registry')
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory

    with ReplayMemory(tmp_path / "state" / "memory", MemoryConfig(), verify_on_open=False) as memory:
        assert {"2", "3"} <= set(memory.stats()["per_class"])
        # every pass over the 12 images is stored (the memory refuses an image it holds: each
        # pass differs as a camera's frames do), so the soak keeps adding and evicting
        assert max(memory.ids()) > 12


def test_each_pass_of_the_looped_folder_differs_from_the_others():
    import numpy as np

    from edgecl.frames import Frame

    class Folder:
        uri = "dir://x?loop=1"

        def __init__(self):
            self.n = 0

        def read(self):
            self.n += 1
            return Frame(np.zeros((2, 3, 3), np.uint8), frame_id=self.n, ts_s=0.0, source="x")

    source = soak.DistinctPasses(Folder(), images=2)
    frames = [source.read().image for _ in range(6)]
    assert [int(f.reshape(-1)[0]) for f in frames] == [0, 0, 1, 1, 2, 2]
    assert source.uri == "dir://x?loop=1"


def test_growth_compares_the_end_with_the_first_sample_after_warm_up():
    samples = [{"frames": f, "rss_bytes": 100 + f, "fds": 10, "threads": 5, "disk_bytes": 7}
               for f in (0, 10, 30, 60, 100)]
    out = soak.growth(samples, 100)
    assert out == {"from_frames": 30, "to_frames": 100, "rss_bytes": 70, "fds": 0, "threads": 0,
                   "disk_bytes": 0}


def test_growth_with_no_window_after_warm_up_is_not_zero():
    """Before: 'rss_bytes': 0 growth from one sample to itself: a false pass of a soak too
    short to measure anything."""
    samples = [{"frames": f, "rss_bytes": 100 + f, "fds": 10, "threads": 5, "disk_bytes": 7}
               for f in (0, 10, 260)]
    out = soak.growth(samples, 300)
    assert (out["from_frames"], out["to_frames"], out["rss_bytes"], out["fds"]) == (260, 260, None,
                                                                                    None)
    assert out["note"].startswith("too few samples after warm-up to measure growth")


def test_a_soak_stopped_by_ctrl_c_prints_what_it_measured(tmp_path, capsys, monkeypatch):
    """Before: Ctrl-C threw every sample away: stdout held only {"error": "interrupted"}."""
    import os
    import signal

    import pytest

    args = _tiny_args(tmp_path, 100000, 0.1)
    sample = soak.ResourceSampler.maybe_sample

    def then_stop(self, frames, rounds):
        sample(self, frames, rounds)
        if len(self.samples) >= 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(soak.ResourceSampler, "maybe_sample", then_stop)
    with pytest.raises(KeyboardInterrupt):
        soak.run(args)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["interrupted"] == "SIGINT" and "stop_signal" not in summary
    assert 0 < summary["frames"] < 100000 and len(summary["samples"]) >= 3
