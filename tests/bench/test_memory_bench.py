"""``edgecl bench memory`` on a short stream: keys present, disk bound held."""

import argparse
import json

from edgecl.bench import memory_bench


def test_bench_memory_small(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    memory_bench.add_arguments(parser)
    args = parser.parse_args(["--adds", "150", "--capacity", "40", "--pool", "4", "--k", "8",
                              "--du-every", "10", "--json", "--state-dir", str(tmp_path)])
    assert memory_bench.run(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("adds_per_s", "rss_mb_start", "rss_mb_end", "disk_bytes_max", "max_bytes"):
        assert result[key] > 0, key
    assert result["disk_bytes_max"] <= result["max_bytes"]
    assert set(result["select_ms"]) == {"er", "mir", "mir-virtual", "far", "class_balanced"}
    assert result["samples_end"] <= 40 and result["verify_ok"]


def test_bench_memory_writes_no_progress_frames_into_a_log(tmp_path, capsys):
    """Before: without --json, stderr sent to a file got tqdm's carriage-return frames, a
    warning glued to one of them."""
    parser = argparse.ArgumentParser()
    memory_bench.add_arguments(parser)
    args = parser.parse_args(["--adds", "60", "--capacity", "20", "--pool", "4", "--k", "8",
                              "--du-every", "10", "--state-dir", str(tmp_path)])
    assert memory_bench.run(args) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    # a plain line every tenth instead (before: minutes of silence in a log)
    lines = [line for line in err.splitlines() if line.startswith("memory adds: ")]
    assert [line.split(" (")[0] for line in lines] == [f"memory adds: {n}/60"
                                                       for n in range(6, 61, 6)]


def test_a_pool_too_large_to_hold_is_refused_before_anything_is_made(tmp_path):
    """Before: --pool 100000000000 made every image up front and the benchmark hung."""
    import pytest

    from edgecl.errors import ConfigError

    parser = argparse.ArgumentParser()
    memory_bench.add_arguments(parser)
    # 32 px: 3072 bytes an image, so 2**30 // 3072 = 349525 fit in 1 GiB
    args = parser.parse_args(["--adds", "10", "--pool", "349526", "--imgsz", "32",
                              "--state-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match=r"^--pool 349526 images of 32 px would hold 1\.0 GiB "
                                          r"in memory \(at most 1 GiB: --pool 349525 at this "
                                          r"--imgsz\)$"):
        memory_bench.run(args)
    assert not (tmp_path / "memory").exists()
