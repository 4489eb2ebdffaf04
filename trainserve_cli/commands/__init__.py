"""The command groups of `trainserve`, one module each; trainserve_cli.main joins them."""
