"""Training: losses, folds, the training loop."""
