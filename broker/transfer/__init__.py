"""DSP transfer processes and the broker's data plane (agreement-bound, proof-of-possession tokens).
See docs/contracts.md."""
