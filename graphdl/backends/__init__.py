"""Backends: code generation, compilation and launch for each device (cpu; cuda later)."""
