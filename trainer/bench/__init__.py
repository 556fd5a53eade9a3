"""Every `embed bench` subcommand: ratios measured in one run."""
