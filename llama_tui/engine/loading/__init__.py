"""Finding and loading models: specs, the Hugging Face cache and Hub, checks, GGUF conversion,
load errors."""
