"""The sparse-tensor engine: tensors, kernel maps and nn-like modules. Knows nothing of CT."""
