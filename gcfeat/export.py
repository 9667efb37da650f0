"""`python -m gcfeat.export`: the CLI is :mod:`gcfeat.cli.export`."""

from gcfeat.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
