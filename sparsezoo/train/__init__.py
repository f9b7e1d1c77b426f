"""Fine-tuning: the loop, sparsity penalties and their schedules, checkpoints and locks, the HF Trainer drop-in, the demo."""
