"""The replay memory: a bounded, crash-safe store of labelled images on the device.

One public interface; the modules behind it are the package's own business:

- :mod:`.store`: :class:`ReplayMemory` (add, get, records, snapshot, verify, stats) and
  :func:`memory_from_config`;
- :mod:`.records`: what goes in (:class:`Sample`) and comes out (:class:`SampleRecord`,
  :class:`StoredSample`);
- :mod:`.snapshot`: :class:`MemorySnapshot`, the learner's immutable view;
- :mod:`.verify`: the checks behind :meth:`ReplayMemory.verify` and its :class:`VerifyReport`;
- :mod:`.admission` and :mod:`.policies`: which offered samples enter and which leave
  (reservoir, class-balanced, task-budget insertion policies);
- :mod:`.index`: the SQLite index; :mod:`.faults`: storage faults as one-line errors;
- :mod:`.rebuild`: a lost or damaged index rebuilt from the sample files and the newest
  snapshot (``edgecl memory verify --rebuild-index``);
- :mod:`.embedding`: the thumbnail embedding kept with each sample (novelty, near-duplicates).

Example::

    from edgecl.continual.memory import STREAM_TASK, ReplayMemory, Sample
    with ReplayMemory("state/memory") as memory:
        memory.add(Sample(image, labels, task=STREAM_TASK, origin=LabelOrigin.OPERATOR))
        snap = memory.snapshot()
"""

from edgecl.continual.memory.policies import POLICIES, InsertionPolicy, make_policy
from edgecl.continual.memory.records import (
    STREAM_TASK,
    DuplicateSampleError,
    MissingSampleError,
    Sample,
    SampleRecord,
    StoredSample,
)
from edgecl.continual.memory.snapshot import MemorySnapshot
from edgecl.continual.memory.store import (
    INDEX_FILE,
    ReplayMemory,
    estimate_sample_bytes,
    held_copy,
    memory_from_config,
    overhead_reserve_bytes,
)
from edgecl.continual.memory.verify import VerifyReport

__all__ = ["STREAM_TASK", "ReplayMemory", "Sample", "StoredSample", "SampleRecord", "MemorySnapshot",
           "DuplicateSampleError", "MissingSampleError", "held_copy",
           "VerifyReport", "memory_from_config", "overhead_reserve_bytes",
           "estimate_sample_bytes", "INDEX_FILE", "POLICIES", "InsertionPolicy", "make_policy"]
