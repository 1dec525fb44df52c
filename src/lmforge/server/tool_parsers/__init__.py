"""Readers of tool-call formats whose calls are the whole reply (vLLM's `llama3_json` and
`pythonic`); the Hermes reader is server/tool_calls.py, and server/tool_formats.py names them all."""
