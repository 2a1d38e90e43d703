"""tasks.yaml validation: a held-out image must never be a training image."""

import pytest

from edgecl.data.scenario import make_scenario
from edgecl.data.tasks import load_tasks
from edgecl.errors import ConfigError


def test_a_test_image_that_is_also_trained_on_is_refused(tmp_path):
    """Before: a test list pointing at a train list (or another task's images) loaded, and
    the benchmarks scored models on what they had learnt."""
    yaml_path = make_scenario(tmp_path / "s", tasks=2, images_per_task=8, imgsz=64, seed=1)
    assert len(load_tasks(yaml_path).tasks) == 2
    text = yaml_path.read_text()
    leak = tmp_path / "s" / "leak.yaml"
    leak.write_text(text.replace("test: tasks/t1/test.txt", "test: tasks/t1/train.txt"))
    with pytest.raises(ConfigError, match="is in task 't1''s test list and in task 't1''s train"):
        load_tasks(leak)
    cross = tmp_path / "s" / "cross.yaml"
    cross.write_text(text.replace("test: tasks/t2/test.txt", "test: tasks/t1/train.txt"))
    with pytest.raises(ConfigError, match="task 't2''s test list and in task 't1''s train list"):
        load_tasks(cross)
