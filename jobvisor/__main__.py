"""``python -m jobvisor``: the command line."""

from jobvisor.supervisor.cli import run

if __name__ == "__main__":
    run()
