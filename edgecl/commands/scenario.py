"""``edgecl scenario make``: write the built-in class-incremental scenario as a YOLO dataset."""

from __future__ import annotations

import argparse

from edgecl.arguments import output_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Create the ``scenario`` command group.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The ``scenario`` parser.
    """
    parser = subparsers.add_parser("scenario", help="generate the built-in continual-learning scenario")
    sub = parser.add_subparsers(dest="scenario_command", metavar="COMMAND", required=True)
    make = sub.add_parser("make", help="write the scenario (images, YOLO labels, tasks.yaml) to a folder")
    make.add_argument("--out", required=True, type=output_path,
                      help="output folder (new, empty, or an earlier scenario)")
    make.add_argument("--tasks", type=int, default=5, help="number of tasks (default 5)")
    make.add_argument("--images-per-task", type=int, default=60, help="images per task, all splits (default 60)")
    make.add_argument("--imgsz", type=int, default=160, help="square image side in pixels (default 160)")
    make.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    make.add_argument("--classes-per-task", type=int, default=2, help="classes each task introduces (default 2)")
    make.set_defaults(func=run_make)
    return parser


def summarize(yaml_path) -> str:
    """One-line summary of a tasks.yaml: images per split and classes per task.

    Args:
        yaml_path: path of the ``tasks.yaml``.

    Returns:
        The summary line.
    """
    from edgecl.data.tasks import load_tasks

    task_set = load_tasks(yaml_path)
    totals = {s: sum(len(t.split(s)) for t in task_set.tasks) for s in ("train", "val", "test")}
    per_task = "; ".join(f"{t.name}: {', '.join(task_set.names[c] for c in t.classes)}" for t in task_set.tasks)
    return (f"{len(task_set.tasks)} tasks, {task_set.nc} classes, images train {totals['train']} / "
            f"val {totals['val']} / test {totals['test']}; classes {per_task}")


def run_make(args: argparse.Namespace) -> int:
    """Run ``edgecl scenario make``.

    Args:
        args: parsed arguments.

    Returns:
        Exit status 0.

    Raises:
        ConfigError: invalid parameters or output folder.
    """
    from edgecl.data.scenario import make_scenario

    yaml_path = make_scenario(args.out, tasks=args.tasks, images_per_task=args.images_per_task,
                              imgsz=args.imgsz, seed=args.seed, classes_per_task=args.classes_per_task)
    print(yaml_path)
    print(summarize(yaml_path))
    return 0
