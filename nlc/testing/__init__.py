"""nlc.testing: property-based testing of level graphs and the models nlc compiles from them.

Strategies (hypothesis) draw random well-formed level graphs, their text and inputs;
properties are functions you call on your own spec; `nlc fuzz` runs them from the
command line. See docs/testing.md.
"""

from nlc.testing.strategies import inputs, lengths, programs, spec_texts, valid_programs

__all__ = ["inputs", "lengths", "programs", "spec_texts", "valid_programs"]
