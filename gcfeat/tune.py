"""`python -m gcfeat.tune`: the CLI is :mod:`gcfeat.cli.tune`."""

from gcfeat.cli.tune import main

if __name__ == "__main__":
    raise SystemExit(main())
