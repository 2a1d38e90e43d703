"""encode_jpeg: JPEG's 65500-pixel side limit named in the error."""

import numpy as np
import pytest

from edgecl.continual.memory.records import encode_jpeg
from edgecl.errors import ReplayMemoryError


def test_a_frame_over_jpegs_side_limit_names_the_cause():
    with pytest.raises(ReplayMemoryError) as info:
        encode_jpeg(np.zeros((2, 70000, 3), np.uint8), 90, "frame 3 from cam")
    assert str(info.value) == ("frame 3 from cam: cannot be stored as JPEG (70000x2 pixels: a side "
                               "is over JPEG's limit of 65500 pixels)")


def test_a_frame_at_jpegs_side_limit_encodes():
    assert encode_jpeg(np.zeros((65500, 2, 3), np.uint8), 90, "x")[:2] == b"\xff\xd8"
