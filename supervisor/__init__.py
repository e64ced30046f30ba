"""jobvisor's trio runtime: the supervisor, its actors, and the command line.

Public API::

    from supervisor import App, Client, AsyncClient, JobContext, run_daemon, load_config
"""

from .app import App, HttpValidator, JobContext, ServiceStatus, StatusAnswer, ValidationResult
from .client import AsyncClient, Client
from .config import DaemonConfig, load_config
from .daemon import Daemon, run_daemon
from .supervise import SupervisorGaveUp

__all__ = [
    "App",
    "AsyncClient",
    "Client",
    "Daemon",
    "DaemonConfig",
    "HttpValidator",
    "JobContext",
    "ServiceStatus",
    "StatusAnswer",
    "SupervisorGaveUp",
    "ValidationResult",
    "load_config",
    "run_daemon",
]
