from __future__ import annotations

from sepit.demo.phases import Phase, run_phases


def test_phases_are_reused_and_invalidated_downstream(tmp_path) -> None:
    calls: list[str] = []

    def mk(name):
        def run(run_dir):
            calls.append(name)
            return {"name": name}
        return run

    def phases(b_key):
        return [Phase("a", mk("a"), {"x": 1}), Phase("b", mk("b"), {"x": b_key}), Phase("c", mk("c"), {})]

    run_phases(tmp_path, phases(1))
    assert calls == ["a", "b", "c"]
    out = run_phases(tmp_path, phases(1))
    assert calls == ["a", "b", "c"] and out["c"] == {"name": "c"}  # all reused
    run_phases(tmp_path, phases(2))
    assert calls == ["a", "b", "c", "b", "c"]  # b changed: b and everything after it rerun
    run_phases(tmp_path, phases(2), fresh=True)
    assert calls[-3:] == ["a", "b", "c"]


def test_interrupted_phase_resumes_there(tmp_path) -> None:
    calls: list[str] = []

    def ok(run_dir):
        calls.append("a")
        return {}

    def boom(run_dir):
        raise KeyboardInterrupt

    try:
        run_phases(tmp_path, [Phase("a", ok, {}), Phase("b", boom, {})])
    except KeyboardInterrupt:
        pass
    run_phases(tmp_path, [Phase("a", ok, {}), Phase("b", lambda d: {}, {})])
    assert calls == ["a"]  # a was not redone
