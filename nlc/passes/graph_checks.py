"""Graph checks (networkx): same-step cycles and the structure of optimizers.

E310 a value read in the same step it is written (a dataflow cycle that does
not pass through a level's state); E311 a level that copies, imitates or takes
gradients of itself, or whose state or initial state derives from itself through
other levels; E312 an optimizer without exactly one `state params` level;
E313 `state params` in a model.
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
        _check_derivation_cycles(body, rep)
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
        if all(n[0] == "let" for n in cycle):  # lets never depend on updates: a cycle is all lets or all updates
            rep.error("E310", f"`{first[1]}` is defined in terms of itself: {path}", use,
                      "compute one of them from other values; to carry a value from one step to the next, "
                      "learn it in a level and read the level (`mem(q)` sees the state before this step)")
            continue
        if all(n[0] == "update" for n in cycle):
            names = [f"`{n[1]}`" for n in cycle]
            path = " -> ".join(n[1] for n in [*cycle, cycle[0]])
            rep.error("E310", f"levels {', '.join(names[:-1])} and {names[-1]} produce each other's updates "
                      f"in the same step: {path}", use,
                      "one of them needs an update rule of its own, such as `gd` or `momentum`")
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


def _levels_in(e: ir.Expr, lets: dict[str, ir.Let]) -> list[tuple[str, object]]:
    """Return (level name, span) for every level that e names or reads, directly or through `let`s."""
    out, seen, todo = [], set(), [(e, None)]
    while todo:
        expr, via = todo.pop()
        for n in ir.walk(expr):
            if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LEVEL:
                out.append((n.name, via or n.span))
            elif isinstance(n, ir.Call) and n.kind is ir.CallKind.READ:
                out.append((n.fn, via or n.fn_span))
            elif isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET and n.name in lets and n.name not in seen:
                seen.add(n.name)
                todo.append((lets[n.name].value, via or n.span))
    return out


def _check_derivation_cycles(body: tuple[ir.Stmt, ...], rep: Reporter) -> None:
    """A state shaped by itself (`state like(b)` in a, `state like(a)` in b; `state mlp(a(q))` in a), or
    initial states copied from each other, has nothing to start from (E311)."""
    levels = {s.name: s for s in body if isinstance(s, ir.Level)}
    lets = {s.name: s for s in body if isinstance(s, ir.Let)}
    for field, what, verb in (("state", "state", "is shaped by"), ("init", "initial state", "is copied from")):
        g = nx.DiGraph()
        for lv in levels.values():
            g.add_node(lv.name)
            for other, span in _levels_in(getattr(lv, field), lets):
                if other in levels and not g.has_edge(lv.name, other):
                    g.add_edge(lv.name, other, span=span)
        for comp in sorted(nx.strongly_connected_components(g), key=lambda c: min(levels[n].span.start for n in c)):
            start = min(comp, key=lambda n: levels[n].span.start)
            if len(comp) == 1 and not g.has_edge(start, start):
                continue
            form = getattr(levels[start], field)
            if g.has_edge(start, start) and isinstance(form, ir.Call) and form.fn in ("like", "copy", "reset") and \
                    any(isinstance(a, ir.Ref) and a.name == start for a in form.args):
                continue  # `like(a)` / `copy(a)` in a itself: reported by _check_self_reference
            if g.has_edge(start, start):
                rep.error("E311", f"the state of `{start}` depends on `{start}` itself", g.edges[start, start]["span"],
                          "a state is built from numbers and parameters, or shaped `like` another level")
                continue
            cycle = [u for u, _ in nx.find_cycle(g.subgraph(comp), source=start)]
            path = " -> ".join([*cycle, cycle[0]])
            rep.error("E311", f"the {what} of `{start}` {verb} itself: {path}",
                      g.edges[cycle[0], cycle[1 % len(cycle)]]["span"],
                      "one of them needs a state of its own, e.g. `state mlp(dim)`" if field == "state"
                      else "one of them needs an initial state of its own, e.g. `init zeros`")


def _check_self_reference(lv: ir.Level, rep: Reporter) -> None:
    for where, form in (("state", lv.state), ("init", lv.init), ("context", lv.context)):
        if isinstance(form, ir.Call) and form.fn in ("like", "copy", "reset", "grad") and form.args:
            ref = form.args[0]
            if isinstance(ref, ir.Ref) and ref.name == lv.name:
                what = {"like": "shape its state like", "copy": "copy the initial state of",
                        "reset": "restart from", "grad": "learn from the gradients of"}[form.fn]
                rep.error("E311", f"level `{lv.name}` cannot {what} itself", ref.span,
                          "name another level" + (" or `loss`" if form.fn == "grad" else ""))


def _check_roots(program: ir.Program, rep: Reporter) -> None:
    roots = [lv for lv in ir.all_levels(program) if ir.is_root(lv)]
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
                  "keep one `state params` level; other levels feed it through its `update` (`update m`)",
                  notes=((roots[0].state.span, "the first one"),))
