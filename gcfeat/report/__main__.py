"""`python -m gcfeat.report`: the CLI is :mod:`gcfeat.cli.report`."""

from gcfeat.cli.report import main

if __name__ == "__main__":
    raise SystemExit(main())
