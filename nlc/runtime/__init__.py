"""Small, tested building blocks that generated code (and the interpreter) import.

layers.py   slow layers: Linear, CausalConv, RMSNorm, SwiGLU, Attention, LearnedScalar
memory.py   memory states: initial values, reads, closed-form per-token gradients
chunks.py   a block's chunk loop: every chunk's step in order (grouped under compile)
scan.py     chunk-parallel learning: each rule's closed form (nlc/rules/<rule>/chunk.py) or its eager step
chunkops.py the gate products and weighted sums the closed forms are built from
newton_schulz.py   quintic Newton-Schulz orthogonalisation (Muon)

Every fast kernel has a naive reference beside it and a test comparing them (the rules' in
nlc/rules/<rule>/naive.py).
"""
