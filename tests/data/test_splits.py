"""How split-tasks gives groups (flights) to train/val/test: greedy passes (one largest group
first, the others in fixed random orders), then the seed draws among the splits about as
balanced as the best one found.

Before: groups were taken largest first and the seed only broke ties between groups of equal
size, so with a dozen flights of different sizes every --seed gave the same split (on
hit-uav-dev, seeds 0, 1 and 2 gave identical lists, and the person task got no val image)."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml

from edgecl.data.splits import BALANCE_GAP, _assign_splits, _greedy_splits, _imbalance

RATIOS = (0.7, 0.1, 0.2)


def _flights():
    """Twelve flights of different sizes; task 0 in all, task 1 in some."""
    groups = {f"f{i:02d}": Counter({0: 5 + 3 * i, **({1: 2 + i} if i % 3 == 0 else {})})
              for i in range(12)}
    totals = Counter()
    for c in groups.values():
        totals.update(c)
    return groups, totals


def test_the_imbalance_by_hand():
    groups = {"a": Counter({0: 6}), "b": Counter({0: 2}), "c": Counter({0: 2})}
    totals = Counter({0: 10})
    # train 6 (target 7), val 2 (target 1), test 2 (target 2): (1/10)^2 + (1/10)^2 + 0
    split = {"a": "train", "b": "val", "c": "test"}
    assert abs(_imbalance(split, groups, totals, RATIOS) - 0.02) < 1e-12


def _rms(split, groups, totals):
    return math.sqrt(_imbalance(split, groups, totals, RATIOS) / (3 * len(totals)))


def test_seeds_draw_among_splits_about_as_balanced_as_largest_first():
    groups, totals = _flights()
    largest_first = _greedy_splits(sorted(groups, key=lambda g: -sum(groups[g].values())),
                                   groups, totals, RATIOS)
    drawn = [_assign_splits(groups, totals, RATIOS, seed) for seed in range(6)]
    assert len({tuple(sorted(split.items())) for split, _, _ in drawn}) > 1
    assert len({n for _, _, n in drawn}) == 1 and drawn[0][2] > 1  # the same choice for every seed
    assert all(1 <= rank <= n for _, rank, n in drawn)
    assert len({rank for _, rank, _ in drawn}) == len({tuple(sorted(s.items())) for s, _, _ in drawn})
    for split, _, _ in drawn:
        assert set(split) == set(groups)
        assert _rms(split, groups, totals) <= _rms(largest_first, groups, totals) + BALANCE_GAP
    assert _assign_splits(groups, totals, RATIOS, 3) == drawn[3]  # the same seed, the same split


def test_where_one_split_alone_is_balanced_every_seed_gives_it():
    # 7, 2 and 1 images: train 7, test 2, val 1 is exact; nothing else comes close
    groups = {"a": Counter({0: 7}), "b": Counter({0: 2}), "c": Counter({0: 1})}
    totals = Counter({0: 10})
    for seed in range(4):
        assert _assign_splits(groups, totals, RATIOS, seed) == (
            {"a": "train", "b": "test", "c": "val"}, 1, 1)


def test_a_split_that_leaves_a_task_without_test_images_loses_to_one_that_does_not():
    # one group holds most of task 1: the most balanced split for task 0 alone would put
    # every task-1 image in train
    groups = {"big": Counter({0: 40, 1: 3}), "mid": Counter({0: 12}), "small": Counter({0: 8}),
              "t1": Counter({1: 1})}
    totals = Counter({0: 60, 1: 4})
    for seed in range(3):
        split, _, _ = _assign_splits(groups, totals, RATIOS, seed)
        tested = Counter()
        for g, s in split.items():
            if s == "test":
                tested.update(groups[g])
        assert tested[0] and tested[1]


def test_the_command_says_which_balanced_split_its_seed_took(tmp_path, capsys):
    """Before: 'chose this split among 9': two seeds taking the same split could not be told
    (seeds 100 and -1 of hit-uav-dev did)."""
    import cv2
    import numpy as np

    from edgecl.cli import main

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "labels").mkdir()
    for i in range(12):  # 12 flights of 1-12 frames, one class
        for j in range(i + 1):
            name = f"{i}_{j}"
            cv2.imwrite(str(ds / "images" / f"{name}.jpg"), np.zeros((8, 8, 3), np.uint8))
            (ds / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (ds / "data.yaml").write_text("train: images\nnames: {0: car}\n")
    ranks = []
    for seed in range(4):
        assert main(["dataset", "split-tasks", str(ds), "--tasks", "car", "--group-by", r"^(\d+)_",
                     "--seed", str(seed), "--out", str(tmp_path / f"t{seed}.yaml"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert 1 <= result["split_rank"] <= result["balanced_splits"]
        ranks.append(result["split_rank"])
        lists = (tmp_path / f"t{seed}" / "t1" / "test.txt").read_text()
        if seed and ranks[seed] == ranks[0]:  # the same rank is the same split
            assert lists == (tmp_path / "t0" / "t1" / "test.txt").read_text()
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car", "--group-by", r"^(\d+)_",
                 "--seed", "1", "--out", str(tmp_path / "text.yaml")]) == 0
    assert (f"--seed 1 took split {ranks[1]} of the " in capsys.readouterr().out)


def _frames_dataset(ds: Path, stems: list[str], names: str) -> Path:
    """A YOLO folder of black 8x8 images named ``stems``, image k labelled with class
    ``k % len(names)`` (``names``: YAML mapping text)."""
    import cv2
    import numpy as np

    (ds / "images").mkdir(parents=True)
    (ds / "labels").mkdir()
    n = len(yaml.safe_load(names))
    for k, stem in enumerate(stems):
        cv2.imwrite(str(ds / "images" / f"{stem}.jpg"), np.zeros((8, 8, 3), np.uint8))
        (ds / "labels" / f"{stem}.txt").write_text(f"{k % n} 0.5 0.5 0.5 0.5\n")
    (ds / "data.yaml").write_text(f"train: images\nnames: {names}\n")
    return ds


def test_a_split_written_again_with_fewer_tasks_leaves_no_stale_task_lists(tmp_path, capsys):
    """Before: a 3-task split rewritten as 2 tasks into the same file left tasks/t3/ behind."""
    from edgecl.cli import main

    ds = _frames_dataset(tmp_path / "ds", [str(i) for i in range(12)],
                         "{0: car, 1: bike, 2: person}")
    out = tmp_path / "tasks.yaml"
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike;person",
                 "--out", str(out)]) == 0
    mine = tmp_path / "tasks" / "notes"  # a folder of the user's own beside the lists: kept
    mine.mkdir()
    (mine / "readme.md").write_text("mine")
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == ["notes", "t1", "t2", "t3"]
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike,person",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == ["notes", "t1", "t2"]


def test_names_of_numbered_frames_split_without_group_by_are_warned_of(tmp_path, capsys):
    """Before: hit-uav-dev's frames (1_60_30_0_00062.jpg) were split frame by frame, unsaid,
    although its README warns that this lets near twins into train and test."""
    import cv2
    import numpy as np

    from edgecl.cli import main
    from edgecl.data.splits import sequence_names

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "labels").mkdir()
    for flight in range(4):
        for frame in range(5):
            name = f"{flight}_60_30_0_{frame:05d}"
            cv2.imwrite(str(ds / "images" / f"{name}.jpg"), np.zeros((8, 8, 3), np.uint8))
            (ds / "labels" / f"{name}.txt").write_text(f"{frame % 2} 0.5 0.5 0.5 0.5\n")
    (ds / "data.yaml").write_text("train: images\nnames: {0: car, 1: bike}\n")
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike",
                 "--out", str(tmp_path / "a.yaml")]) == 0
    err = capsys.readouterr().err
    assert ("warning: the image names look like frames of 4 sequences (20 frames, e.g. "
            "0_60_30_0_00000): split frame by frame") in err
    assert "--group-by '^(.+)[_.-]\\d+\\.[^.]+$' keeps each sequence in one split" in err
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--json",
                 "--out", str(tmp_path / "j.yaml")]) == 0
    said = capsys.readouterr()  # before: with --json, in the JSON only (a log lost it)
    assert json.loads(said.out)["sequence_names"]["sequences"] == 4
    assert "warning: the image names look like frames of 4 sequences" in said.err
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--group-by",
                 r"^(.+)[_.-]\d+\.[^.]+$", "--out", str(tmp_path / "b.yaml"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["groups"] == 4 and result["sequence_names"] is None  # the hint works
    # names that are no sequences: photos with their own numbers, or a few frames each
    assert sequence_names([f"IMG_{k}" for k in range(10)]) is None  # one sequence
    assert sequence_names([f"a{k}_1" for k in range(10)]) is None   # 1 frame each
    assert sequence_names(["car", "bike", "x_1", "x_2", "x_3"]) is None  # 60 % numbered


def test_sequence_blocks_number_blocks_on_across_sequences_in_frame_order():
    from edgecl.data.splits import sequence_blocks

    # two sequences, frames sampled every 5 numbers and listed out of order; blocks of 2 frames
    stems = ["b_0010", "a_0105", "a_0100", "a_0110", "b_0005", "b_0000", "a_0115", "a_0120"]
    assert sequence_blocks(stems, frames_per_block=2) == {
        "a_0100": ("a", 0), "a_0105": ("a", 0), "a_0110": ("a", 1), "a_0115": ("a", 1),
        "a_0120": ("a", 2),  # a's 5 frames take blocks 0-2; b's start at 3
        "b_0000": ("b", 3), "b_0005": ("b", 3), "b_0010": ("b", 4)}
    # one numbered series (one flight's frames, or photos as a camera numbers them) is held
    # out in blocks too: before, it was drawn image by image
    one = sequence_blocks([f"img_{k}" for k in range(40)])
    assert len(one) == 40 and one["img_9"] == ("img", 0) and one["img_10"] == ("img", 1)
    assert sequence_blocks(["x", "y", "z"]) == {}
    assert sequence_blocks(["x_1", "x_2"]) == {}  # under 3 frames a sequence: not one



def test_a_small_import_is_cut_into_at_least_min_blocks_and_folders_name_sequences():
    from edgecl.data.splits import frame_name, sequence_blocks

    # 2 x 15 frames: blocks of 10 would be 4, fewer than the 10 a 10 % draw needs to hold one
    # out; cut into blocks of 30 // 10 = 3 frames instead: 5 blocks per sequence
    names = [f"images/seq{s}_{k:05d}" for s in range(2) for k in range(15)]
    blocks = sequence_blocks(names, min_blocks=10)
    assert sorted(set(b for _, b in blocks.values())) == list(range(10))
    assert blocks["images/seq0_00002"] == ("images/seq0", 0)
    assert blocks["images/seq0_00003"] == ("images/seq0", 1)
    assert blocks["images/seq1_00000"] == ("images/seq1", 5)
    # a folder per sequence (VisDrone, MOT): the same frame numbers in two folders are two
    # sequences, not one
    paths = [Path(f"/d/images/uav000{s}/{k:07d}.jpg") for s in (1, 2) for k in range(1, 16)]
    named = sequence_blocks([frame_name(p) for p in paths])
    assert len({seq for seq, _ in named.values()}) == 2 and len(named) == 30
    assert named[frame_name(paths[0])] == ("images/uav0001", 0)


def test_mot_sequences_whose_frame_folders_share_one_name_are_two_sequences():
    """Before: MOTChallenge's layout (every sequence's frames in its own ``img1`` folder) was
    named ``img1/000001`` for every sequence: the same names, read as one sequence's."""
    from edgecl.data.splits import frame_name, sequence_blocks

    paths = [Path(f"/mot/train/MOT17-0{s}/img1/{k:06d}.jpg") for s in (2, 4) for k in range(1, 21)]
    assert frame_name(paths[0]) == "MOT17-02/img1/000001"
    named = sequence_blocks([frame_name(p) for p in paths])
    assert len(named) == 40
    assert named[frame_name(paths[0])] == ("MOT17-02/img1", 0)
    assert named[frame_name(paths[20])] == ("MOT17-04/img1", 2)
    assert frame_name(Path("flight03_frame_0004.jpg")) == "flight03_frame_0004"
    assert frame_name(Path("0004.jpg")) == "0004"


def test_frames_of_one_recording_are_warned_of_with_a_block_group_by(tmp_path, capsys):
    """Before: one numbered series (img_0000 ... img_0059) was split frame by frame unsaid
    (a group per sequence cannot split one), while 'labels import' holds the same names out in
    blocks of 10 frames."""
    from edgecl.cli import main

    ds = _frames_dataset(tmp_path / "ds", [f"img_{frame:04d}" for frame in range(60)],
                         "{0: car, 1: bike}")
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike",
                 "--out", str(tmp_path / "a.yaml")]) == 0
    err = capsys.readouterr().err
    hint = r"^(.+[_.-]\d*?)\d\.[^.]+$"
    assert ("warning: the image names look like frames of one recording (60 frames, e.g. "
            "img_0000): if they are, split frame by frame, a test frame has near twins in train "
            f"and test scores read too high; --group-by '{hint}' splits it in blocks of 10 "
            "consecutive frames (a test split of other recordings is better still)") in err
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--group-by", hint,
                 "--ratios", "0.6,0.2,0.2", "--out", str(tmp_path / "b.yaml"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["groups"] == 6 and result["ungrouped"] == 0 and result["sequence_names"] is None
    blocks = {s: {Path(p).stem[:-1] for t in ("t1", "t2")
                  for p in (tmp_path / "b" / t / f"{s}.txt").read_text().split()}
              for s in ("train", "test")}
    assert blocks["train"] and blocks["test"] and not blocks["train"] & blocks["test"]


def test_a_group_by_that_backtracks_without_end_is_one_line_not_a_hang(tmp_path, capsys,
                                                                       monkeypatch):
    """Before: '^(\\d*_?\\d*_?\\d*)*\\.png' searched hit-uav-like names for hours."""
    import signal

    from edgecl.cli import main
    from edgecl.data import splits

    monkeypatch.setattr(splits, "GROUP_BY_LIMIT_S", 0.3)
    stems = [f"{i}_60_30_0_0123456789012345678901{i}" for i in range(4)]
    ds = _frames_dataset(tmp_path / "ds", stems, "{0: car, 1: bike}")
    before = signal.getsignal(signal.SIGALRM)
    runaway = r"^(\d*_?\d*_?\d*)*\.png"
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--group-by", runaway,
                 "--out", str(tmp_path / "tasks.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --group-by '{runaway}' took over 0.3 s on the image name "
                   f"'{stems[0]}.jpg': an expression with nested repeats such as (\\d*_?)* "
                   f"backtracks without end; write it without them (e.g. '^(.+)_\\d+\\.')\n")
    assert signal.getsignal(signal.SIGALRM) is before  # the alarm is the command's no more
    assert not (tmp_path / "tasks.yaml").exists()
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--group-by",
                 r"^(\d+)_", "--out", str(tmp_path / "tasks.yaml")]) == 0


def test_lists_of_the_users_own_beside_no_tasks_yaml_are_not_replaced(tmp_path, capsys):
    """Before: the first split into mine.yaml replaced mine/t1/train.txt, a list of the user's
    own named like a split list, without a word; a later one removed any folder of lists
    beside it (mine/my_experiment/); and a scenario's tasks.yaml given as --out was replaced."""
    from edgecl.cli import main
    from edgecl.data.scenario import make_scenario

    ds = _frames_dataset(tmp_path / "ds", [str(i) for i in range(8)], "{0: car, 1: bike}")
    own = tmp_path / "mine" / "t1" / "train.txt"
    own.parent.mkdir(parents=True)
    own.write_text("my own list\n")
    out = tmp_path / "mine.yaml"
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {own.parent} holds train.txt, which no split into mine.yaml wrote: it would be "
        f"replaced; write the tasks.yaml in another folder\n")
    assert own.read_text() == "my own list\n" and not out.exists()
    own.unlink()  # an empty folder is taken, and a second split replaces the first one's lists
    experiment = tmp_path / "mine" / "my_experiment" / "train.txt"  # the user's, never named
    experiment.parent.mkdir()
    experiment.write_text("kept\n")
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--out", str(out)]) == 0
    assert out.read_text().startswith("# written by edgecl dataset split-tasks")
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car,bike", "--out", str(out)]) == 0
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["my_experiment", "t1"]
    assert experiment.read_text() == "kept\n"  # before: removed as a stale task's lists
    capsys.readouterr()
    scenario = make_scenario(tmp_path / "scn", tasks=3, images_per_task=6, imgsz=64)
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--out",
                 str(scenario)]) == 2  # before: replaced, and its tasks/t3 removed
    assert capsys.readouterr().err.startswith(
        f"error: --out {scenario} is a tasks.yaml that dataset split-tasks did not write (a "
        f"scenario's, or one of your own)")
    assert (scenario.parent / "tasks" / "t3" / "train.txt").is_file()


@pytest.mark.parametrize("group_by, expected", [
    # before: internal errors (exit 1)
    ("a{99999999999}", "error: --group-by 'a{99999999999}' is not a regular expression Python can "
                       "use: the repetition number is too large\n"),
    ("(" * 3000 + "a" + ")" * 3000, "error: --group-by '" + "(" * 77 + "...' (6001 characters) is "
                                     "not a regular expression Python can use: maximum recursion "
                                     "depth exceeded\n"),
])
def test_a_group_by_python_cannot_compile_is_one_line(tmp_path, capsys, group_by, expected):
    from edgecl.cli import main

    ds = _frames_dataset(tmp_path / "ds", [f"f_{i:03d}" for i in range(12)], "{0: car, 1: bike}")
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--group-by", group_by,
                 "--out", str(tmp_path / "t.yaml")]) == 2
    assert capsys.readouterr().err == expected


def test_a_group_that_takes_no_part_in_the_match_is_no_group(tmp_path, capsys):
    """Before: '(f_00)|f_01' matched f_010 by its second branch, its group was None, and the
    split failed with an internal error (None compared with a name)."""
    from edgecl.cli import main

    ds = _frames_dataset(tmp_path / "ds", [f"f_{i:03d}" for i in range(20)], "{0: car, 1: bike}")
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--group-by",
                 "(f_00)|f_01", "--out", str(tmp_path / "t.yaml")]) == 0
    assert "10 image name(s) did not match --group-by '(f_00)|f_01'" in capsys.readouterr().err


def test_a_group_by_slow_on_every_name_stops_at_its_total_budget(tmp_path, capsys, monkeypatch):
    """Before: each name stayed under the per-name limit, and 78 names took 44 s."""
    from edgecl.cli import main
    from edgecl.data import splits

    monkeypatch.setattr(splits, "GROUP_BY_TOTAL_S", 0.5)
    stems = [f"flight_0000000000000000_{i:03d}" for i in range(60)]  # tens of ms per name
    ds = _frames_dataset(tmp_path / "ds", stems, "{0: car, 1: bike}")
    assert main(["dataset", "split-tasks", str(ds), "--tasks", "car;bike", "--group-by",
                 r"^(?:\w*){7}(Q)", "--out", str(tmp_path / "t.yaml")]) == 2
    assert capsys.readouterr().err.startswith(
        r"error: --group-by '^(?:\w*){7}(Q)' took over 0.5 s over the image names: an expression")


@pytest.mark.parametrize("name", ['"q"', "0", "1_0", "yes", "null", "~", "a: b", "#c",
                                  "truck, 5: bus", "truck, 1: bus", "café", "it's", "-x"])
def test_class_names_read_back_from_the_tasks_yaml_as_the_dataset_names_them(tmp_path, capsys,
                                                                              name):
    """Before: split-tasks wrote names unquoted: a class '"q"' read back as 'q', and '0',
    'yes', 'null', 'a: b' as a number, a boolean, nothing or a YAML error (no tasks.yaml)."""
    from edgecl.cli import main
    from edgecl.data.tasks import load_tasks

    ds = _frames_dataset(tmp_path / "ds", [str(i) for i in range(12)],
                         "{0: car, 1: " + json.dumps(name, ensure_ascii=False) + "}")
    out = tmp_path / "tasks.yaml"
    # where a class is named by a number, a number in --tasks is a name: '0' names it
    second = name if name.isdigit() else "1"
    assert main(["dataset", "split-tasks", str(ds), "--tasks", f"car;{second}", "--out",
                 str(out)]) == 0
    capsys.readouterr()
    assert load_tasks(out).names == {0: "car", 1: name}
