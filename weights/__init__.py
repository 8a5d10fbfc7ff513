"""Bundled model weights (safetensors + JSON config), installed as package data."""
