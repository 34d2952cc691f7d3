"""Model backends behind one small interface per capability (local and OpenAI-compatible)."""
