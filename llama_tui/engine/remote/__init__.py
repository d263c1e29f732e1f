"""The client for OpenAI-compatible servers (vLLM, TGI, llama.cpp, transformers serve)."""
