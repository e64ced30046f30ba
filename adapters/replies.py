"""The store's answers: one tagged union, decoded straight from the Lua library's JSON.

Every op answers one reply; its ``kind`` (the JSON tag) picks the type, and each type
carries only the fields that kind has. The answers of the machines' table:

* :class:`Moved`: a transition ran (``machine``, ``trigger``, ``from_``, ``to``);
* :class:`Absorbed`, :class:`Blocked`, :class:`Invalid`: the table refused the trigger,
  nothing written (``state`` is where the object stays);
* :class:`Stale`: a fenced report with an old lease (or check, or send) token;
* :class:`Skipped`: a watchdog or evaluator that lost a race.

Every reply carries ``effects``: the names of the effects the op performed, in order, as
the machine rows name them (empty when nothing moved). ``kind`` and ``moved`` are read on
any reply; what else a reply says is read after narrowing its type (``match`` or
``isinstance``). Which replies an op can answer is stated by the op itself
(:mod:`adapters.ops`), and checked when it answers.
"""

from __future__ import annotations

from msgspec import Struct, field

from .records import ClaimedJob, Delivery, Expired, LostWorker, RedriveDue, Unfiled, ValidationTask

__all__ = [
    "Absorbed", "Added", "Alive", "BaseReply", "Blocked", "Checked", "Claimed", "Created", "Deferred",
    "DeliveriesDue", "Exists", "Expiries", "Extended", "Fenced", "Filed", "FlowCreated", "Inspecting", "Invalid",
    "Lost",
    "Moved", "NotFound", "Purged", "PurgedJob", "Queued", "Recorded", "Redriven", "Redrives", "Registered",
    "Rejected", "Released",
    "Renewed", "Reply", "Returned", "ScriptError", "Skipped", "Stale", "Stopped", "Swept", "Transition",
    "UnfiledJobs", "Validations", "Woken",
]


class BaseReply(Struct, kw_only=True, frozen=True, tag_field="kind"):
    """What every reply has: its ``kind`` (the tag) and the effects the op performed."""

    effects: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """The reply's tag: ``moved``, ``absorbed``, ``claimed``..."""
        tag = self.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    @property
    def moved(self) -> bool:
        return False


# -- the table's answers ------------------------------------------------------------


class Moved(BaseReply, tag="moved", rename={"from_": "from"}, frozen=True):
    """A transition of ``machine`` (job, phase, batch, webhook) ran: ``from_ -trigger-> to``.

    ``phase`` names the phase of a phase move; ``interrupted_phase`` the phase a job's
    ending attempt left running; ``members_cancelled`` counts a cancelled batch's members;
    ``job`` is the job a schedule's ``fire`` submitted (``job_kind``: its submit's reply kind).
    """

    id: str
    trigger: str
    from_: str
    to: str
    machine: str = "job"
    phase: str = ""
    interrupted_phase: str = ""
    members_cancelled: int = 0
    job: str = ""
    job_kind: str = ""

    @property
    def moved(self) -> bool:
        return True


class Absorbed(BaseReply, tag="absorbed", frozen=True):
    """The object is terminal for this trigger: nothing written."""

    id: str
    state: str
    phase: str = ""


class Blocked(BaseReply, tag="blocked", frozen=True):
    """A guard said not yet: nothing written."""

    id: str
    state: str
    phase: str = ""


class Invalid(BaseReply, tag="invalid", frozen=True):
    """The trigger does not apply in ``state``: nothing written."""

    id: str
    state: str
    phase: str = ""


class Stale(BaseReply, tag="stale", frozen=True):
    """A fenced call presented a token that is not the current one: nothing written but the
    ``job.stale_report`` event."""

    id: str
    state: str
    phase: str = ""


class Skipped(BaseReply, tag="skipped", frozen=True):
    """Someone else got there first (a renewal, another watchdog, a move since it was read)."""

    id: str
    state: str = ""


class NotFound(BaseReply, tag="not_found", frozen=True):
    """No ``what`` (``job``, ``batch``, ``delivery``) has id ``id``."""

    id: str
    what: str = field(name="error", default="object")


class Rejected(BaseReply, tag="rejected", frozen=True):
    """Refused with a reason the caller must fix; nothing written."""

    error: str
    id: str = ""


class ScriptError(BaseReply, tag="error", frozen=True):
    """The op failed inside the script (a bug, or an unknown op): raised as ``StoreError``."""

    error: str


Transition = Moved | Absorbed | Blocked | Invalid
"""What applying a machine's table answers."""


# -- creating and fenced bookkeeping --------------------------------------------------


class Created(BaseReply, tag="created", frozen=True):
    id: str
    state: str = ""


class FlowCreated(BaseReply, tag="flow", frozen=True):
    """A flow's jobs, created in one step: (id, state) each, in the order submitted."""

    jobs: tuple[tuple[str, str], ...] = ()


class Exists(BaseReply, tag="exists", frozen=True):
    """The idempotency key (or the id) already made ``id``."""

    id: str


class Renewed(BaseReply, tag="renewed", frozen=True):
    id: str
    lease_deadline: int


class Extended(BaseReply, tag="extended", frozen=True):
    """The watchdog extended a lease the external service still runs (ms deadline)."""

    id: str
    lease_deadline: int


class Inspecting(BaseReply, tag="inspecting", frozen=True):
    """This watchdog holds an expired lease until ``lease_deadline`` (ms) to ask the service."""

    id: str
    lease_deadline: int


class Recorded(BaseReply, tag="recorded", frozen=True):
    id: str


class Added(BaseReply, tag="added", frozen=True):
    """``added`` new members joined the batch, now in ``state``."""

    id: str
    added: int
    state: str


class Checked(BaseReply, tag="checked", frozen=True):
    """Validation check ``n`` failed; the next is due at ``next_due`` (ms)."""

    id: str
    state: str
    n: int
    next_due: float | None = None


class Released(BaseReply, tag="released", frozen=True):
    id: str
    state: str


class Filed(BaseReply, tag="filed", frozen=True):
    id: str
    state: str


class Deferred(BaseReply, tag="deferred", frozen=True):
    id: str
    state: str


class Redriven(BaseReply, tag="redriven", frozen=True):
    """A re-drive ran: the job's ``problem`` re-driven for the ``count``-th time: its
    notification ``delivery`` re-sent (the same event id), or the job run again as ``rerun``."""

    id: str
    problem: str
    count: int
    delivery: str | None = None
    rerun: str | None = None


# -- the list answers ---------------------------------------------------------------


class Claimed(BaseReply, tag="claimed", frozen=True):
    """The jobs claimed; ``next_at`` (ms): when a job a rate limit held back may start."""

    jobs: tuple[ClaimedJob, ...] = ()
    n: int = 0
    next_at: float | None = None


class Expiries(BaseReply, tag="expired", frozen=True):
    """Active jobs whose lease ran out."""

    jobs: tuple[Expired, ...] = ()
    n: int = 0


class Woken(BaseReply, tag="woken", frozen=True):
    """``n`` scheduled jobs became queued; the next falls due at ``next_due`` (ms)."""

    n: int = 0
    next_due: float | None = None


class Validations(BaseReply, tag="validations", frozen=True):
    jobs: tuple[ValidationTask, ...] = ()
    n: int = 0
    next_due: float | None = None


class DeliveriesDue(BaseReply, tag="deliveries", frozen=True):
    deliveries: tuple[Delivery, ...] = ()
    n: int = 0
    next_due: float | None = None


class Queued(BaseReply, tag="queued", frozen=True):
    """Queued jobs per type, and the entries of the earlier versions' untyped index."""

    counts: tuple[tuple[str, int], ...] = field(name="jobs", default=())
    untyped: int = field(name="n", default=0)


class Swept(BaseReply, tag="swept", frozen=True):
    """The batch monitor's sweep: the batches it finalized, where the next ready page starts
    (``cursor``; 0: start over) and the earliest stuck deadline left (``next_due``, ms)."""

    batches: tuple[Transition, ...] = ()
    n: int = 0
    next_due: float | None = None
    cursor: int | None = None


class UnfiledJobs(BaseReply, tag="unfiled", frozen=True):
    jobs: tuple[Unfiled, ...] = ()
    n: int = 0


class Redrives(BaseReply, tag="redrives", frozen=True):
    """Re-drives due now, and when the next entry of the index falls due (ms)."""

    jobs: tuple[RedriveDue, ...] = ()
    n: int = 0
    next_due: float | None = None


class PurgedJob(Struct, kw_only=True, frozen=True):
    id: str
    state: str


class Purged(BaseReply, tag="purged", frozen=True):
    jobs: tuple[PurgedJob, ...] = ()
    n: int = 0


# -- the registry of daemons --------------------------------------------------------


class Registered(BaseReply, tag="registered", frozen=True):
    id: str
    lease_deadline: int


class Alive(BaseReply, tag="alive", frozen=True):
    id: str
    lease_deadline: int


class Returned(BaseReply, tag="returned", frozen=True):
    """A daemon declared lost (or stopped) heartbeats again; ``state`` is what it was."""

    id: str
    lease_deadline: int
    state: str = ""


class Stopped(BaseReply, tag="stopped", frozen=True):
    id: str


class Lost(BaseReply, tag="lost", frozen=True):
    """The daemons this sweep declared lost."""

    daemons: tuple[LostWorker, ...] = field(name="jobs", default=())
    n: int = 0


Fenced = Transition | Stale | NotFound
"""What a fenced report (lease token) answers."""

Reply = (
    Moved | Absorbed | Blocked | Invalid | Stale | Skipped | NotFound | Rejected | ScriptError
    | Created | FlowCreated | Exists | Renewed | Extended | Inspecting | Recorded | Added | Checked | Released
    | Filed | Deferred | Claimed | Expiries | Woken | Validations | DeliveriesDue | Queued | Swept
    | UnfiledJobs | Redriven | Redrives | Purged | Registered | Alive | Returned | Stopped | Lost
)
"""Every reply of the store: the type the Lua's JSON decodes into."""
