"""One module per `cpm` subcommand; each defines `register(subparsers)` (see tui/cli.py)."""
