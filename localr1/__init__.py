"""localr1: local-first chat for DeepSeek-R1 distilled models."""

import os

__version__ = "0.1.0"

# llama.cpp's OpenMP threads spin while they wait for each other. When another process holds a
# core (a busy laptop, a shared CI box) a spinning thread starves the one doing the work:
# measured here on two cores with one neighbour busy, 28 -> 120 tokens/s with PASSIVE waiting.
# It must be set before llama_cpp loads libgomp; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
