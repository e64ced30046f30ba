"""``jobvisor web``: the HTTP API and the dashboard (:mod:`supervisor.web`), its own process."""

from __future__ import annotations

import argparse

from .cli_commands import load_app
from .cli_input import redis_url
from .cli_parser import DEFAULT_REDIS

__all__ = ["cmd_web"]


def cmd_web(args: argparse.Namespace) -> int:
    from .web.command import run_web

    return run_web(args, redis=redis_url(args, DEFAULT_REDIS), load_app=load_app)
