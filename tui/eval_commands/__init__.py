"""One module per `cpm eval` subcommand (bfcl, factscore); each defines `register(subparsers)`."""
