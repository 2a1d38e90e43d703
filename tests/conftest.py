"""Test-wide settings: offline ultralytics, headless plots, one torch thread per test."""

import os

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture()
def run_edgecl(capsys):
    """Run the ``edgecl`` command line in this process.

    Returns:
        ``run(argv) -> (exit code, stdout, stderr)``; argparse's own exit (a usage error) counts
        as its code.
    """
    from edgecl.cli import main

    def run(argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse exits from inside parse_args
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
