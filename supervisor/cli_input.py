"""What the command line reads before it does anything: arguments, the Redis URL, job input.

Each refusal is :class:`~adapters.errors.BadInput` naming the argument, which the CLI prints
as one line with exit code 2, before anything is connected or written:

* argv bytes that are not UTF-8 reach Python as lone surrogates (PEP 383) and would fail deep
  inside an encoder; :func:`check_decodable` refuses them up front, showing the bytes.
* ``--redis ""`` says nothing, so it must not silently mean the default URL.
* job input is read up to :data:`~adapters.limits.MAX_INPUT_BYTES` and no further (so
  ``--input-file /dev/zero`` or an endless pipe is refused, not read into memory), and it may
  nest at most :data:`~adapters.limits.MAX_INPUT_DEPTH` deep.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import msgspec

from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.limits import MAX_INPUT_BYTES, MAX_INPUT_DEPTH, input_depth_exceeded

__all__ = ["check_decodable", "decode_input", "read_input", "redis_url"]


def check_decodable(args: argparse.Namespace) -> None:
    """Every parsed argument (and each item of a list argument) is valid UTF-8."""
    for name, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not _is_utf8(item):
                raise BadInput(f"{name.replace('_', '-')}: {_shown(item)} is not valid UTF-8")


def redis_url(args: argparse.Namespace, default: str) -> str:
    """``--redis``, else ``$JOBVISOR_REDIS`` (empty counts as unset), else ``default``."""
    if args.redis is not None:
        if not args.redis:
            raise BadInput("redis: empty URL (redis://host:port/db)")
        return str(args.redis)
    url = os.environ.get("JOBVISOR_REDIS") or default
    if not _is_utf8(url):
        raise BadInput(f"JOBVISOR_REDIS: {_shown(url)} is not valid UTF-8")
    return url


def read_input(args: argparse.Namespace) -> Any:
    """The job's input from ``--input`` or ``--input-file`` (``-`` = stdin), decoded; None if neither."""
    if args.input_file is not None:
        data = _read_bounded(args.input_file, MAX_INPUT_BYTES)
    elif args.input is not None:
        data = args.input.encode()
        if len(data) > MAX_INPUT_BYTES:
            raise BadInput(f"input: more than {MAX_INPUT_BYTES} bytes, over the input limit")
    else:
        return None
    return decode_input(data, "input")


def decode_input(data: bytes, name: str) -> Any:
    """``data`` decoded as a job's input JSON (at most :data:`~adapters.limits.MAX_INPUT_BYTES`,
    nested at most :data:`~adapters.limits.MAX_INPUT_DEPTH` deep); a refusal names ``name``."""
    if len(data) > MAX_INPUT_BYTES:
        raise BadInput(f"{name}: more than {MAX_INPUT_BYTES} bytes, over the input limit")
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BadInput(f"{name}: malformed JSON: {exc}") from None
    except RecursionError:  # the decoder recursed as deep as the interpreter allows
        raise BadInput(f"{name}: nested more than {MAX_INPUT_DEPTH} levels deep") from None
    if input_depth_exceeded(value):
        raise BadInput(f"{name}: nested more than {MAX_INPUT_DEPTH} levels deep")
    return value


def _read_bounded(name: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of file ``name`` ('-' = stdin); one byte more is a refusal."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise BadInput(f"input-file: cannot read {name!r}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte in the name
        raise BadInput(f"input-file: {name!r} is not a file name") from None
    if len(data) > limit:
        raise BadInput(f"input-file: more than {limit} bytes, over the input limit")
    return data


def _shown(text: str) -> str:
    """An argument as the bytes it came as: ``'caf\\xe9'`` for ``café`` in Latin-1."""
    return "'" + text.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace") + "'"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
