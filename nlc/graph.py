"""IR -> networkx graphs: the dataflow inside a scope and the level graph of a program.

Two graphs, two jobs:
- `dataflow(scope)`: what must be computed before what *within one step*. Reading a
  level (`mem(q)`) sees its state from before the step, so it does not depend on the
  level's update; `update m` does (the optimizer level updates first). A cycle in this
  graph is a value read in the same step it is written (E310).
- `level_graph(program)`: levels as nodes ordered by frequency (fastest innermost),
  flows as labelled edges (keys/values, gradients, loss, updates, gates). Drawn by
  `draw()` as DOT with nested clusters, or as a PNG/SVG with matplotlib: one row a frequency
  (fastest on top), one framed column group a block, edges coloured by kind with a legend
  (`layout()` places the boxes; no box sits on another, so no label is hidden).
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
    """Return the same-step dependency graph of one scope: edge u -> v means v needs u first (a read of
    a `read current` level needs its update at this token: it sees it).

    Nodes: ("let", name), ("update", level name), ("out",). Edge attribute `span`: where v uses u.
    """
    g = nx.DiGraph()
    current = {s.name for s in body if isinstance(s, ir.Level) and ir.reads_current(s)}
    for s in body:
        if isinstance(s, ir.Let):
            node = ("let", s.name)
            g.add_node(node, span=s.name_span)
            for dep, span in _deps(s.value, current=current):
                g.add_edge(dep, node, span=span)
        elif isinstance(s, ir.Out):
            g.add_node(("out",), span=s.span)
            for dep, span in _deps(s.value, current=current):
                g.add_edge(dep, ("out",), span=span)
        elif isinstance(s, ir.Level):
            node = ("update", s.name)
            g.add_node(node, span=s.name_span)
            for e in ir.level_exprs(s):
                for dep, span in _deps(e, update_edges=(e is s.update), current=current):
                    g.add_edge(dep, node, span=span)
    return g


def _deps(e: ir.Expr, update_edges: bool = False, current: set[str] = frozenset()):
    for n in ir.walk(e):
        if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET:
            yield ("let", n.name), n.span
        elif update_edges and isinstance(n, ir.Ref) and n.kind is ir.RefKind.LEVEL:
            # `update m` / `update m / sqrt(v)`: the new state of m, computed in the same step
            yield ("update", n.name), n.span
        elif isinstance(n, ir.Call) and n.kind is ir.CallKind.READ and (update_edges or n.fn in current):
            # a read of a `read current` level sees its update at this token (docs/design.md §1.2)
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
            heads = facts.shape(block, lv.name).heads
            g.add_node(prefix + lv.name, kind="level", level=lv, freq=facts.period(block, lv.name),
                       label=f"{lv.name}{' (shared)' if lv.shared else ''}\n{_form_name(lv.state)}{f' ×{heads} heads' if heads > 1 else ''} · {_rule_label(lv)}")
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
    elif ir.restarts_from(lv) is not None:
        g.add_edge(prefix + ir.restarts_from(lv), me, kind="init", label="restarts from")


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


_EDGE_NAMES = {"kv": "keys/values", "grad": "gradients (∇ℓ)", "loss": "loss gradients", "update": "update",
               "gate": "gates (η, α)", "init": "initial state"}
_NODE_W, _NODE_H, _GAP, _ROW = 2.1, 0.9, 0.5, 1.9  # box and spacing, in plot units


def layout(g: nx.MultiDiGraph) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """Node positions for the picture: one row a frequency band (fastest on top), one column group a
    block (levels of one block side by side in its row, never on top of each other), the outer
    level, the inputs and the task loss on the bottom row. Returns (positions, each block's x span)."""
    banded = [n for n, d in g.nodes(data=True) if d["kind"] == "level"]
    n_bands = _level_bands(g)
    blocks = list(dict.fromkeys(_block_of(n) for n in banded))  # in the order the spec has them
    pos: dict[str, tuple[float, float]] = {}
    spans: dict[str, tuple[float, float]] = {}
    x = 0.0
    for b in blocks:
        rows = {band: sorted(n for n in banded if _block_of(n) == b and g.nodes[n]["band"] == band)
                for band in range(n_bands)}
        width = max(len(r) for r in rows.values()) * (_NODE_W + _GAP)
        for band, members in rows.items():
            left = x + (width - len(members) * (_NODE_W + _GAP)) / 2
            for i, n in enumerate(members):
                pos[n] = (left + (i + 0.5) * (_NODE_W + _GAP), (n_bands - band) * _ROW)
        spans[b] = (x, x + width)
        x += width + _GAP
    bottom = [n for n in ("input", "outer", "loss") if n in g]
    centre = x / 2 - _GAP / 2
    for i, n in enumerate(bottom):
        pos[n] = (centre + (i - (len(bottom) - 1) / 2) * (_NODE_W + 2 * _GAP), 0.0)
    return pos, spans


def _on_edge(centre: tuple[float, float], towards: tuple[float, float], half: tuple[float, float]):
    """Where the straight line from a box's centre towards a point leaves the box (half-sizes `half`)."""
    dx, dy = towards[0] - centre[0], towards[1] - centre[1]
    t = min(half[0] / abs(dx) if dx else math.inf, half[1] / abs(dy) if dy else math.inf, 1.0)
    return centre[0] + t * dx, centre[1] + t * dy


def _level_bands(g: nx.MultiDiGraph) -> int:
    """How many frequency bands the levels take (rows of the picture; 0 without levels)."""
    return 1 + max((d["band"] for _, d in g.nodes(data=True) if d["kind"] == "level"), default=-1)


def _block_of(node: str) -> str:
    return node.rpartition(".")[0]


def _draw_matplotlib(g: nx.MultiDiGraph, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyBboxPatch

    pos, spans = layout(g)
    n_bands = _level_bands(g)
    xs = [x for x, _ in pos.values()] or [0.0]
    left, right = min(xs) - _NODE_W, max(xs) + _NODE_W
    top = (n_bands + 0.7) * _ROW
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * (right - left) + 2.5), max(4.0, 0.8 * top + 1.5)))
    for band in range(n_bands):  # rows, labelled with their frequency on the left
        y = (n_bands - band) * _ROW
        ax.axhspan(y - _ROW / 2, y + _ROW / 2, color="#4c72b0", alpha=0.05 + 0.05 * (band % 2), zorder=0)
        member = next(n for n, d in g.nodes(data=True) if d.get("band") == band and d["kind"] == "level")
        ax.text(left - 0.2, y, str(g.nodes[member]["freq"]), ha="right", va="center", fontsize=8, color="#333")
    for b, (x0, x1) in spans.items():  # one frame a block
        ax.add_patch(FancyBboxPatch((x0, _ROW / 2 + 0.1), x1 - x0 - _GAP, n_bands * _ROW - 0.2,
                                    boxstyle="round,pad=0.1", fill=False, ec="#8a9bb5", ls="--", zorder=1))
        ax.text((x0 + x1 - _GAP) / 2, (n_bands + 0.5) * _ROW + 0.05, f"block {b}" if b else "levels",
                ha="center", va="bottom", fontsize=9, color="#3b4a63")
    boxes = {}
    for n, (x, y) in pos.items():
        d = g.nodes[n]
        style = dict(boxstyle="round,pad=0.35", fc="#fff7e6" if d["kind"] == "level" else "#eef2f7", ec="#555")
        boxes[n] = ax.text(x, y, d["label"], ha="center", va="center", fontsize=8.5, bbox=style, zorder=3)
    ax.set_xlim(left - 1.6, right)
    ax.set_ylim(-_ROW / 2 - 0.2, top)
    fig.canvas.draw()  # lays the boxes out: their sizes decide where arrows start and end
    to_data = ax.transData.inverted()
    half = {n: (abs(e.x1 - e.x0) / 2, abs(e.y1 - e.y0) / 2) for n, t in boxes.items()
            for e in [to_data.transform_bbox(t.get_bbox_patch().get_window_extent())]}
    for k, (u, v, d) in enumerate(g.edges(data=True)):
        if u in pos and v in pos and u != v:  # from box edge to box edge, so every arrowhead shows
            ax.annotate("", xy=_on_edge(pos[v], pos[u], half[v]), xytext=_on_edge(pos[u], pos[v], half[u]),
                        zorder=2, arrowprops=dict(arrowstyle="-|>", color=_EDGE_COLOURS[d["kind"]], lw=1.1,
                                                  alpha=0.8, shrinkA=1, shrinkB=1,
                                                  connectionstyle=f"arc3,rad={0.12 + 0.08 * (k % 3)}"))
    kinds = sorted({d["kind"] for _, _, d in g.edges(data=True)}, key=list(_EDGE_NAMES).index)
    ax.legend(handles=[Line2D([], [], color=_EDGE_COLOURS[k], lw=2, label=_EDGE_NAMES[k]) for k in kinds],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.axis("off")
    ax.set_title(f"{g.graph.get('name', '')}: levels by frequency (fastest on top)")

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
