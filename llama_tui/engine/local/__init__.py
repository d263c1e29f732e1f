"""Generation in this process with transformers: the backend, chat templates, streaming,
sampling."""
