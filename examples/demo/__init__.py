"""``jobvisor demo``: the whole story in one process, on the embedded store (or ``--redis``).

What runs, all on loopback:

* the **service** of :mod:`examples.service` (the external system the ``transcode`` handler
  hands work to, and the source of truth its validator asks): its progress says "done" a
  moment before its status API says ``completed``, the lag behind the production incident
  SPEC.md opens with;
* the **receiver** of :mod:`examples.receiver`, which verifies every webhook's Standard
  Webhooks signature and drops repeated ids; the demo checks each ``job.completed`` it
  accepts against the service (a completion webhook with stale data is counted);
* three in-process daemons running :mod:`examples.app`'s handlers: **A** serves the main
  queue; **B** serves a second queue and is stopped dead (no release, no report: as if its
  process were killed) while it runs a ``transcode``; **C**, a replacement, recovers that job
  through the status query instead of running the handler again.

The jobs: transcodes (validated, notified), phased reports, one that fails twice and retries,
one that times out, one cancelled mid-phase, the lost worker's, and a batch of ten whose
finalize triggers all fire (threshold at the 8th, all members terminal, the batch monitor's
sweeps, and an operator's explicit finalize): one ``batch.completed`` all the same.

It ends with a table of every job and the counts that prove the guarantees; ``--json``
prints them instead. With ``--redis`` it uses queues of its own (``demo-<tag>``) and does not
publish its job types; its three daemons (``demo-<tag>-A/B/C``) stay in the daemon registry
as stopped or lost, like any daemon that ran there. The exit code is 0 when every guarantee
held and every job ended in its expected state.

The demo ships with the source checkout, not with the installed package: ``jobvisor demo``
imports it from here by name (``bash scripts/demo.sh``, or ``python -m examples.demo``).
Modules: ``run`` the scenario, ``report`` the figures and the final table, ``live`` the
terminal view.
"""

from __future__ import annotations

from .report import DemoReport, JobRow
from .run import main, run_demo

__all__ = ["DemoReport", "JobRow", "main", "run_demo"]
