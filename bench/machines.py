"""Throughput of the job machine: the pure ``JOB.apply`` against the embeddable form.

Run it as ``.venv/bin/python bench/machines.py`` (a few seconds). It prints
transitions per second for four workloads, in both forms, and the ratio:

* unguarded: every (state, trigger) pair with one unguarded row (``claim``,
  ``wake``, ``cancel``, operator retries...);
* guarded: the four guarded triggers from ``active`` under every combination
  of the two guard facts (``retries_left``, ``has_validator``);
* absorbed: every pair a terminal state absorbs (``completed`` + ``retry``...);
* mix: all of the above, shuffled with a fixed seed.

The pure form is called with plain ``str`` states and triggers and a prebuilt
facts dict, as the runtime calls it with fields read from Redis. The
embeddable form runs ``EmbeddedMachine.fire(model, trigger)`` on ``JobModel``s
whose state (and guard inputs) are set directly before each trigger, so every
call starts from the same state; effects run (``do_new_attempt``...) on
models without phases. Each figure is the best of several repeats after a
warm-up, and includes the Python loop around the call.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

# This file is named like the package it measures: make `import machines` find
# the package, not this script (python puts the script's folder first on sys.path).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from jobvisor.machines import JOB, JobMachine, JobModel, Kind  # noqa: E402

Case = tuple[str, str, dict[str, bool] | None]

TARGET_S = 0.08  # length of one timed repeat
REPEATS = 5
AIM_PURE = 1_000_000
AIM_RATIO = 50


def workloads() -> dict[str, list[Case]]:
    """The (state, trigger, facts) cases of each workload, read from the job table."""
    unguarded: list[Case] = []
    guarded: list[Case] = []
    absorbed: list[Case] = []
    for state, trigger in JOB.pairs():
        s, t = str(state.value), str(trigger.value)
        rows = JOB.rows_for(state, trigger)
        if JOB.is_terminal(state) and not rows:
            absorbed.append((s, t, None))
        elif any(r.guard for r in rows):
            for retries_left in (True, False):
                for has_validator in (True, False):
                    facts = {"retries_left": retries_left, "has_validator": has_validator}
                    guarded.append((s, t, facts))
        elif rows:
            unguarded.append((s, t, None))
    mix = unguarded + guarded + absorbed
    random.Random(1).shuffle(mix)
    return {"unguarded": unguarded, "guarded": guarded, "absorbed": absorbed, "mix": mix}


def pure_runner(cases: list[Case]) -> Callable[[int], int]:
    apply = JOB.apply

    def run(loops: int) -> int:
        for _ in range(loops):
            for state, trigger, facts in cases:
                apply(state, trigger, facts)
        return loops * len(cases)

    return run


def embedded_runner(cases: list[Case]) -> Callable[[int], int]:
    machine = JobMachine()
    fire = machine.fire
    # One model per case, its guard inputs fixed: only `state` (and the retry
    # count a `count_retry`/`reset_retries` effect moved) needs resetting.
    prepared = []
    for state, trigger, facts in cases:
        facts = facts or {}
        model = machine.attach(
            JobModel(max_retries=1, has_validator=facts.get("has_validator", False), state=state)
        )
        retry_count = 0 if facts.get("retries_left", True) else 1
        prepared.append((model, state, trigger, retry_count))

    def run(loops: int) -> int:
        for _ in range(loops):
            for model, state, trigger, retry_count in prepared:
                model.state = state
                model.retry_count = retry_count
                fire(model, trigger)
        return loops * len(prepared)

    return run


def check_same_outcomes(cases: list[Case]) -> None:
    """Both forms agree on every case, so both really do the work measured."""
    machine = JobMachine()
    for state, trigger, facts in cases:
        outcome = JOB.apply(state, trigger, facts)
        f = facts or {}
        model = machine.attach(
            JobModel(max_retries=1, has_validator=f.get("has_validator", False), state=state)
        )
        model.retry_count = 0 if f.get("retries_left", True) else 1
        fired = machine.fire(model, trigger)
        assert fired is outcome.changed, (state, trigger, facts)
        assert model.state == outcome.dest, (state, trigger, facts)
        absorbed = JOB.is_terminal(state) and not fired
        assert outcome.kind is (Kind.ABSORBED if absorbed else Kind.MOVED)
        machine.detach(model)


def best_rate(run: Callable[[int], int]) -> float:
    """Calls per second: calibrate, warm up, then the best of REPEATS timed runs."""
    loops = 1
    while True:
        start = time.perf_counter()
        run(loops)
        elapsed = time.perf_counter() - start
        if elapsed >= TARGET_S / 4:
            break
        loops *= 4
    loops = max(1, int(loops * TARGET_S / elapsed))
    run(loops)  # warm-up at full size
    best = float("inf")
    calls = 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        calls = run(loops)
        best = min(best, time.perf_counter() - start)
    return calls / best


def main() -> int:
    cases = workloads()
    check_same_outcomes(cases["mix"])
    started = time.perf_counter()
    print(f"job machine, Python {sys.version.split()[0]}; best of {REPEATS} x ~{TARGET_S}s")
    print(f"{'workload':<10} {'cases':>5} {'pure apply/s':>14} {'embedded/s':>12} {'ratio':>7}")
    results = {}
    for name, workload in cases.items():
        pure = best_rate(pure_runner(workload))
        embedded = best_rate(embedded_runner(workload))
        results[name] = (pure, embedded)
        ratio = pure / embedded
        print(f"{name:<10} {len(workload):>5} {pure:>14,.0f} {embedded:>12,.0f} {ratio:>6.0f}x")
    pure, embedded = results["mix"]
    ok_pure = min(p for p, _ in results.values()) >= AIM_PURE
    ok_ratio = pure / embedded >= AIM_RATIO
    print(
        f"aim: pure >= {AIM_PURE:,}/s on every workload: {'yes' if ok_pure else 'NO'}; "
        f"mix ratio >= {AIM_RATIO}x: {'yes' if ok_ratio else 'NO'}"
        f"  ({time.perf_counter() - started:.1f}s)"
    )
    return 0 if ok_pure and ok_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
