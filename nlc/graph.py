"""IR -> networkx graphs: the dataflow inside a scope and the level graph of a program.

Two graphs, two jobs:
- `dataflow(scope)`: what must be computed before what *within one step*. Reading a
  level (`mem(q)`) sees its state from before the step, so it does not depend on the
  level's update; `update m` does (the optimizer level updates first). A cycle in this
  graph is a value read in the same step it is written (E310).
- `level_graph(program)`: levels as nodes ordered by frequency (fastest innermost),
  flows as labelled edges (keys/values, gradients, loss, updates, gates). Drawn by
  `draw()` as DOT with nested clusters, or as a PNG/SVG with matplotlib.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import networkx as nx

from nlc import ir
from nlc.files import atomic_write_bytes, atomic_write_text
from nlc.passes.facts import Frequency, ProgramFacts

# ---- dataflow within a scope -----------------------------------------------------


def dataflow(body: tuple[ir.Stmt, ...]) -> nx.DiGraph:
    """Return the same-step dependency graph of one scope: edge u -> v means v needs u first.

    Nodes: ("let", name), ("update", level name), ("out",). Edge attribute `span`: where v uses u.
    """
    g = nx.DiGraph()
    for s in body:
        if isinstance(s, ir.Let):
            node = ("let", s.name)
            g.add_node(node, span=s.name_span)
            for dep, span in _deps(s.value):
                g.add_edge(dep, node, span=span)
        elif isinstance(s, ir.Out):
            g.add_node(("out",), span=s.span)
            for dep, span in _deps(s.value):
                g.add_edge(dep, ("out",), span=span)
        elif isinstance(s, ir.Level):
            node = ("update", s.name)
            g.add_node(node, span=s.name_span)
            for e in level_exprs(s):
                for dep, span in _deps(e, update_edges=(e is s.update)):
                    g.add_edge(dep, node, span=span)
    return g


def level_exprs(level: ir.Level) -> list[ir.Expr]:
    """Return the expressions a level's update depends on (context, gates, rule arguments, update)."""
    exprs = [level.update, level.state, level.init, level.objective]
    exprs += [e for e in (level.context, level.lr, level.retain) if e is not None]
    return exprs


def _deps(e: ir.Expr, update_edges: bool = False):
    for n in ir.walk(e):
        if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET:
            yield ("let", n.name), n.span
        elif update_edges and isinstance(n, ir.Ref) and n.kind is ir.RefKind.LEVEL:
            # `update m` / `update m / sqrt(v)`: the new state of m, computed in the same step
            yield ("update", n.name), n.span
        elif update_edges and isinstance(n, ir.Call) and n.kind is ir.CallKind.READ:
            yield ("update", n.fn), n.fn_span


# ---- the level graph -------------------------------------------------------------

def level_graph(program: ir.Program, facts: ProgramFacts) -> nx.MultiDiGraph:
    """Return the level graph of a checked program (its `facts` give the periods), with frequency bands
    (node attr `band`, 0 = fastest)."""
    g = nx.MultiDiGraph(name=program.name)
    outer = "outer"
    g.add_node("input", kind="input", label="tokens" if program.is_model else "gradients")
    g.add_node("loss", kind="loss", label="task loss")
    g.add_node(outer, kind="outer", label="outer level\n(slow parameters)",
               freq=Frequency(ir.PeriodUnit.STEPS, 1))
    for body, block in ir.scopes(program):
        prefix = f"{block.name}." if block is not None else ""
        for lv in (s for s in body if isinstance(s, ir.Level)):
            g.add_node(prefix + lv.name, kind="level", level=lv, freq=facts.period(block, lv.name),
                       label=f"{lv.name}\n{_form_name(lv.state)} · {_rule_label(lv)}")
        for lv in (s for s in body if isinstance(s, ir.Level)):
            _level_edges(g, prefix, lv, body)
    g.remove_nodes_from([n for n, d in list(g.nodes(data=True)) if d["kind"] in ("input", "loss") and g.degree(n) == 0])
    freqs = sorted({d["freq"].key for _, d in g.nodes(data=True) if "freq" in d})
    for _, d in g.nodes(data=True):
        if "freq" in d:
            d["band"] = freqs.index(d["freq"].key)
    return g


def _form_name(e: ir.Expr) -> str:
    if isinstance(e, ir.Call):
        return e.fn
    if isinstance(e, ir.Ref):
        return e.name
    return "expr"


def _rule_label(lv: ir.Level) -> str:
    """How a level learns, for its node: the update rule, or `frozen` (a `period never` level has none)."""
    return "frozen" if lv.period.unit is ir.PeriodUnit.NEVER else _form_name(lv.update)


def _level_edges(g: nx.MultiDiGraph, prefix: str, lv: ir.Level, body) -> None:
    me = prefix + lv.name
    lets = {s.name: s for s in body if isinstance(s, ir.Let)}
    ctx = lv.context
    if isinstance(ctx, ir.Tuple):
        sources = _level_sources(ctx, lets) or {"input"}
        for src in sorted(sources):
            g.add_edge(src if src == "input" else prefix + src, me, kind="kv", label="keys/values")
    elif isinstance(ctx, ir.Call) and ctx.fn == "grad":
        of = ctx.args[0] if ctx.args else None
        if isinstance(of, ir.Ref) and of.kind is ir.RefKind.LEVEL:
            g.add_edge(prefix + of.name, me, kind="grad", label=f"∇ℓ({of.name})")
        else:
            g.add_edge("loss", me, kind="grad", label="∇ task loss")
    elif isinstance(ctx, ir.Call) and ctx.fn == "loss":
        g.add_edge("loss", me, kind="loss", label="loss gradients")
    upd = lv.update
    for n in ir.walk(upd):
        if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LEVEL or isinstance(n, ir.Call) and n.kind is ir.CallKind.READ:
            name = n.name if isinstance(n, ir.Ref) else n.fn
            g.add_edge(prefix + name, me, kind="update", label="update")
    for gate, word in ((lv.lr, "η"), (lv.retain, "α")):
        if gate is not None:
            for src in sorted(_level_sources(gate, lets)):
                g.add_edge(prefix + src, me, kind="gate", label=word)
    if isinstance(lv.init, ir.Call) and lv.init.fn == "learned":
        g.add_edge("outer", me, kind="init", label="initial state")


def _level_sources(e: ir.Expr, lets: dict[str, ir.Let], seen: set[str] | None = None) -> set[str]:
    """Return the levels read (directly or through `let`s) by an expression."""
    seen = set() if seen is None else seen
    out: set[str] = set()
    for n in ir.walk(e):
        if isinstance(n, ir.Call) and n.kind is ir.CallKind.READ:
            out.add(n.fn)
        elif isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET and n.name not in seen and n.name in lets:
            seen.add(n.name)
            out |= _level_sources(lets[n.name].value, lets, seen)
    return out


# ---- drawing -----------------------------------------------------------------------

_EDGE_COLOURS = {"kv": "#1f77b4", "grad": "#d62728", "loss": "#ff7f0e", "update": "#2ca02c",
                 "gate": "#9467bd", "init": "#7f7f7f"}


def to_dot(g: nx.MultiDiGraph) -> str:
    """Return Graphviz DOT text: one nested cluster per frequency band, fastest innermost."""
    bands: dict[int, list[str]] = {}
    for n, d in g.nodes(data=True):
        if "band" in d:
            bands.setdefault(d["band"], []).append(n)
    lines = [f'digraph "{g.graph.get("name", "levels")}" {{', "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for n, d in g.nodes(data=True):
        if "band" not in d:
            lines.append(f'  "{n}" [label="{_esc(d["label"])}", shape=ellipse];')
    depth = 0
    for band in sorted(bands, reverse=True):  # slowest outermost
        freq = g.nodes[bands[band][0]]["freq"]
        lines.append("  " * (depth + 1) + f'subgraph "cluster_{band}" {{ label="{freq}";')
        for n in sorted(bands[band]):
            lines.append("  " * (depth + 2) + f'"{n}" [label="{_esc(g.nodes[n]["label"])}"];')
        depth += 1
    lines.extend("  " * d + "}" for d in range(depth, 0, -1))
    for u, v, d in sorted(g.edges(data=True), key=lambda e: (e[0], e[1], e[2]["kind"])):
        lines.append(f'  "{u}" -> "{v}" [label="{_esc(d["label"])}", color="{_EDGE_COLOURS[d["kind"]]}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def draw(g: nx.MultiDiGraph, path: str | Path) -> Path:
    """Write the level graph to path (.dot, .png or .svg) and return the path."""
    path = Path(path)
    if path.suffix == ".dot":
        atomic_write_text(path, to_dot(g))
        return path
    return _draw_matplotlib(g, path)


def _draw_matplotlib(g: nx.MultiDiGraph, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle


    banded = [n for n, d in g.nodes(data=True) if "band" in d]
    n_bands = 1 + max((g.nodes[n]["band"] for n in banded), default=0)
    pos: dict[str, tuple[float, float]] = {}
    radius = lambda b: 1.0 + 1.4 * b  # noqa: E731 - band b sits on ring b; fastest innermost
    for band in range(n_bands):
        members = sorted(n for n in banded if g.nodes[n]["band"] == band)
        for i, n in enumerate(members):
            angle = math.pi / 2 + 2 * math.pi * (i + 0.5 * band) / max(1, len(members))
            pos[n] = (radius(band) * math.cos(angle), radius(band) * math.sin(angle))
    edge_r = radius(n_bands) + 0.6
    for n, xy in (("input", (-edge_r, -edge_r * 0.8)), ("loss", (edge_r, -edge_r * 0.8))):
        if n in g:
            pos[n] = xy
    fig, ax = plt.subplots(figsize=(9, 9))
    for band in range(n_bands):
        member = next(n for n in banded if g.nodes[n]["band"] == band)
        ax.add_patch(Circle((0, 0), radius(band) + 0.6, fill=True, alpha=0.06 + 0.04 * (n_bands - band),
                            color="#4c72b0", zorder=0))
        ax.text(0, radius(band) + 0.45, str(g.nodes[member]["freq"]), ha="center", fontsize=8, color="#333")
    for k, (u, v, d) in enumerate(g.edges(data=True)):
        if u not in pos or v not in pos:
            continue
        colour = _EDGE_COLOURS[d["kind"]]
        rad = 0.15 + 0.1 * (k % 3)
        ax.annotate("", xy=pos[v], xytext=pos[u], zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.3, shrinkA=22, shrinkB=22,
                                    connectionstyle=f"arc3,rad={rad}"))
        mx, my = (pos[u][0] + pos[v][0]) / 2, (pos[u][1] + pos[v][1]) / 2
        ax.text(mx, my, d["label"], fontsize=7, color=colour, ha="center",
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    for n, (x, y) in pos.items():
        d = g.nodes[n]
        style = dict(boxstyle="round,pad=0.4", fc="#fff7e6" if "band" in d else "#eef2f7", ec="#555")
        ax.text(x, y, d["label"], ha="center", va="center", fontsize=9, bbox=style, zorder=3)
    lim = edge_r + 1.2
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{g.graph.get('name', '')}: levels by frequency (fastest innermost)")

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
