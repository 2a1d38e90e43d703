"""Command-line sub-commands of ``edgecl`` (one module per command group)."""
