"""The emulator: an engine model, a GPU power model, and OpenAI-compatible servers around them."""
