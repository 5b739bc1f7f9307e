"""``python -m chaosgrad.cli``: the ``chaosgrad`` command."""

from .main import main

main()
