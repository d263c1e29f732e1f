"""The fast decoder: a static KV cache and a compiled decode step, and the glue that hands
over to it."""
