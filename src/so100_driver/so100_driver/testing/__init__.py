"""Test harnesses shipped with the driver so every package's tests (and users' own) can reuse them."""
