"""Human and tool renderings of a plan: text for the terminal, Graphviz dot, Mermaid."""

from __future__ import annotations

from gatelang.planner.plan import KINDS, Plan, PlanNode


def _fmt(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _touches(plan: Plan, node: PlanNode) -> str:
    """What a gate may change, in the model's own units, for reviewers of the plan."""
    p = node.params
    mp = p.get("params", {})
    if node.op.startswith("gate.remap"):
        return f"{p.get('encoder')} ({len(p.get('subjects', []))} subjects)"
    units = plan.model.intermediate_size
    layers = plan.model.num_layers
    if node.op == "gate.deactivate":
        return (f"zeroes at most {mp.get('top_k', '?')} MLP units (down-projection columns) "
                f"of {units * layers} in {layers} layers")
    layer = mp.get("layer", "auto")
    where = "one auto-selected decoder layer" if layer == "auto" else f"decoder layer {layer}"
    if node.op == "gate.finetune" or "sparsity" not in mp:
        return f"MLP down-projection of {where}, all {units} units"
    dims = plan.model.hidden_size  # the gate selects residual dimensions (output rows)
    gate = max(1, int(float(mp["sparsity"]) * dims))
    return (f"MLP down-projection of {where}, through a gate of at most {gate} of {dims} "
            "residual dimensions")


def render_text(plan: Plan) -> str:
    m = plan.model
    lines = [
        f"plan for {plan.source} on {m.name} ({m.family}, {m.num_layers} layers, "
        f"{m.intermediate_size} MLP units/layer); stdlib {plan.stdlib_version}",
        "",
    ]
    order = {kind: i for i, kind in enumerate(KINDS)}
    topo = {n.id: i for i, n in enumerate(plan.nodes())}
    nodes = sorted(plan.nodes(), key=lambda n: (order.get(n.kind, 99), topo[n.id]))
    width = max((len(n.op) for n in nodes), default=10)
    groups = [(name, [n for n in nodes if n.policy == name]) for name in plan.policies]
    groups.append((None, [n for n in nodes if n.policy not in plan.policies]))
    for name, members in groups:
        if not members:
            continue
        lines.append(f"policy {name}:" if name else "shared:")
        for node in members:
            _node_lines(plan, node, width, lines)
    total = plan.total_cost()
    lines += [
        "",
        f"{len(plan)} nodes, {plan.graph.number_of_edges()} edges; estimated "
        f"{_fmt(total.forward_passes)} forward and {_fmt(total.backward_passes)} backward "
        f"passes over {_fmt(total.tokens)} tokens",
    ]
    return "\n".join(lines) + "\n"


def _node_lines(plan: Plan, node: PlanNode, width: int, lines: list[str]) -> None:
    parents = plan.parents(node.id)
    deps = ", ".join(f"{role}={','.join(ids)}" for role, ids in sorted(parents.items()))
    c = node.cost
    cost = f"fwd {_fmt(c.forward_passes)} bwd {_fmt(c.backward_passes)} tok {_fmt(c.tokens)}"
    pad = " " * (2 + 16 + 2 + width + 2)
    lines.append(f"  {node.id}  {node.op:<{width}}  {node.label}")
    lines.append(pad + cost + (f"  <- {deps}" if deps else ""))
    if node.kind == "gate":
        lines.append(pad + f"touches: {_touches(plan, node)}")


_SHAPES = {"data": "note", "probe": "box", "localize": "diamond", "gate": "box3d",
           "verify": "ellipse", "report": "doubleoctagon"}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_dot(plan: Plan) -> str:
    lines = ["digraph plan {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for node in plan.nodes():
        label = _escape(f"{node.op}\\n{node.label}")
        lines.append(f'  "{node.id}" [label="{label}", shape={_SHAPES.get(node.kind, "box")}];')
    for u, v, role in plan.edges():
        lines.append(f'  "{u}" -> "{v}" [label="{_escape(role)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def render_mermaid(plan: Plan) -> str:
    lines = ["flowchart LR"]
    for node in plan.nodes():
        lines.append(f'  n{node.id}["{_mermaid_text(node.op)}<br/>{_mermaid_text(node.label)}"]')
    for u, v, role in plan.edges():
        lines.append(f"  n{u} -->|{_mermaid_text(role)}| n{v}")
    return "\n".join(lines) + "\n"


RENDERERS = {"text": render_text, "dot": render_dot, "mermaid": render_mermaid,
             "json": lambda plan: plan.to_json()}


def render(plan: Plan, fmt: str = "text") -> str:
    try:
        return RENDERERS[fmt](plan)
    except KeyError:
        raise ValueError(f"unknown plan format {fmt!r}; use one of {', '.join(RENDERERS)}") \
            from None
