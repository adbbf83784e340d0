"""The ``curation`` command line (typer): one sub-command per stage, ``models`` and the run tools.

    commands.py  the app and its stage commands; ``main`` (console script) and ``submit_main`` (spark-submit.sh)
    common.py    options, logging and the one-line error path shared by the commands
    models.py    ``curation models ...``: check, fetch, random weights
"""

from jobs.cli.commands import app, main, submit_main  # noqa: F401
