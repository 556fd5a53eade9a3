"""Maps from a trained run: decoders rebuilt from a run folder, features or images in, probability maps out."""
