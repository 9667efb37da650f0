"""`python -m gcfeat.extract`: the CLI is :mod:`gcfeat.cli.extract`."""
from gcfeat.cli.extract import main

raise SystemExit(main())
