"""The web server's pure parts: settings and tokens, stream positions, problem fields, the
highlighted diagram, and that the other CLI commands never import the web stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.listing import decode_cursor
from jobvisor.adapters.records import Event
from jobvisor.adapters.streams import Positions
from jobvisor.supervisor.web.dashboard import highlighted_diagram, visited_states
from jobvisor.supervisor.web.problems import field_of
from jobvisor.supervisor.web.settings import Role, Tokens, WebSettings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-token-abcdefgh"


def load(environ: dict[str, str], **kwargs: object) -> WebSettings:
    options: dict[str, object] = {"redis": "redis://127.0.0.1:6379/0", "host": "127.0.0.1", "port": "0",
                                  "app": None, "tokens_file": None, "cors_origins": None}
    options.update(kwargs)
    return WebSettings.load(environ=environ, **options)  # type: ignore[arg-type]


def test_tokens_give_the_strongest_matching_role_and_never_show_themselves() -> None:
    tokens = Tokens([(Role.READ, SECRET), (Role.ADMIN, SECRET), (Role.READ, "other-token-abcdefgh")])
    assert tokens.role_of(SECRET) is Role.ADMIN
    assert tokens.role_of("other-token-abcdefgh") is Role.READ
    assert tokens.role_of(SECRET[:-1]) is None
    assert tokens.role_of("") is None
    assert SECRET not in repr(tokens)


@pytest.mark.parametrize(("environ", "kwargs", "named"), [
    ({"JOBVISOR_WEB_TOKENS": f"root:{SECRET}"}, {}, "JOBVISOR_WEB_TOKENS"),
    ({"JOBVISOR_WEB_TOKENS": "admin:short"}, {}, "JOBVISOR_WEB_TOKENS"),
    ({"JOBVISOR_WEB_TOKENS": f"admin {SECRET}"}, {}, "JOBVISOR_WEB_TOKENS"),
    ({}, {"host": "0.0.0.0"}, "host"),
    ({}, {"host": "example.org"}, "host"),
    ({}, {"port": "99999"}, "port"),
    ({}, {"port": "http"}, "port"),
    ({}, {"tokens_file": "/nonexistent/tokens"}, "tokens-file"),
    ({}, {"cors_origins": ["example.org"]}, "cors-origin"),
])
def test_bad_settings_are_one_line_naming_the_setting_without_the_token(
        environ: dict[str, str], kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(BadInput) as caught:
        load(environ, **kwargs)
    assert str(caught.value).startswith(named + ":")
    assert SECRET not in str(caught.value)
    assert "short" not in str(caught.value).split(":", 1)[1]


def test_tokens_from_the_environment_and_a_file_allow_a_public_address(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# operators\nadmin:{SECRET}\n\nread:reader-token-abcdefgh\n")
    settings = load({"JOBVISOR_WEB_TOKENS": "read:env-reader-abcdefgh"}, host="0.0.0.0", tokens_file=str(path),
                    cors_origins=["https://ops.example.org"])
    assert settings.tokens.role_of(SECRET) is Role.ADMIN
    assert settings.tokens.role_of("env-reader-abcdefgh") is Role.READ
    assert settings.cors_origins == ("https://ops.example.org",)
    assert load({}).cors_origins == ()  # CORS is off unless configured


def test_positions_round_trip_and_refuse_anything_else() -> None:
    positions = Positions.parse("default=17-0,@workers=5-2,mail=0-0")
    assert Positions.parse(positions.text()) == positions
    event = Event(stream_id="17-0", queue="default", type="job.submitted", id="default.A", at=0.0, fields={})
    assert positions.seen(event)
    assert not positions.seen(Event(stream_id="17-1", queue="default", type="x", id="i", at=0.0, fields={}))
    for bad in ("default", "default=x-1", "bad queue=1-0", "default=1-0\nretry: 0"):
        with pytest.raises(BadInput, match="^Last-Event-ID:"):
            Positions.parse(bad)


@pytest.mark.parametrize("cursor", ["", "!!!", "W10", "WzAsImEiLDEsImIiXQ", "WzksImEiLDEuMCwiYiJd"])
def test_a_cursor_not_given_by_a_listing_is_refused(cursor: str) -> None:
    with pytest.raises(BadInput, match="^cursor:"):
        decode_cursor(cursor)


def test_field_of_reads_our_messages_and_msgspecs() -> None:
    assert field_of("type: unknown job type 'x'") == "type"
    assert field_of("Expected `int`, got `str` - at `$.priority`") == "priority"
    assert field_of("something else entirely") is None
    assert field_of("children[1]: type: unknown job type 'x'") == "children[1]"  # a flow's job


def test_the_path_through_the_machine_is_read_from_the_events_and_highlighted() -> None:
    def ev(kind: str, **fields: str) -> SimpleNamespace:
        return SimpleNamespace(type=kind, fields=fields)

    events = [ev("job.submitted", to="queued"), ev("job.claim", **{"from": "queued", "to": "active"}),
              ev("phase.start", **{"from": "pending", "to": "running"}),
              ev("job.failed", **{"from": "active", "to": "failed"}), ev("job.filed", state="failed"),
              ev("job.retry", **{"from": "failed", "to": "queued"})]
    path = visited_states(events)
    assert path == ["queued", "active", "failed", "queued"]
    diagram = highlighted_diagram(path, "queued")
    assert diagram.splitlines()[-2:] == ["    class active,failed visited", "    class queued current"]
    assert "running" not in diagram.split("classDef")[1]


def test_other_commands_never_import_the_web_stack() -> None:
    code = ("import sys\nfrom jobvisor.supervisor.cli import main\nmain(['diagram', 'job'])\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'hypercorn', 'jinja2'))\n"
            "print('LOADED', loaded)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
