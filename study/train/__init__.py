"""Training, evaluation and distillation per the paper's protocol."""
