"""No step-cache setting can hang the sampler: every policy option has a declared type and range, checked once for the
command line, the API and the server (non-finite values and a setting given twice are refused); and every loop a
policy runs to plan its steps is bounded for any input (hypothesis, bounded examples; each call runs under a
liveness bound, so a loop that does not end fails the test instead of hanging it)."""
import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca2vdm.cli.generate import parse_args
from ca2vdm.config import STEP_CACHES
from ca2vdm.config.options import declared_fields
from ca2vdm.sampling.step_cache import AdaCache
from ca2vdm.sampling.step_cache.chunkcache import plan
from ca2vdm.sampling.step_cache.taylorseer import schedule

LIVENESS = 30  # seconds a planning call gets before it counts as hanging (a liveness bound, not a timing assertion)
EXAMPLES = settings(max_examples=150, deadline=None, derandomize=True, database=None)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


@pytest.mark.parametrize("argv, says", [
    (["--step-cache", "chunkcache", "--step-cache-opt", "threshold=nan"],
     "--step-cache-opt threshold=nan: chunkcache's threshold must be a finite number >= 0"),
    (["--step-cache", "teacache", "--step-cache-opt", "threshold=nan"],
     "--step-cache-opt threshold=nan: teacache's threshold must be a finite number >= 0"),
    (["--step-cache", "magcache", "--step-cache-opt", "threshold=inf"],
     "--step-cache-opt threshold=inf: magcache's threshold must be a finite number >= 0"),
    (["--step-cache", "taylorseer", "--step-cache-opt", "interval=2,interval=3"],
     "--step-cache-opt interval=3: interval is given twice; give each setting once"),
    (["--step-cache", "adacache", "--step-cache-opt", "motion_weight=-5"],
     "--step-cache-opt motion_weight=-5: adacache's motion_weight must be a finite number >= 0"),
    (["--step-cache", "adacache", "--step-cache-opt", "growth_weight=inf"],
     "--step-cache-opt growth_weight=inf: adacache's growth_weight must be a finite number >= 0"),
    (["--step-cache", "fastercache", "--step-cache-opt", "cfg_every=100000"],
     "--step-cache-opt cfg_every=100000: fastercache's cfg_every must be a whole number in [1, 10000]"),
], ids=["chunkcache-nan", "teacache-nan", "magcache-inf", "twice", "negative-weight", "adacache-inf", "too-many"])
def test_a_setting_that_could_hang_or_mislead_is_one_line_before_torch_loads(argv, says, capsys):
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(says)


def test_every_policy_setting_has_a_declared_type_and_a_bounded_range():
    for name, config in STEP_CACHES.items():
        for field, declared in declared_fields(config).items():
            assert declared.kind in (int, float, bool), (name, field)
            if declared.kind is int:  # counts of steps or chunks: both ends declared
                assert declared.low is not None and declared.high is not None, (name, field)
            if declared.kind is float:
                assert declared.low is not None and math.isfinite(declared.low), (name, field)


def bounded(call):
    """``call()``'s result; fails if it does not return within LIVENESS seconds."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(LIVENESS)
    assert result, "the planning loop did not end"
    return result[0]


@EXAMPLES
@given(steps=st.integers(1, 12), threshold=ANY_FLOAT, warmup=st.integers(1, 14), data=st.data())
def test_chunkcache_plans_end_for_any_record_and_budget(steps, threshold, warmup, data):
    errors = {(k, j, i): data.draw(ANY_FLOAT) for j in range(steps) for k in range(-1, j) for i in range(j + 1, steps)}
    planned = bounded(lambda: plan(errors, steps, threshold, warmup))
    assert planned == sorted(set(planned)) and planned[-1] == steps - 1 and planned[0] == 0
    assert planned[:min(warmup, steps)] == list(range(min(warmup, steps)))


@EXAMPLES
@given(steps=st.integers(1, 10_000), interval=st.integers(1, 10_000), warmup=st.integers(1, 10_000),
       growth=st.integers(0, 10_000))
def test_taylorseer_schedules_end_within_the_steps(steps, interval, warmup, growth):
    computed = bounded(lambda: schedule(steps, interval, warmup, growth))
    assert computed == sorted(set(computed)) and computed[-1] == steps - 1 and len(computed) <= steps


@EXAMPLES
@given(rate=ANY_FLOAT)
def test_adacache_waits_at_least_one_step_for_any_rate(rate):
    assert AdaCache().schedule(rate) >= 1
