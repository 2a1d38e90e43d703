"""``deploy/jetson-setup.sh``'s options, run for real up to its first check of the machine
(it runs as root on a Jetson: every mistake in its options must stop it before any step)."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "jetson-setup.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("argv, message", [
    (["-m", "0", "8G", "-U"], "unexpected argument '8G': every value follows its option (see -h)"),
    (["4G", "-s", "4G", "-U", "-C"],
     "unexpected argument '4G': every value follows its option (see -h)"),
    (["-f", "/mnt/my swap"],
     "swap file must be an absolute path without blanks, got '/mnt/my swap'"),
    (["-f", ""], "swap file must be an absolute path without blanks, got ''"),
    (["-f", "swapfile"], "swap file must be an absolute path without blanks, got 'swapfile'"),
    (["-s", "8 G"], "swap size must look like 8G or 4096M (a unit: K, M or G; 0 skips), got '8 G'"),
    # before: accepted, and fallocate made a 4 KiB file that mkswap refused
    (["-s", "4096"], "swap size must look like 8G or 4096M (a unit: K, M or G; 0 skips), got "
                     "'4096'"),
    (["-x"], "unknown option -x (see -h)"),
])
def test_a_mistake_in_the_options_stops_the_script_before_any_step(argv, message):
    """Before: getopts stopped at '8G', so '-m 0 8G -U' installed the unit it was told not to,
    and a swap path with a blank wrote a broken /etc/fstab line."""
    done = _run(*argv)
    assert done.returncode == 2 and done.stderr == f"jetson-setup: error: {message}\n"
    assert done.stdout == ""


def test_good_options_reach_the_machine_check():
    done = _run("-m", "2", "-s", "4G", "-f", "/var/swapfile", "-C", "-U")
    assert done.returncode == 2 and "jetson-setup: error: " in done.stderr
    assert "run as root" in done.stderr or "not a Jetson" in done.stderr


def test_help_lists_every_option():
    done = _run("-h")
    assert done.returncode == 0
    for option in ("-m POWER_MODE", "-s SWAP_SIZE", "-f SWAP_FILE", "-C", "-U"):
        assert option in done.stdout
