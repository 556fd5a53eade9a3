"""The `embed` command line: thin wiring from options to package functions."""
