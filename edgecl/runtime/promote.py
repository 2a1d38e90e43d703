"""Promotion in one place: the registry's ``current`` pointer and the monitor's record agree."""

from __future__ import annotations

from pathlib import Path


def promote_version(state_dir: str | Path, version: str) -> None:
    """Promote a registry version and mark its round as promoted in the metrics database.

    Args:
        state_dir: the state directory.
        version: registry version name.

    Raises:
        RegistryError: unknown, rejected or corrupt version.
    """
    from edgecl.models.registry import Registry
    from edgecl.runtime.monitor import Monitor

    Registry(Path(state_dir) / "models").promote(version)
    Monitor(state_dir).set_version_status(version, "promoted")

