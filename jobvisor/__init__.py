"""jobvisor: a job supervisor whose jobs and batches are explicit, guarded state machines.

Public API::

    from jobvisor import App, Client, AsyncClient, JobContext, run_daemon, load_config
    from jobvisor.machines import JOB, JobMachine   # the embeddable machines, pure

The names below are imported on first use, so ``import jobvisor`` (and every CLI command but
``run`` and ``demo``) costs neither trio nor the Redis client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS: dict[str, str] = {
    "App": "jobvisor.supervisor.app",
    "HttpValidator": "jobvisor.supervisor.app",
    "JobContext": "jobvisor.supervisor.app",
    "Redrive": "jobvisor.supervisor.app",
    "ServiceStatus": "jobvisor.supervisor.app",
    "StatusAnswer": "jobvisor.supervisor.app",
    "ValidationResult": "jobvisor.supervisor.app",
    "AsyncClient": "jobvisor.supervisor.client",
    "Client": "jobvisor.supervisor.client",
    "DaemonConfig": "jobvisor.supervisor.config",
    "load_config": "jobvisor.supervisor.config",
    "Daemon": "jobvisor.supervisor.daemon",
    "run_daemon": "jobvisor.supervisor.daemon",
    "SupervisorGaveUp": "jobvisor.supervisor.supervise",
    "Step": "jobvisor.supervisor.flows",
}

__all__ = [
    "App",
    "AsyncClient",
    "Client",
    "Daemon",
    "DaemonConfig",
    "HttpValidator",
    "JobContext",
    "Redrive",
    "ServiceStatus",
    "StatusAnswer",
    "Step",
    "SupervisorGaveUp",
    "ValidationResult",
    "__version__",
    "load_config",
    "run_daemon",
]

if TYPE_CHECKING:
    from jobvisor.supervisor.app import (
        App,
        HttpValidator,
        JobContext,
        Redrive,
        ServiceStatus,
        StatusAnswer,
        ValidationResult,
    )
    from jobvisor.supervisor.client import AsyncClient, Client
    from jobvisor.supervisor.config import DaemonConfig, load_config
    from jobvisor.supervisor.daemon import Daemon, run_daemon
    from jobvisor.supervisor.flows import Step
    from jobvisor.supervisor.supervise import SupervisorGaveUp


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobvisor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
