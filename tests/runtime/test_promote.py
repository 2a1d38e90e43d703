"""Rolling back rewinds the learner's progress to the version now serving."""

from edgecl.continual.round_state import LearnerState, load_state, save_state
from edgecl.models.registry import Registry
from edgecl.runtime.promote import rollback_version


def _stage(registry: Registry, tmp_path, payload: bytes, **meta) -> str:
    src = tmp_path / "src.onnx"
    src.write_bytes(payload)
    return registry.stage({"model.onnx": src}, meta)


def test_rollback_makes_the_retired_versions_samples_new_again(tmp_path):
    registry = Registry(tmp_path / "models")
    root = _stage(registry, tmp_path, b"a", source="user.pt")  # 'edgecl models add': no parent
    first = _stage(registry, tmp_path, b"b", parent=root, learnt_up_to=40)
    second = _stage(registry, tmp_path, b"c", parent=first, learnt_up_to=90)
    for version in (root, first, second):
        registry.promote(version)
    save_state(tmp_path, LearnerState(round=2, last_sample_id=90))
    # before: 'edgecl learn' then said "no new labelled samples" although the serving version
    # had never learnt samples 41..90 (a class taught only to the retired one included)
    assert rollback_version(tmp_path, registry) == first
    assert load_state(tmp_path).last_sample_id == 40 and load_state(tmp_path).round == 2
    assert rollback_version(tmp_path) == root  # a user's model learnt no sample of this memory
    assert load_state(tmp_path).last_sample_id == 0
    registry.promote(second)
    old = _stage(registry, tmp_path, b"d", parent=second)  # recorded no progress (older release)
    registry.promote(old)
    save_state(tmp_path, LearnerState(last_sample_id=7))
    assert rollback_version(tmp_path, registry) == second
    assert load_state(tmp_path).last_sample_id == 7  # never moved forward by a rollback
