"""Model backends. The only package that imports torch / transformers, always lazily."""
