"""``edgecl bench perf``: how it holds its frames, and what it says of options it cannot use."""




def test_frames_are_decoded_once_within_a_byte_bound(tmp_path, caplog):
    """Before: every frame of --frames was decoded and held (3,000 frames of 640x512: 3.6 GB;
    --frames 20000 would not fit in memory), and a short source was decoded again each pass."""
    import logging

    import cv2
    import numpy as np

    from edgecl.bench.perf import read_frames

    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((32, 40, 3), 40 * i, np.uint8))
    frames = read_frames(f"dir://{tmp_path}", 12)
    assert len(frames) == 12 and len({id(f) for f in frames}) == 5  # the 5 images, repeated
    assert [int(f.image[0, 0, 0]) for f in frames[:6]] == [0, 40, 80, 120, 160, 0]
    with caplog.at_level(logging.INFO, logger="edgecl.bench.perf"):
        held = read_frames(f"dir://{tmp_path}?loop=1", 1000, max_bytes=3 * 32 * 40 * 3)
    assert len(held) == 1000 and len({id(f) for f in held}) == 3  # 3 frames fill the bound
    assert "measuring 1000 frames on the 3 decoded ones" in caplog.text


def test_a_frame_count_past_the_bound_is_one_line(run_edgecl):
    code, _, err = run_edgecl(["bench", "perf", "--frames", "99999999999999999999", "--model",
                               "x.onnx"])
    assert code == 2 and err.strip().splitlines()[-1].startswith(
        "error: argument --frames: expected at most 1000000 frames, got 99999999999999999999")


def test_an_imgsz_the_model_does_not_use_is_said(tmp_path, caplog):
    """Before: '--imgsz 128' on a model exported at 64 was taken without a word."""
    import logging

    import cv2
    import numpy as np

    from edgecl.cli import main
    from edgecl.models.export import export_onnx
    from edgecl.ultra import build_detection_model

    model = tmp_path / "m.onnx"
    export_onnx(build_detection_model(1, names={0: "car"}), model, imgsz=64, names={0: "car"})
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 90, np.uint8))
    with caplog.at_level(logging.WARNING, logger="edgecl.bench.perf"):
        assert main(["bench", "perf", "--model", str(model), "--imgsz", "128", "--frames", "2",
                     "--repeats", "1", "--skip-ultralytics", "--source", f"dir://{tmp_path}"]) == 0
    assert f"--imgsz 128 is not used: {model} runs at its own input size 64" in caplog.text
