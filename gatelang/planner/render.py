"""Human and tool renderings of a plan: text for the terminal, Graphviz dot, Mermaid."""

from __future__ import annotations

from gatelang.planner.plan import KINDS, Plan, PlanNode


def _fmt(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _method(node: PlanNode):
    from gatelang.methods import get_method

    spec = get_method(str(node.params.get("method")))
    return spec, spec.resolve(node.params.get("params", {}))


def _touches(plan: Plan, node: PlanNode) -> str:
    """What an edit may change, in the model's own units (the method says), for reviewers."""
    from gatelang.methods.base import ModelShape

    spec, config = _method(node)
    m = plan.model
    where = spec.describe(config, ModelShape(m.num_layers, m.hidden_size, m.intermediate_size))
    if node.op.startswith("edit.remap"):
        where = f"{node.params.get('encoder')} ({len(node.params.get('subjects', []))} " \
                f"subjects): {where}"
    return where


def _settings(node: PlanNode) -> str:
    """The method's settings that differ from its defaults, named as a policy writes them."""
    spec, config = _method(node)
    defaults = spec.defaults()
    shown = []
    for key, info in spec.params().items():
        value = getattr(config, key)
        if value != defaults[key]:
            shown.append(f"{key} {info.display(value)}")
    profile = node.params.get("profile")
    head = f"method {spec.name}" + (f" (profile {profile})" if profile else "")
    return head + (": " + ", ".join(shown) if shown else " (defaults)")


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
    if node.kind == "edit":
        lines.append(pad + _settings(node))
        lines.append(pad + f"touches: {_touches(plan, node)}")


_SHAPES = {"data": "note", "localize": "diamond", "edit": "box3d",
           "verify": "ellipse", "report": "doubleoctagon"}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_dot(plan: Plan) -> str:
    lines = ["digraph plan {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for node in plan.nodes():
        # Escape each part, then join with dot's line break: escaping the break itself would
        # print a literal backslash-n in the drawing.
        label = _escape(node.op) + "\\n" + _escape(node.label)
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
