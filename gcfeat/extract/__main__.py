"""`python -m gcfeat.extract`: the CLI is :mod:`gcfeat.cli.extract`."""

from gcfeat.cli.extract import main

if __name__ == "__main__":
    raise SystemExit(main())
