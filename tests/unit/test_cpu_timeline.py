"""bench.cpu_timeline's arithmetic: CPU per role between samples, processes that come and go, the summary's cores."""

import json

from bench.cpu_timeline import cpu_seconds, summary, used


def sample(t, python, postgres, idle):
    # /proc/stat's first line: user nice system idle ...; 100 ticks a second on two cores
    return {"t": t, "machine": [int(200 * t) - idle, 0, 0, idle], "python": python, "postgres": postgres}


def test_cpu_is_counted_per_role_and_only_for_processes_in_both_samples():
    before = {"1": ["parent", 10.0], "2": ["child", 1.0]}
    after = {"1": ["parent", 14.0], "2": ["child", 3.5], "3": ["child", 9.0]}   # 3 started in between
    assert used(before, after, "parent") == 4.0
    assert used(before, after, "child") == 2.5
    assert used({"7": [5.0, "COMMIT"], "8": [None, None]}, {"7": [6.5, "COPY"], "8": [2.0, None]}) == 1.5


def test_the_summary_gives_cores_and_idle_share_per_phase(tmp_path, capsys):
    path = tmp_path / "timeline.jsonl"
    samples = [sample(0, {"1": ["parent", 0.0]}, {"9": [0.0, None]}, 0),
               sample(10, {"1": ["parent", 3.0], "2": ["child", 0.0]}, {"9": [10.0, "COPY \"audit\""]}, 700),
               sample(20, {"1": ["parent", 13.0], "2": ["child", 10.0]}, {"9": [10.0, "COMMIT"]}, 700)]
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    summary(str(path), 10.0, [0, 10, 20])
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[3:6] for line in lines] == [["0.30", "0.00", "1.00"], ["1.00", "1.00", "0.00"]]
    assert "10.0 s COPY" in lines[0] and lines[0].split()[6] == "35"   # 700 of 2,000 ticks idle


def test_a_process_that_is_gone_has_no_cpu():
    assert cpu_seconds(2 ** 22 + 12345) is None
