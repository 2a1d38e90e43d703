"""Where training labels come from: ground truth travelling with frames, an operator queue fed
by selection policies, pseudo-labels from calibrated confident detections (the README's
"Teaching your device").

Public interface:
    - :class:`MemorySink` (the loop sink), :class:`LabelPipeline`, :func:`decide_labels`,
      :func:`describe_labelling`, :func:`learns_nothing`, :func:`uncalibrated_note`,
      :func:`no_threshold_note`;
    - :class:`OperatorQueue` (``pending``, ``item``, ``image_path``, ``answer``, ``skip``;
      what an answer may be is :mod:`edgecl.data.answers`);
    - :class:`PseudoLabeler`;
    - :data:`SELECTION_POLICIES`, :class:`Selector`, :class:`SelectionContext`.
"""

from edgecl.runtime.labels.pipeline import (MODES, LabelDecision, LabelPipeline, MemorySink,
                                            decide_labels, describe_labelling, labelling_conf,
                                            learns_nothing, no_threshold_note, uncalibrated_note,
                                            uncertain_band_problem)
from edgecl.runtime.labels.pseudo import PseudoLabeler
from edgecl.runtime.labels.queue import OperatorQueue, answered_provenance
from edgecl.continual.memory.embedding import embedding_distance, thumbnail_embedding
from edgecl.runtime.labels.selection import (SELECTION_POLICIES, Candidate, MemoryEmbeddings,
                                             NoveltyRing, RateLimiter, SelectionContext, Selector)

__all__ = ["MODES", "LabelDecision", "LabelPipeline", "MemorySink", "decide_labels",
           "describe_labelling", "learns_nothing", "no_threshold_note", "uncalibrated_note",
           "uncertain_band_problem", "labelling_conf",
           "PseudoLabeler",
           "OperatorQueue", "answered_provenance", "SELECTION_POLICIES", "Candidate",
           "MemoryEmbeddings", "NoveltyRing", "RateLimiter", "SelectionContext", "Selector",
           "embedding_distance", "thumbnail_embedding"]
