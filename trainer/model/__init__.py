"""The decoder and its safetensors checkpoints."""
