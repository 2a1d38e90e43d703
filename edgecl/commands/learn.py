"""``edgecl learn``: run one learning round now (on demand), then promote if the gate passed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgecl.arguments import print_json_line
from edgecl.commands.common import (add_config_args, config_from_args, memory_given,
                                    refuse_smaller_memory, require_state_dir, with_device_memory)
from edgecl.errors import EdgeclError


def add_parser(sub) -> None:
    """Register ``edgecl learn``."""
    p = sub.add_parser("learn", help="run one learning round on the replay memory now")
    add_config_args(p)
    p.add_argument("--no-promote", action="store_true",
                   help="stage the candidate but leave the current version in place (also "
                        "after a restart: 'edgecl models promote VERSION' serves it)")
    p.add_argument("--again", action="store_true",
                   help="when every training sample was learnt already, learn them all again "
                        "(after a change of the learner's settings, say) instead of skipping")
    p.add_argument("--json", action="store_true", help="print the round's result as JSON")
    p.set_defaults(func=learn_command)


def learn_command(args: argparse.Namespace) -> int:
    """Run a round in this process (holding the round lock) and promote what it staged."""
    from edgecl.continual.round import NO_NEW_SAMPLES
    from edgecl.continual.round_state import RoundStatus
    from edgecl.runtime.learner import round_lock, run_learning_round
    from edgecl.runtime.promote import promote_version

    from edgecl.continual.cpu_engines import check_export_settings
    from edgecl.continual.round import check_start_model

    cfg = config_from_args(args)
    require_state_dir(cfg)  # a mistyped --state-dir would make an empty device and learn nothing
    cfg = with_device_memory(cfg, memory_given(args))
    refuse_smaller_memory(cfg)
    check_export_settings(cfg)  # an engine asked 'on' that cannot be built here: one line now
    check_start_model(cfg)  # IDER or freeze_layers the model cannot take: one line now
    if cfg.learner.device.startswith("cuda"):  # one line now, not a failed round's traceback
        from edgecl.continual.finetune import resolve_device

        resolve_device(cfg.learner.device)
    with round_lock(cfg.state_dir) as held:
        if not held:
            raise EdgeclError(f"a learning round is already running on {cfg.state_dir}")
        if not args.no_promote:
            # a round a stop cut short between its progress and its promotion left its version
            # staged: promoted as 'edgecl run' does at start (before, 'learn' found no new
            # sample, and the version stayed staged until a run)
            from edgecl.models.registry import Registry
            from edgecl.runtime.app import inference_options
            from edgecl.runtime.learner import promote_leftover_staged

            promote_leftover_staged(cfg, Registry(Path(cfg.state_dir) / "models"),
                                    inference_options(cfg))
        result = run_learning_round(cfg, reason="on_demand", hold=args.no_promote,
                                    again=args.again)
    serving = None
    if result.status is RoundStatus.STAGED and not args.no_promote:
        from edgecl.models.registry import Registry
        from edgecl.runtime.promote import hold_unpromoted, not_promoted_because

        registry = Registry(Path(cfg.state_dir) / "models")
        held = not_promoted_because(cfg.state_dir, registry, result.version)
        if held:
            serving = held[0]
            hold_unpromoted(cfg.state_dir, registry, result.version, serving)
            print(f"warning: {held[1]}", file=sys.stderr)
    if result.status is RoundStatus.STAGED and not args.no_promote and not serving:
        # (a version a rollback, a promotion or a class merge overtook is held above)
        promote_version(cfg.state_dir, result.version)
        result.status = RoundStatus.PROMOTED
        _warn_unguarded(cfg, result)
    if result.unsaved:
        _write_unsaved(cfg, result)
    if args.json:
        # a round that failed is a failed command: its 'error' is the line a script looks for
        print_json_line({**result.to_json(), **({"error": result.reason} if result.status is
                                                 RoundStatus.FAILED else {})})
    else:
        if result.round is None:  # skipped before a round number or version was given
            hint = ("; 'edgecl learn --again' learns the memory's samples again"
                    if result.reason == NO_NEW_SAMPLES and not args.again else "")
            print(f"no round: {result.status.value} ({result.reason}){hint}")
        else:
            version = f"{result.version} " if result.version else ""
            print(f"round {result.round}: {version}{result.status.value} ({result.reason})")
    return 0 if result.status in (RoundStatus.PROMOTED, RoundStatus.STAGED, RoundStatus.SKIPPED) else 1


def _warn_unguarded(cfg, result) -> None:
    """Say which classes the promoted round's gate could not measure, as the runtime's
    promotion does (before, 'learn' promoted without a word of them)."""
    from edgecl.runtime.learner import unguarded_warning

    warning = unguarded_warning(result, cfg.state_dir)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _write_unsaved(cfg, result) -> None:
    """Write from the version what a full disk kept the round from writing after staging it
    (its progress, its metrics record); what still cannot be written is a warning: the round
    and its version stand."""
    import logging
    from pathlib import Path

    from edgecl.models.registry import Registry
    from edgecl.runtime.learner import write_unsaved

    warn = logging.getLogger(__name__).warning
    try:
        if not write_unsaved(cfg.state_dir, Registry(Path(cfg.state_dir) / "models"), result):
            warn("round %s is not in the metrics database yet; the runtime records it from %s "
                 "once there is room (every start does too)", result.round, result.version)
    except EdgeclError as exc:
        warn("%s: the next round learns this round's samples again", exc)
