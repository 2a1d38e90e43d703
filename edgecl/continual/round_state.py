"""What the learner remembers between rounds (``STATE/learner/state.json``, written atomically)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgecl.atomic import atomic_write_json


@dataclass
class LearnerState:
    """Progress of continual learning on this device.

    Attributes:
        round: number of the last finished round (0 before any).
        last_sample_id: highest memory sample id already learnt (newer ones are "new").
        task_order: task names in the order they first appeared.
        learnt_tasks: tasks that a promoted model has learnt.
        task_classes: task -> classes it introduced.
    """

    round: int = 0
    last_sample_id: int = 0
    task_order: list[str] = field(default_factory=list)
    learnt_tasks: list[str] = field(default_factory=list)
    task_classes: dict[str, list[int]] = field(default_factory=dict)


def state_path(state_dir: str | Path) -> Path:
    """Return the path of the learner state file."""
    return Path(state_dir) / "learner" / "state.json"


def load_state(state_dir: str | Path) -> LearnerState:
    """Read the learner state (a fresh one when missing or unreadable)."""
    path = state_path(state_dir)
    if not path.is_file():
        return LearnerState()
    try:
        data = json.loads(path.read_text())
        return LearnerState(**{k: v for k, v in data.items() if k in LearnerState.__dataclass_fields__})
    except (json.JSONDecodeError, TypeError):
        return LearnerState()


def save_state(state_dir: str | Path, state: LearnerState) -> None:
    """Write the learner state atomically."""
    atomic_write_json(state_path(state_dir), asdict(state))


def update_task_bookkeeping(state: LearnerState, records) -> None:
    """Extend the task order and per-task classes with tasks seen in ``records``.

    A task's classes are those its samples carry that no earlier task introduced.

    Args:
        state: learner state (modified in place).
        records: memory records (any order) with ``id``, ``task`` and ``classes``.
    """
    first_id: dict[str, int] = {}
    classes: dict[str, set[int]] = {}
    for rec in records:
        first_id[rec.task] = min(rec.id, first_id.get(rec.task, rec.id))
        classes.setdefault(rec.task, set()).update(int(c) for c in rec.classes)
    for task in sorted(first_id, key=first_id.get):
        if task not in state.task_order:
            state.task_order.append(task)
    introduced: set[int] = set()
    for task in state.task_order:
        known = set(state.task_classes.get(task, []))
        new = (classes.get(task, set()) | known) - introduced if task not in state.learnt_tasks else known
        state.task_classes[task] = sorted(new)
        introduced |= set(state.task_classes[task])
