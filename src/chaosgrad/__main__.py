"""``python -m chaosgrad``: the ``chaosgrad`` command (how ``--processes`` starts its workers)."""

from chaosgrad.cli import main

if __name__ == "__main__":
    main()
