"""The built-in demo end to end at toy size: rounds, promotion, table, report, JSON summary."""

import json

from edgecl.cli import main


def test_demo_json_summary_and_report(tmp_path, capsys, caplog):
    state = tmp_path / "demo"
    caplog.set_level("WARNING")
    code = main(["demo", "--state-dir", str(state), "--tasks", "2", "--images-per-task", "20",
                 "--imgsz", "64", "--json", "learner.first_round_max_steps=4", "learner.max_steps=3",
                 "learner.batch=4", "learner.bn_recalibration_batches=1", "learner.torch_threads=1",
                 "gate.max_forgetting=1.0", "gate.min_acc_delta=-1.0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert {"rounds", "promoted", "rejected", "acc", "bwt", "current_version"} <= set(summary)
    assert summary["rounds"] == 2 and summary["promoted"] == 2 and summary["rejected"] == 0
    assert summary["current_version"] == "v0002"
    assert "[demo] round 1: v0001 promoted" in err and "[demo] round 2: v0002 promoted" in err
    assert "| 2 | v0002 | promoted |" in err
    assert (state / "metrics" / "report" / "report.md").is_file()
    assert (state / "metrics" / "report" / "accuracy_matrix.png").is_file()
    # the demo does what it means to: before, it warned that the class registry was empty
    # (rebuilt from the memory) and that its first round learnt from scratch
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []


def test_demo_refuses_a_foreign_state_dir(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--state-dir", str(tmp_path)]) == 2
    assert "was not made by 'edgecl demo'" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_demo_whose_rounds_did_not_all_run_says_so(tmp_path):
    """Before: edgecl upgraded on disk during the demo held rounds 2-5 back, and the demo ended
    "ACC=0.617 ... rounds=1", exit 0, as if that were its outcome."""
    import io
    from types import SimpleNamespace

    from edgecl.bench.demo import summarize
    from edgecl.config import Config
    from edgecl.runtime.monitor import Monitor

    Monitor(tmp_path)
    runtime = SimpleNamespace(
        supervisor=SimpleNamespace(rounds=[{"status": "promoted"}],
                                   last_error="edgecl was upgraded on disk (0.1 -> 0.2) ..."),
        registry=SimpleNamespace(current=lambda: "v0001"), cfg=Config())
    out = io.StringIO()
    summarize(runtime, SimpleNamespace(frames=10, swaps=1), tmp_path, 1.0, out, expected_rounds=5)
    assert ("[demo] warning: 1 of 5 learning rounds ran (edgecl was upgraded on disk (0.1 -> "
            "0.2) ...); the figures above are not the demo's") in out.getvalue()
    out = io.StringIO()
    summarize(runtime, SimpleNamespace(frames=10, swaps=1), tmp_path, 1.0, out, expected_rounds=1)
    assert "warning" not in out.getvalue()


def test_the_demo_says_its_figures_leave_out_rejected_rounds(tmp_path):
    """Before: the table showed a rejected round's row, and ACC/BWT worked out from the table
    came out otherwise than the figures printed under it (-0.035 against -0.046)."""
    import io
    from types import SimpleNamespace

    from edgecl.bench.demo import summarize
    from edgecl.config import Config
    from edgecl.runtime.monitor import Monitor

    Monitor(tmp_path)
    said = []
    for statuses in (["promoted", "rejected"], ["promoted"]):
        runtime = SimpleNamespace(
            supervisor=SimpleNamespace(rounds=[{"status": s} for s in statuses], last_error=None),
            registry=SimpleNamespace(current=lambda: "v0001"), cfg=Config())
        out = io.StringIO()
        summarize(runtime, SimpleNamespace(frames=10, swaps=1), tmp_path, 1.0, out)
        said.append("(over the promoted rows; a rejected round's row is shown, not counted)"
                    in out.getvalue())
    assert said == [True, False]
