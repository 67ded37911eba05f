"""HistoryGathering.intervals: a tag's steps folded over the copy's last interval, in cases a gathering of real
events rarely holds (the aggregate retargets a dropped tag rather than revalidating it), each as the view's
statements one by one would leave the rows."""

from projections.history import HistoryGathering

KEY = ("hub", "library/app", "v1")


def fold(steps: list[tuple], stored: dict | None = None) -> tuple[list, list]:
    gathering = HistoryGathering()
    gathering.steps[KEY] = steps
    return gathering.intervals(stored or {})


def test_a_revalidation_after_the_copy_s_interval_was_closed_here_opens_one_with_its_media_type():
    closes, rows = fold([("end", 5.0, "quota"), ("reopen", 7, 6.0, "sha256:a", "revalidated")], {KEY: (True, "m")})
    assert closes == [(*KEY, 5.0, "quota")]
    assert rows == [(*KEY, 7, 6.0, None, "sha256:a", "m", "revalidated", None)]


def test_a_revalidation_while_the_copy_s_interval_is_open_changes_nothing():
    assert fold([("reopen", 7, 6.0, "sha256:a", "revalidated")], {KEY: (True, "m")}) == ([], [])


def test_a_second_end_closes_nothing_more_and_a_reopen_takes_the_last_new_interval_s_media_type():
    steps = [("end", 1.0, "retargeted"), ("begin", 3, 1.0, "sha256:a", "m1", "resolved"), ("end", 2.0, "quota"),
             ("end", 2.5, "flush"), ("reopen", 9, 4.0, "sha256:a", "revalidated")]
    closes, rows = fold(steps)
    assert closes == [(*KEY, 1.0, "retargeted")]
    assert rows == [(*KEY, 3, 1.0, 2.0, "sha256:a", "m1", "resolved", "quota"),
                    (*KEY, 9, 4.0, None, "sha256:a", "m1", "revalidated", None)]


def test_only_a_revalidation_before_any_new_interval_needs_the_copy_s_last_one():
    gathering = HistoryGathering()
    gathering.steps = {("o", "r", "a"): [("end", 1.0, "x"), ("reopen", 2, 2.0, "d", "revalidated")],
                       ("o", "r", "b"): [("end", 1.0, "x"), ("begin", 2, 1.0, "d", "m", "resolved"),
                                         ("reopen", 3, 2.0, "d", "revalidated")],
                       ("o", "r", "c"): [("reopen", 2, 2.0, "d", "revalidated")]}
    assert gathering.needs_stored() == [("o", "r", "a"), ("o", "r", "c")]
