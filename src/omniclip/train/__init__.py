"""Training engine: the training loop (one process or torchrun/DDP), AdamW + schedule, checkpoints, dist helpers."""
