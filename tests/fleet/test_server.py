"""The fleet server module's Flower log settings: each deprecation banner once."""

import pytest

pytest.importorskip("flwr")


def test_flower_deprecation_banners_show_once_each():
    import logging

    from flwr.supercore.logger import warn_deprecated_feature

    from edgecl.fleet.server import FirstDeprecationOnly, quiet_flower_logs

    flower = logging.getLogger("flwr")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    flower.addHandler(handler)
    try:
        quiet_flower_logs()
        quiet_flower_logs()  # twice: still one filter
        assert sum(isinstance(f, FirstDeprecationOnly) for f in flower.filters) == 1
        for name in ("start_client() is deprecated", "start_client() is deprecated",
                     "something else", "start_client() is deprecated"):
            warn_deprecated_feature(name=name)
        flower.warning("connection lost")
        flower.warning("connection lost")
    finally:
        flower.removeHandler(handler)
        for f in [f for f in flower.filters if isinstance(f, FirstDeprecationOnly)]:
            flower.removeFilter(f)
    assert sum("start_client() is deprecated" in m for m in seen) == 1
    assert sum("something else" in m for m in seen) == 1
    assert seen.count("connection lost") == 2  # other warnings all pass
