"""Training: the one loop, its engines, optimizer and schedules, checkpoints and metrics."""
