"""Checking passes over the IR, one file a pass, run in order by `nlc.passes.pipeline`.

Each pass takes a Program (and the build parameters), reports Diagnostics, and
returns a new Program (or the same one when it only checks). What a pass finds out
that the planners need (state shapes, periods, constants) it records in the program's
facts (`nlc.passes.facts`, docs/design.md §2.4).
"""
