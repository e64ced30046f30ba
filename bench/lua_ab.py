"""The Lua library's script time per op: this checkout beside another revision, in one redis-server.

Each side's own store (its Python and its Lua library, loaded under its own name) submits and
claims N jobs on a queue of its own; then the worker's reports of success (``complete``) are sent
to both libraries interleaved, in chunks of 20 calls, alternating which side goes first, so the
load of a busy machine falls on both alike. SLOWLOG with a zero threshold gives each call's time
inside the server (it logs the commands the scripts run as well: it is sized for them). Printed
per side, with 1 op per call and with 50 merged into one call (as the store actor merges
concurrent callers): script us per op, min / p25 / median / mean.

The revision is checked out into a temporary git worktree and imported from there by a child
process of this interpreter (its dependencies are this checkout's).

Run: .venv/bin/python bench/lua_ab.py REV [N]      e.g. bbf0787^ (before the effects interpreter)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 20


def prepare(tree: str, url: str, queue: str, n: int) -> None:
    """(child process) Submit and claim ``n`` jobs with ``tree``'s store; print the library's
    function name and the (id, token) pairs as JSON."""
    if Path(tree).resolve() != ROOT:  # that tree's modules, not this checkout's installed ones
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in repr(h).lower()]
        sys.path.insert(0, tree)
        import jobvisor

        jobvisor.__path__.append(tree)
    else:
        sys.path.insert(0, tree)
    import trio

    from jobvisor.adapters import scripts

    if hasattr(scripts, "_package_version"):  # both sides' libraries loaded side by side, each named apart
        scripts._package_version = lambda: f"0+{queue}"
    from jobvisor.adapters.backend import open_backend
    from jobvisor.adapters.records import JobSpec
    from jobvisor.adapters.scripts import LuaLibrary
    from jobvisor.adapters.store import Store
    from jobvisor.adapters.store_actor import StoreActor

    async def run() -> list[Any]:
        actor = StoreActor(open_backend(url), time.time)
        store = Store(actor)
        claimed: list[Any] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            for i in range(0, n, 500):
                await store.submit_many([JobSpec(type="noop", queue=queue) for _ in range(min(500, n - i))])
            while len(claimed) < n:
                claimed += await store.claim(queue, "bench", n=min(256, n - len(claimed)), lease=3600)
            actor.close()
        return claimed

    claimed = trio.run(run)
    print(json.dumps({"fn": LuaLibrary().function, "jobs": [[c.id, c.token] for c in claimed]}))


def measure(trees: dict[str, str], n: int, per: int) -> dict[str, list[float]]:
    import redis

    logged = 24 * n + 1000

    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        client = redis.Redis.from_url(server.url)
        try:
            calls: dict[str, list[tuple[Any, ...]]] = {}
            names: dict[str, str] = {}
            for number, (side, tree) in enumerate(trees.items()):
                queue = f"ab{number}"
                out = subprocess.run([sys.executable, __file__, "--prepare", tree, server.url, queue, str(n)],
                                     check=True, capture_output=True, text=True).stdout
                got = json.loads(out)
                names[got["fn"]] = side
                jobs = got["jobs"]
                calls[side] = [
                    ("FCALL", got["fn"], 1, f"jv:{{{queue}}}:queued", f"jv:{{{queue}}}:", int(time.time() * 1000),
                     json.dumps([{"op": "report", "id": j, "token": t, "trigger": "complete", "result": "null"}
                                 for j, t in jobs[i:i + per]]), 100000)
                    for i in range(0, n, per)]
            client.config_set("slowlog-log-slower-than", 0)
            client.config_set("slowlog-max-len", logged)  # the commands a script runs are logged too
            client.slowlog_reset()
            order, k = list(trees), 0
            while any(calls.values()):
                for side in order if k % 2 == 0 else order[::-1]:
                    pipe = client.pipeline(transaction=False)
                    for call in calls[side][:CHUNK]:
                        pipe.execute_command(*call)
                    del calls[side][:CHUNK]
                    for reply in pipe.execute():
                        assert b'"moved"' in reply, reply[:300]
                k += 1
            times: dict[str, list[float]] = {side: [] for side in trees}
            for entry in client.slowlog_get(logged):
                raw = entry["command"]
                words = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).split()
                if len(words) > 1 and words[0] == "FCALL" and words[1] in names:
                    times[names[words[1]]].append(entry["duration"] / per)
            return times
        finally:
            client.close()
            server.stop()


def main(rev: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        other = str(Path(tmp) / "rev")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", other, rev], check=True)
        try:
            trees = {"this": str(ROOT), rev: other}
            print(f"script us per complete, N={n}, {CHUNK}-call chunks interleaved; min / p25 / median / mean")
            for per in (1, 50):
                for side, values in measure(trees, n, per).items():
                    values.sort()
                    print(f"  {per:>3} op(s) per call  {side:<14} {values[0]:6.1f} {values[len(values) // 4]:6.1f}"
                          f" {statistics.median(values):6.1f} {statistics.mean(values):6.1f}  ({len(values)} calls)")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", other], check=False)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--prepare":
        prepare(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) > 1:
        main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4000)
    else:
        sys.exit("usage: bench/lua_ab.py REV [N]")
