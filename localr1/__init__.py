"""localr1: local-first chat for DeepSeek-R1 distilled models."""

__version__ = "0.1.0"
