"""Offline CPU embedding server speaking the Ollama and OpenAI embedding APIs."""

__version__ = "0.1.0"
