"""The benchmarks' cached starting detectors: a cache hit only for the same data."""

import numpy as np

from edgecl.bench.trained_model import images_fingerprint


def _dataset(root, seed):
    """Two images with labels, written the way a scenario is (regenerated in place)."""
    import cv2

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(2):
        image = root / "images" / f"{i}.jpg"
        label = root / "labels" / f"{i}.txt"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        label.write_text(f"0 0.5 0.5 {0.1 + 0.1 * seed:.2f} 0.2\n")
        paths.append(image)
    return paths


def test_a_dataset_regenerated_in_place_is_new_data_and_a_work_copy_is_not(tmp_path):
    """Before: the key held the tasks.yaml path only, so a scenario regenerated with another
    seed reused the detector trained on the old images."""
    import shutil

    first = images_fingerprint(_dataset(tmp_path / "d", seed=0))
    assert images_fingerprint(sorted((tmp_path / "d" / "images").iterdir())) == first
    shutil.copytree(tmp_path / "d", tmp_path / "copy")
    assert images_fingerprint(sorted((tmp_path / "copy" / "images").iterdir())) == first
    assert images_fingerprint(_dataset(tmp_path / "d", seed=1)) != first
    (tmp_path / "copy" / "labels" / "1.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    assert images_fingerprint(sorted((tmp_path / "copy" / "images").iterdir())) != first
