"""tasks.yaml and benchmarks: a benchmark never scores on a training image."""

import pytest

from edgecl.data.scenario import make_scenario
from edgecl.data.tasks import load_tasks, refuse_trained_test_images
from edgecl.errors import ConfigError


def test_a_test_image_that_is_also_trained_on_is_refused_for_scoring(tmp_path):
    """Before: a test list pointing at a train list (or another task's images) was benchmarked,
    and held-out mAP was measured on training images. Streaming such a file stays possible."""
    yaml_path = make_scenario(tmp_path / "s", tasks=2, images_per_task=8, imgsz=64, seed=1)
    assert len(refuse_trained_test_images(load_tasks(yaml_path)).tasks) == 2
    text = yaml_path.read_text()
    leak = tmp_path / "s" / "leak.yaml"
    leak.write_text(text.replace("test: tasks/t1/test.txt", "test: tasks/t1/train.txt"))
    with pytest.raises(ConfigError, match="is in task 't1''s test list and in task 't1''s train"):
        refuse_trained_test_images(load_tasks(leak))
    cross = tmp_path / "s" / "cross.yaml"
    cross.write_text(text.replace("test: tasks/t2/test.txt", "test: tasks/t1/train.txt"))
    with pytest.raises(ConfigError, match="task 't2''s test list and in task 't1''s train list"):
        refuse_trained_test_images(load_tasks(cross))
    assert len(load_tasks(cross).tasks) == 2  # loading (and streaming) it is fine


def test_a_val_list_may_repeat_the_train_list(tmp_path):
    """As ultralytics datasets often do (val: images/train): nothing scores on val."""
    yaml_path = make_scenario(tmp_path / "s", tasks=1, images_per_task=8, imgsz=64, seed=1)
    same = tmp_path / "s" / "same.yaml"
    same.write_text(yaml_path.read_text().replace("val: tasks/t1/val.txt", "val: tasks/t1/train.txt"))
    assert refuse_trained_test_images(load_tasks(same)).tasks[0].val == load_tasks(same).tasks[0].train


def test_bench_cl_refuses_a_dataset_that_scores_on_training_images(tmp_path, capsys):
    from edgecl.cli import main

    yaml_path = make_scenario(tmp_path / "s", tasks=2, images_per_task=8, imgsz=64, seed=1)
    leak = tmp_path / "s" / "leak.yaml"
    leak.write_text(yaml_path.read_text().replace("test: tasks/t1/test.txt", "test: tasks/t1/train.txt"))
    assert main(["bench", "cl", "--data", str(leak), "--imgsz", "64", "--out", str(tmp_path / "o"),
                 "--strategies", "finetune"]) == 2
    assert "must never score on a training image" in capsys.readouterr().err


def test_a_tasks_file_that_gives_one_class_two_ids_is_refused(tmp_path):
    """Before: names [car, truck, Car] loaded, and an import of the file merged ids 0 and 2."""
    import yaml

    yaml_path = make_scenario(tmp_path / "s", tasks=1, images_per_task=8, imgsz=64, seed=1)
    data = yaml.safe_load(yaml_path.read_text())
    names = data["names"]
    first = names[0] if isinstance(names, list) else names[min(names)]
    if isinstance(names, list):
        names.append(first.upper())
    else:
        names[max(names) + 1] = first.upper()
    yaml_path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="differ only in case or separators"):
        load_tasks(yaml_path)


def test_a_datasets_data_yaml_given_for_a_tasks_yaml_says_how_to_make_one(tmp_path):
    """Before: 'data.yaml: unknown key 'train' in the top level', read as a malformed file, for
    the data.yaml that 'dataset import' had just printed."""
    data = tmp_path / "ds" / "data.yaml"
    data.parent.mkdir()
    data.write_text("path: .\ntrain: images\nval: images\nnames: [car]\n")
    with pytest.raises(ConfigError) as err:
        load_tasks(data)
    assert str(err.value) == (
        f"{data}: is a dataset's data.yaml, not a tasks.yaml (it has no 'tasks'): split it into "
        f"tasks with 'edgecl dataset split-tasks {data.parent} --tasks \"a,b;c\" --out "
        f"{data.parent}/tasks.yaml'")
