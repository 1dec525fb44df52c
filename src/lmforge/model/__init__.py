"""Transformer models. They know nothing of engines, devices or distribution."""
