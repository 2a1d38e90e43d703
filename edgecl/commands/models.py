"""``edgecl models list | add | promote | rollback``: the versioned model registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgecl.commands.common import add_config_args, config_from_args, print_json_line
from edgecl.runtime.promote import promote_version


def add_parser(sub) -> None:
    """Register the ``models`` command group."""
    p = sub.add_parser("models", help="list, add, promote or roll back model versions")
    msub = p.add_subparsers(dest="models_cmd", metavar="ACTION", required=True)
    lst = msub.add_parser("list", help="list versions")
    add_config_args(lst)
    lst.add_argument("--json", action="store_true", help="print one JSON list")
    lst.set_defaults(func=list_command)
    add = msub.add_parser("add", help="stage a model file as a new version")
    add_config_args(add)
    add.add_argument("path", help="model file (.pt, .onnx, .engine)")
    add.add_argument("--promote", action="store_true", help="promote it right away")
    add.set_defaults(func=add_command)
    pro = msub.add_parser("promote", help="make a version current (the running loop swaps to it)")
    add_config_args(pro)
    pro.add_argument("version")
    pro.add_argument("--no-load-check", action="store_true",
                     help="skip test-loading the model before promoting")
    pro.set_defaults(func=promote_command)
    rb = msub.add_parser("rollback", help="return to the previously promoted version")
    add_config_args(rb)
    rb.set_defaults(func=rollback_command)


def _registry(args):
    from edgecl.models.registry import Registry

    return Registry(Path(config_from_args(args).state_dir) / "models")


def list_command(args: argparse.Namespace) -> int:
    """Print the registry's versions."""
    versions = _registry(args).list()
    if args.json:
        print_json_line([v.to_json() for v in versions])
        return 0
    if not versions:
        print("no model versions yet")
    for v in versions:
        mark = "*" if v.current else " "
        acc = v.metrics.get("acc")
        acc_text = f" acc={acc:.3f}" if isinstance(acc, (int, float)) else ""
        reason = f" ({v.manifest.get('reason')})" if v.manifest.get("reason") else ""
        print(f"{mark} {v.version} {v.status:<9} {v.created}{acc_text}{reason}")
    return 0


def check_loadable(registry, version: str, args: argparse.Namespace) -> None:
    """Load a version's model once, raising ModelLoadError if it cannot serve."""
    from edgecl.runtime.app import inference_options
    from edgecl.models.backends import load_backend

    opts = inference_options(config_from_args(args))
    backend = load_backend(registry.model_path(version), opts, warmup_runs=1)
    backend.close()


def add_command(args: argparse.Namespace) -> int:
    """Stage a model file (and optionally promote it)."""
    registry = _registry(args)
    version = registry.add(args.path)
    print(f"staged {version} from {args.path}")
    if args.promote:
        check_loadable(registry, version, args)
        promote_version(config_from_args(args).state_dir, version)
        print(f"promoted {version}")
    return 0


def promote_command(args: argparse.Namespace) -> int:
    """Promote a version after checking its files and that it loads."""
    registry = _registry(args)
    if not args.no_load_check:
        check_loadable(registry, args.version, args)
    promote_version(config_from_args(args).state_dir, args.version)
    print(f"promoted {args.version}")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    """Roll back to the previous promoted version."""
    version = _registry(args).rollback()
    print(f"rolled back to {version}")
    return 0
