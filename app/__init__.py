"""The trainserve HTTP API."""
