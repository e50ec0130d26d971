"""Modal screens of the TUI (typed: each returns its answer through `dismiss`)."""
