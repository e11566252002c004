"""Training: one loop for all SEPIT stages (0 warm-up, 1 captions, 2 MoE QA), resumable, DDP-ready."""
