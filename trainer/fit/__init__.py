"""Fitting decoders: losses, the K-seed training loop, the run folder and its curves."""
