"""Editing algorithms as pure functions over a model, module paths and token batches."""
