"""Graph checks (networkx): same-step cycles and the structure of optimizers.

E310 a value read in the same step it is written (a dataflow cycle that does
not pass through a level's state); E311 a level that copies, imitates or takes
gradients of itself; E312 an optimizer without exactly one `state params`
level; E313 `state params` in a model.
"""

from __future__ import annotations

import networkx as nx

from nlc import ir
from nlc.errors import Reporter
from nlc.graph import dataflow


def run(program: ir.Program, rep: Reporter) -> ir.Program:
    """Check the program's graphs; return it unchanged."""
    for body, _block in ir.scopes(program):
        _check_cycles(body, rep)
        for lv in (s for s in body if isinstance(s, ir.Level)):
            _check_self_reference(lv, rep)
    _check_roots(program, rep)
    return program


def _node_name(node: tuple) -> str:
    return "out" if node[0] == "out" else node[1] if node[0] == "let" else f"{node[1]} (its update)"


def _check_cycles(body: tuple[ir.Stmt, ...], rep: Reporter) -> None:
    g = dataflow(body)
    for cycle in _simple_cycles(g):
        first = min(cycle, key=lambda n: g.nodes[n]["span"].start)
        i = cycle.index(first)
        cycle = cycle[i:] + cycle[:i]
        path = " -> ".join(_node_name(n) for n in [*cycle, cycle[0]])
        use = g.edges[cycle[-1], cycle[0]]["span"]
        if len(cycle) == 1 and cycle[0][0] == "update":
            rep.error("E310", f"level `{cycle[0][1]}` updates itself with its own new state", use,
                      "an update rule or another level must produce the update")
            continue
        rep.error("E310", f"`{_node_name(first)}` is read in the same step it is computed: {path}", use,
                  "break the cycle: read a level's memory (`mem(q)` sees the state before this step) "
                  "instead of a value computed from it")


def _simple_cycles(g: nx.DiGraph) -> list[list]:
    """Return one cycle per strongly connected component that has one (readable, bounded)."""
    out = []
    for comp in nx.strongly_connected_components(g):
        node = next(iter(comp))
        if len(comp) == 1 and not g.has_edge(node, node):
            continue
        sub = g.subgraph(comp)
        out.append([u for u, _ in nx.find_cycle(sub, source=min(comp, key=lambda n: g.nodes[n]["span"].start))])
    return sorted(out, key=lambda c: min(g.nodes[n]["span"].start for n in c))


def _check_self_reference(lv: ir.Level, rep: Reporter) -> None:
    for where, form in (("state", lv.state), ("init", lv.init), ("context", lv.context)):
        if isinstance(form, ir.Call) and form.fn in ("like", "copy", "grad") and form.args:
            ref = form.args[0]
            if isinstance(ref, ir.Ref) and ref.name == lv.name:
                what = {"like": "shape its state like", "copy": "copy the initial state of",
                        "grad": "learn from the gradients of"}[form.fn]
                rep.error("E311", f"level `{lv.name}` cannot {what} itself", ref.span,
                          "name another level" + (" or `loss`" if form.fn == "grad" else ""))


def is_root(lv: ir.Level) -> bool:
    """Is this the `state params` level (the parameters an optimizer updates)?"""
    return isinstance(lv.state, ir.Call) and lv.state.fn == "params"


def _check_roots(program: ir.Program, rep: Reporter) -> None:
    roots = [lv for lv in ir.all_levels(program) if is_root(lv)]
    if program.is_model:
        for lv in roots:
            rep.error("E313", "`state params` is only meaningful in an optimizer", lv.state.span,
                      "a model's levels own memories such as `mlp(dim)` or `linear(dim, dim)`")
        return
    if not roots:
        rep.error("E312", f"optimizer `{program.name}` has no level with `state params`", program.name_span,
                  "add the level that updates the parameters: `level weights { state params ... }`")
    for extra in roots[1:]:
        rep.error("E312", "an optimizer has exactly one level with `state params`", extra.state.span,
                  notes=((roots[0].state.span, "the first one"),))
