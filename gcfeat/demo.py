"""`python -m gcfeat.demo`: the CLI is :mod:`gcfeat.cli.demo`."""

from gcfeat.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
