"""Triton kernels (placeholder until written)."""
