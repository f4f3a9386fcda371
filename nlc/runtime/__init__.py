"""Small, tested building blocks that generated code (and the interpreter) import.

layers.py   slow layers: Linear, CausalConv, RMSNorm, SwiGLU, Attention, LearnedScalar
memory.py   memory states: initial values, reads, closed-form per-token gradients
scan.py     chunk-parallel update rules: linear scans (gd, momentum), delta rule (dgd)
newton_schulz.py   quintic Newton-Schulz orthogonalisation (Muon)

Every fast kernel has a naive reference beside it and a test comparing them.
"""
