"""The main job: fetch models → build data → stage 0 → stage 1 → stage 2 → evaluate → register the model."""
