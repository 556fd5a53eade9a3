"""Decoder trainer: targets, decoder, loader, losses, training, post-processing, metrics, evaluation."""
