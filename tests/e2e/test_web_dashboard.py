"""The dashboard in a real browser: Playwright driving the system's headless Chromium against a
real ``jobvisor web`` and a real daemon on a real redis-server. One browser for the module;
every wait is an ``expect`` with a timeout, or an event on the SSE stream.

``JOBVISOR_SCREENSHOT=docs/dashboard.png`` also saves the job page as the README's picture.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.store import SyncStore
from tests.redis_server import RedisServer
from tests.web_support import ADMIN, READER, WebProcess, auth, daemon, wait_for_state, web_server

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.function_flush()
    client.close()
    with web_server(redis_server.url) as web, daemon(redis_server.url, tmp_path_factory.mktemp("d") / "daemon.log"):
        yield web


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM} (scripts/test.sh installs it)")
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield instance
        instance.close()


def signed_in(browser: Browser, base: str, token: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base}/jobs")
    expect(page).to_have_url(f"{base}/login?next=%2Fjobs")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/jobs")
    return page


def submit(base: str, job_type: str, value: object = None) -> str:
    answer = httpx.post(f"{base}/api/v1/jobs", headers=auth(), json={"type": job_type, "input": value})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def test_admin_sees_a_job_appear_live_then_retries_a_failed_one_to_completion(
        world: WebProcess, browser: Browser) -> None:
    base = world.url
    page = signed_in(browser, base, ADMIN)
    expect(page.locator("#live-status")).to_have_text("live", timeout=WAIT_MS)
    job = submit(base, "echo", {"hello": "browser"})
    row = page.locator(f"tr[data-job='{job}']")
    expect(row).to_be_visible(timeout=WAIT_MS)  # no reload: the SSE stream brought it
    expect(row).to_have_attribute("data-state", "completed", timeout=WAIT_MS)

    failing = submit(base, "fail_once", {"n": 1})
    wait_for_state(base, failing, {"failed"})
    page.goto(f"{base}/jobs/{failing}")
    expect(page.locator("#job-state")).to_have_text("failed")
    expect(page.locator("#path")).to_have_text("queued → active → failed")
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    expect(page.locator("#diagram svg")).to_be_visible(timeout=WAIT_MS)  # mermaid drew the machine
    expect(page.locator("#diagram svg g.current")).to_have_count(1)
    expect(page.locator("#diagram svg g.visited")).to_have_count(2)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#retry")
    expect(page.locator("#job-state")).to_have_text("completed", timeout=WAIT_MS)
    expect(page.locator("#attempts tbody tr")).to_have_count(2)
    expect(page.locator("#path")).to_have_text("queued → active → failed → queued → active → completed")
    expect(page.locator("#retry")).to_have_count(0)
    job_view = httpx.get(f"{base}/api/v1/jobs/{failing}", headers=auth()).json()
    assert [a["outcome"] for a in job_view["attempt_records"]] == ["failed", "succeeded"]
    assert job_view["phases"] == {"prepare": "completed", "finish": "completed"}
    if os.environ.get("JOBVISOR_SCREENSHOT"):
        expect(page.locator("#diagram svg")).to_be_visible(timeout=WAIT_MS)
        page.screenshot(path=os.environ["JOBVISOR_SCREENSHOT"], full_page=False)

    page.goto(base + "/")
    expect(page.locator("#queues tr[data-queue='default']")).to_be_visible()
    expect(page.locator("#daemons tbody tr")).to_have_count(1)
    page.context.close()


def test_a_read_token_sees_no_mutation_buttons_and_the_api_refuses_it(world: WebProcess, browser: Browser) -> None:
    base = world.url
    failing = submit(base, "fail_once", {"fail": "always"})
    wait_for_state(base, failing, {"failed"})
    page = signed_in(browser, base, READER)
    page.goto(f"{base}/jobs/{failing}")
    expect(page.locator("#job-state")).to_have_text("failed")
    expect(page.locator(".who")).to_contain_text("read only")
    expect(page.locator("button[data-post]")).to_have_count(0)
    refused = httpx.post(f"{base}/api/v1/jobs/{failing}/retry", headers=auth(READER))
    assert refused.status_code == 403
    # the page's own session (the cookie) is refused as well, even from the dashboard
    answer = page.evaluate("""async (url) => {
        const r = await fetch(url, {method: 'POST', headers: {'HX-Request': 'true'}});
        return r.status; }""", f"{base}/api/v1/jobs/{failing}/retry")
    assert answer == 403
    assert httpx.get(f"{base}/api/v1/jobs/{failing}", headers=auth()).json()["state"] == "failed"
    page.context.close()


def test_screenshot_path_is_under_docs() -> None:
    """The README's picture lives in docs/ (taken by the first test when asked to)."""
    assert (Path(__file__).resolve().parents[2] / "docs").is_dir()


def test_admin_re_sends_a_dead_delivery_from_the_job_page(
        world: WebProcess, browser: Browser, redis_server: RedisServer) -> None:
    base = world.url
    # a queue no daemon serves, so the delivery waits for the deliverer played here: 410, dead
    answer = httpx.post(f"{base}/api/v1/jobs", headers=auth(),
                        json={"type": "echo", "queue": "hooks", "webhook_url": "https://example.org/hook"})
    job = str(answer.json()["id"])
    assert httpx.post(f"{base}/api/v1/jobs/{job}/cancel", headers=auth()).status_code == 200
    with SyncStore(open_backend(redis_server.url)) as store:
        [taken] = store.take_deliveries("hooks", max_attempts=1)
        assert store.delivery_outcome("hooks", taken.id, taken.token, "reject", max_attempts=1,
                                      status=410).to == "dead"
    page = signed_in(browser, base, ADMIN)
    page.goto(f"{base}/jobs/{job}")
    row = page.locator(f"#deliveries tr[data-delivery='{taken.id}']")
    expect(row).to_contain_text("dead")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button.redeliver").click()
    expect(page.locator("#flash")).to_contain_text("dead → pending", timeout=WAIT_MS)
    expect(row).to_contain_text("pending", timeout=WAIT_MS)
    expect(row.locator("button.redeliver")).to_have_count(0)
    shown = httpx.get(f"{base}/api/v1/jobs/{job}", headers=auth()).json()
    assert [(d["state"], d["attempts"]) for d in shown["deliveries"]] == [("pending", 0)]
    page.context.close()
