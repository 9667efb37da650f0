"""`python -m gcfeat.evaluate`: the CLI is :mod:`gcfeat.cli.evaluate`."""

from gcfeat.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
