"""scp_core.timing: the study's profile counts each second once, in the innermost stage."""
import time

import pytest

from scp_core import timing


def test_nested_stages_are_exclusive_and_the_outer_one_resumes():
    timing.reset()
    with timing.stage("sampling"):
        time.sleep(0.05)
        with timing.stage("decoding"):
            time.sleep(0.1)
        time.sleep(0.05)
    t = timing.tally()
    assert list(t) == list(timing.STAGES)
    assert 0.1 <= t["decoding"] < 0.2, t
    assert 0.1 <= t["sampling"] < 0.2, "the decoding inside a sampling call is not counted twice"
    assert t["encoding"] == 0.0


def test_decorator_counts_calls_and_keeps_the_function():
    timing.reset()

    @timing.timed("plotting")
    def draw(x):
        """Draw."""
        time.sleep(0.05)
        return x + 1

    assert draw(1) == 2 and draw(2) == 3 and draw.__doc__ == "Draw."
    assert 0.1 <= timing.tally()["plotting"] < 0.3


def test_an_exception_still_closes_the_stage():
    timing.reset()
    with pytest.raises(RuntimeError):
        with timing.stage("sampling"):
            with timing.stage("encoding"):
                raise RuntimeError("boom")
    with timing.stage("plotting"):
        pass
    assert timing._stack() == []


def test_an_unknown_stage_is_refused_naming_the_stages():
    with pytest.raises(ValueError, match="unknown timing stage 'sleeping'.*sampling"):
        with timing.stage("sleeping"):
            pass
