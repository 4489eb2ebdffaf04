"""`trainserve`, the command-line client: it speaks the HTTP API only (httpx), and imports
nothing of the service, so it runs on any machine that can reach one."""
