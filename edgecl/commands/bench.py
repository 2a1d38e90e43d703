"""``edgecl bench perf | memory | cl``: benchmarks that print their figures as JSON."""

from __future__ import annotations

import importlib

# INVARIANT: each module exposes add_arguments(parser) and run(args) -> int.
BENCHMARKS = {
    "perf": ("edgecl.bench.perf", "inference pipeline fps vs raw backend vs ultralytics"),
    "memory": ("edgecl.bench.memory_bench", "replay memory add rate, bounds and selection time"),
    "cl": ("edgecl.bench.cl", "continual-learning benchmark (strategies x budgets x seeds)"),
    "soak": ("edgecl.bench.soak", "accelerated long run: RSS, open files and disk stay flat"),
    "field": ("edgecl.bench.field", "field loop: learning from a few simulated operator labels"),
    "learn": ("edgecl.bench.learn", "learning speed: an edgecl round's training vs ultralytics' trainer"),
    "console": ("edgecl.bench.console_load", "web console: pipeline fps under API load and a live viewer"),
}


def add_parser(sub) -> None:
    """Register the ``bench`` command group."""
    p = sub.add_parser("bench", help=f"benchmarks ({', '.join(BENCHMARKS)})")
    bsub = p.add_subparsers(dest="bench_cmd", metavar="BENCH", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        bp = bsub.add_parser(name, help=help_text)
        module.add_arguments(bp)
        bp.set_defaults(func=module.run)
