"""Model files: the catalog, the Hub, the models folder and its registry, GGUF headers, fit and
hardware."""
