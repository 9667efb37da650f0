"""`gcfeat <command>` / `python -m gcfeat <command>`: the dispatcher is :mod:`gcfeat.cli.main`."""

from gcfeat.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
