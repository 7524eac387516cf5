"""Task data and prompts: Countdown, GSM8K, templates. Pure Python, no JAX."""
