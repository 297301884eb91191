"""Training and evaluation command-line tools."""
