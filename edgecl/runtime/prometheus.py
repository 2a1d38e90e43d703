"""Prometheus exposition of the monitor: gauges read from :meth:`Monitor.summary` at scrape time,
in a private registry (never the process-global one).

Per task: ``edgecl_map50_95{task=...}``, ``edgecl_forgetting{task=...}``. Per class (held-out
AP50-95 of the latest promoted version, and its forgetting over the promoted rounds):
``edgecl_class_ap50_95{class="car"}``, ``edgecl_class_forgetting{class="car"}``.
``edgecl_acc``, ``edgecl_bwt`` and ``edgecl_mean_forgetting`` come from the class view when
frames carry no task (see :mod:`edgecl.runtime.monitor`).
"""

from __future__ import annotations

import logging
import re

from edgecl.errors import StorageError
from edgecl.runtime.monitor import Monitor, MonitorError

LOG = logging.getLogger(__name__)


def version_number(version: str | None) -> float:
    """Numeric part of a version name (``v0012`` -> 12.0); NaN when there is none.

    Args:
        version: version name.

    Returns:
        The trailing integer as a float, or NaN.
    """
    match = re.search(r"(\d+)$", version or "")
    return float(match.group(1)) if match else float("nan")


_GAUGES = (
    ("edgecl_acc", "acc", "Mean box mAP50-95 over the tasks seen (latest promoted version)"),
    ("edgecl_bwt", "bwt", "Backward transfer of box mAP50-95 (negative: forgetting)"),
    ("edgecl_mean_forgetting", "mean_forgetting", "Mean forgetting over earlier tasks"),
    ("edgecl_dece", "dece", "Detection expected calibration error of the latest promoted version"),
    ("edgecl_dece_calibrated", "dece_calibrated",
     "D-ECE after post-hoc calibration (cross-fitted) of the latest promoted version"),
    ("edgecl_fps", "fps", "Inference rate: frames per second the model can take (a camera may "
                          "deliver fewer)"),
    ("edgecl_latency_ms_p50", "latency_ms_p50", "Median inference latency in milliseconds"),
    ("edgecl_memory_bytes", "memory_bytes", "Bytes held by the replay memory"),
    ("edgecl_memory_samples", "memory_samples", "Samples held by the replay memory"),
)


class _SummaryCollector:
    """prometheus_client collector that reads :meth:`Monitor.summary` on every scrape."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self):
        """Yield the metric families (an unreadable database yields ``edgecl_monitor_up 0``)."""
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        try:
            summary = self._monitor.summary()
        except (MonitorError, StorageError) as exc:
            LOG.warning("metrics scrape: %s", exc)
            yield GaugeMetricFamily("edgecl_monitor_up", "Metrics database readable", value=0)
            return
        yield GaugeMetricFamily("edgecl_monitor_up", "Metrics database readable", value=1)
        summary["dece_calibrated"] = (summary.get("calibration") or {}).get("dece_after")
        for name, key, doc in _GAUGES:
            if summary.get(key) is not None:
                yield GaugeMetricFamily(name, doc, value=float(summary[key]))
        for name, key, label, doc in (
                ("edgecl_forgetting", "forgetting", "task", "Forgetting per task"),
                ("edgecl_map50_95", "map50_95", "task", "Box mAP50-95 per task"),
                ("edgecl_class_ap50_95", "class_ap50_95", "class",
                 "Held-out box AP50-95 per class (latest promoted version)"),
                ("edgecl_class_forgetting", "class_forgetting", "class",
                 "Forgetting per class: best earlier AP50-95 minus latest")):
            family = GaugeMetricFamily(name, doc, labels=[label])
            for column, value in summary.get(key, {}).items():
                if value is not None:
                    family.add_metric([str(column)], float(value))
            yield family
        version = summary.get("model_version")
        if version is not None:
            yield GaugeMetricFamily("edgecl_model_version", "Numeric part of the served version",
                                    value=version_number(version))
            yield InfoMetricFamily("edgecl_model", "Served model version", value={"version": version})


class PrometheusExporter:
    """Prometheus text exposition of a :class:`Monitor`, in a private registry.

    Args:
        monitor: the monitor to read at each scrape.
    """

    def __init__(self, monitor: Monitor) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SummaryCollector(monitor))
        self.content_type: str = CONTENT_TYPE_LATEST

    def render(self) -> bytes:
        """The current metrics in the Prometheus text format.

        Returns:
            Bytes for a ``/metrics`` response body.
        """
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
