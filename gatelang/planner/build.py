"""IR + model capabilities -> plan.

Per policy, in file order: edit query sets (one per subject set, language and modality mix,
so rules about the same people in the same language share the set), the method's localize node
(when it has one) and its edit node (which reads the previous policy's edit through a `weights`
edge, so edits compose in file order), verify nodes on data the edit never saw, and a
`report.requirements` node that alone holds the thresholds: tightening a threshold re-runs
only the report.

Which ops a method contributes and what they cost comes from its registered `MethodSpec`
(gatelang/methods/<name>/): the planner holds no per-method table. Params carry everything a pass
needs without the IR. Two conventions passes rely on: method parameters are nested under
`params` next to `method` (every parameter of the method's config, percentages as fractions);
requirement thresholds in `report.requirements` are in the metric's display unit (95.0 for 95%).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import networkx as nx

from gatelang.errors import Diagnostic, PlanError, Span
from gatelang.ir import model as ir
from gatelang.methods import Work, get_method
from gatelang.planner.capabilities import TINY_LLAVA_CAPABILITIES, ModelCapabilities
from gatelang.planner.plan import Cost, Plan, PlanNode, node_id
from gatelang.stdlib import Stdlib, load_stdlib

SEED = "$seed"  # replaced by the run's seed (the runtime derives one per node)
MAX_NEW_TOKENS = 24  # generation length assumed by the cost estimate of verify nodes
LOCALITY_SAMPLE = 16  # queries per (attribute, language, modality, split) cell for other
# subjects: with two attributes a reported cell (group, split, language, modality) has n >= 30
# The attack passes every refuse policy is verified with (docs/robustness.md), and how many
# generations (or forward passes) each costs per question and side, for the plan's estimate.
ATTACKS: tuple[str, ...] = ("sampled", "prefill", "jailbreak", "paraphrase", "quantized",
                             "relearn", "exposure", "logit_lens")
_ATTACK_WORK = {
    "sampled": lambda s: s.samples * len(s.temperatures),
    "prefill": lambda s: 2,  # `assent` and `assent+shared`
    "exposure": lambda s: s.exposure_candidates + 1,
    "logit_lens": lambda s: 1,
    "quantized": lambda s: len(s.quantize_bits),
    "relearn": lambda s: 1,
    # templates of the language that has most; forms of the (attribute, language) that has most
    "jailbreak": lambda s: max(map(len, load_stdlib().attacks.jailbreak.values()), default=1),
    "paraphrase": lambda s: max((len(f) for a in load_stdlib().attacks.paraphrase.values()
                                 for f in a.values()), default=1),
}
_NO_GENERATION = ("exposure", "logit_lens")  # forward passes only (teacher-forced / one pass)
_EXCLUDED_FROM_LOCALITY = ("attributes.credentials",)  # answered with a refusal by habit


@lru_cache(maxsize=1024)
def _name_bytes(names: tuple[str, ...]) -> tuple[int, int]:
    return len(names), sum(len(s.encode()) for s in names)


class _Counter:
    """Query and token counts from the stdlib templates, for cost estimates."""

    def __init__(self, std: Stdlib, caps: ModelCapabilities) -> None:
        self.std = std
        self.caps = caps
        self._cells: dict[tuple[str, str, str, str], tuple[int, int, int]] = {}

    def cell(self, attribute: str, language: str, modality: str, split: str):
        """(templates, template bytes without the subject, subject slots) of one cell."""
        key = (attribute, language, modality, split)
        if key not in self._cells:
            spec = self.std.attributes.get(attribute)
            templates: tuple[str, ...] = ()
            if spec is not None:
                if modality in ("text", "image"):
                    ts = spec.templates.get(language)
                elif modality == "document":
                    ts = spec.document_templates.get(language)
                else:
                    ts = spec.scene.templates.get(language) if spec.scene else None
                if ts is not None:
                    templates = getattr(ts, split)
            nbytes = sum(len(t.replace("{subject}", "").encode()) for t in templates)
            slots = sum(t.count("{subject}") for t in templates)
            self._cells[key] = (len(templates), nbytes, slots)
        return self._cells[key]

    def queries(self, subjects: Iterable[str] | int, attributes, languages, modalities,
                splits) -> tuple[int, int]:
        """(number of queries, prompt tokens) of a selection; tokens are UTF-8 bytes."""
        if isinstance(subjects, int):
            n_subjects, name_bytes = subjects, subjects * 12
        else:
            n_subjects, name_bytes = _name_bytes(tuple(subjects))
        count = tokens = 0
        for a in attributes:
            for lang in languages:
                phrase = self.std.languages[lang].subject_phrase if lang in self.std.languages \
                    else {}
                for m in modalities:
                    for s in splits:
                        n, nbytes, slots = self.cell(a, lang, m, s)
                        if not n:
                            continue
                        count += n * n_subjects
                        tokens += nbytes * n_subjects
                        if m == "text":
                            tokens += slots * name_bytes
                        else:
                            sub = phrase.get("document" if m == "document" else "image", "")
                            tokens += n_subjects * (slots * len(sub.encode())
                                                    + n * self.caps.image_tokens)
        return count, tokens


class _Builder:
    def __init__(self, pf: ir.PolicyFile, caps: ModelCapabilities, std: Stdlib) -> None:
        self.pf = pf
        self.caps = caps
        self.std = std
        self.g = nx.DiGraph()
        self.count = _Counter(std, caps)
        self.diags: list[Diagnostic] = []

    def add(self, kind: str, op: str, params: dict[str, Any], parents: list[tuple[str, str]],
            label: str, policy: str | None, span: Span | None, cost: Cost) -> str:
        parents = list(dict.fromkeys(parents))  # the graph holds one edge per (parent, role)
        if len({pid for _role, pid in parents}) != len(parents):
            raise AssertionError(f"{op}: a parent reaches it under two roles: {parents}")
        nid = node_id(kind, op, params, parents, self.std.version)
        if nid in self.g:
            return nid  # the same work is already planned: share it
        self.g.add_node(nid, node=PlanNode(id=nid, kind=kind, op=op, params=params, label=label,
                                           policy=policy, span=span, cost=cost))
        for order, (role, pid) in enumerate(parents):
            # `order` keeps the policy's order among parents of one role (edit sets in the
            # order of the rule's languages), so pass inputs do not depend on hash values.
            self.g.add_edge(pid, nid, role=role, order=order)
        return nid

    # -- data ------------------------------------------------------------------------------------
    def data(self, label: str, policy: str, span: Span, *, subjects=None, exclude=None,
             attributes=(), languages=(), modalities=None, splits=("edit",),
             source: str | None = None, per_cell_limit: int | None = None) -> tuple[str, int, int]:
        params: dict[str, Any] = {}
        if modalities is None and source is None:
            modalities = ("text",)
        if source:
            params["source"] = source
        if subjects is not None:
            params["subjects"] = list(subjects)
        if exclude is not None:
            params["exclude_subjects"] = list(exclude)
        if attributes:
            params["attributes"] = list(attributes)
        params["languages"] = list(languages)
        if source is None:
            params["modalities"] = list(modalities)
            params["splits"] = list(splits)
        elif modalities:
            params["modalities"] = list(modalities)
        if per_cell_limit:
            params["per_cell_limit"] = per_cell_limit
        if source == "utility":
            n = sum(len(v.get(lang, ())) for v in self.std.utility.get("tasks", {}).values()
                    for lang in languages)
            tokens = n * 40
        elif subjects is None:
            cells, tokens = self.count.queries(1, attributes, languages, modalities, splits)
            n = cells * (per_cell_limit or 1)
            tokens *= per_cell_limit or 1
        else:
            n, tokens = self.count.queries(subjects, attributes, languages, modalities, splits)
        nid = self.add("data", "data.queries", params, [], f"{label} ({n} queries)", policy,
                       span, Cost(tokens=tokens))
        return nid, n, tokens

    # -- checks against the model ----------------------------------------------------------------
    def check(self, policy: ir.Policy) -> None:
        for rule in policy.rules:
            if isinstance(rule, ir.RefuseRule) and not self.caps.generates:
                self.diags.append(Diagnostic(
                    "G306", f"model {self.caps.name} cannot answer questions, so it has nothing "
                    "to refuse", rule.span,
                    f"{self.caps.name} is a {self.caps.family} dual encoder without decoder "
                    "layers; plan refuse rules on a generative model (e.g. --model tiny-llava), "
                    "or write an `anonymize` rule for this one"))
            elif isinstance(rule, ir.RefuseRule):
                for lang in rule.languages:
                    if lang not in self.caps.languages:
                        self.diags.append(Diagnostic(
                            "G301", f"model {self.caps.name} does not support language {lang!r}",
                            rule.span, "the model supports: " + ", ".join(self.caps.languages)))
                for m in rule.modalities:
                    if m not in self.caps.modalities:
                        self.diags.append(Diagnostic(
                            "G302", f"model {self.caps.name} cannot take {m} queries",
                            rule.span, "the model supports: " + ", ".join(self.caps.modalities)))
            elif isinstance(rule, ir.AnonymizeRule):
                for enc in rule.encoders:
                    if self.caps.encoder_for(enc) is None:
                        have = ", ".join(self.caps.encoders) or "none"
                        self.diags.append(Diagnostic(
                            "G303", f"model {self.caps.name} has no {enc} encoder to anonymize",
                            rule.span, f"the model's encoders: {have}"))
        if any(r.split == "unseen_language" for r in policy.requirements):
            named = {lang for r in policy.refuse_rules() for lang in r.languages}
            if not [x for x in self.caps.languages if x in self.std.languages and x not in named]:
                req = next(r for r in policy.requirements if r.split == "unseen_language")
                self.diags.append(Diagnostic(
                    "G305", "no unseen language is left to measure on", req.span,
                    f"the rules name every language {self.caps.name} supports "
                    f"({', '.join(self.caps.languages)}); drop one from `in` or this requirement"))
        layer = policy.method.params.get("layer")
        no_decoder = not self.caps.generates and bool(policy.refuse_rules())
        if isinstance(layer, int) and not 0 <= layer < self.caps.num_layers and not no_decoder:
            self.diags.append(Diagnostic(
                "G304", f"layer {layer} does not exist in {self.caps.name}", policy.method.span,
                f"layers are 0..{self.caps.num_layers - 1}, or `auto`"))

    # -- policies --------------------------------------------------------------------------------
    def policy(self, p: ir.Policy, prev_edit: str | None) -> str:
        if p.method.family == "encoder_remap":
            return self.anonymize_policy(p, prev_edit)
        return self.refuse_policy(p, prev_edit)

    def _method_params(self, p: ir.Policy) -> dict[str, Any]:
        out: dict[str, Any] = {"method": p.method.name,
                               "params": dict(sorted(p.method.params.items()))}
        if p.method.profile:
            out["profile"] = p.method.profile
        return out

    def refuse_policy(self, p: ir.Policy, prev_edit: str | None) -> str:
        name = p.name
        rules = p.refuse_rules()
        weights = [("weights", prev_edit)] if prev_edit else []
        # Edit sets: merge rules over (subjects, language, modalities), so rules about the same
        # people in the same language share the query set.
        groups: dict[tuple, dict[str, Any]] = {}
        for r in rules:
            for lang in r.languages:
                key = (r.subjects, lang, r.modalities)
                g = groups.setdefault(key, {"attributes": [], "span": r.span})
                g["attributes"].extend(a for a in r.attributes if a not in g["attributes"])
        edits: list[tuple[str, int, int]] = []
        for (subjects, lang, mods), g in groups.items():
            label = f"edit set: {', '.join(g['attributes'])} / {lang} / {'+'.join(mods)}"
            edits.append(self.data(label, name, g["span"], subjects=subjects,
                                   attributes=g["attributes"], languages=[lang], modalities=mods,
                                   splits=["edit"]))
        n_edit = sum(e[1] for e in edits)
        edit_tokens = sum(e[2] for e in edits)
        subjects = list(dict.fromkeys(s for r in rules for s in r.subjects))
        attributes = list(dict.fromkeys(a for r in rules for a in r.attributes))
        languages = list(dict.fromkeys(lang for r in rules for lang in r.languages))
        modalities = [m for m in ir.MODALITIES if any(m in r.modalities for r in rules)]
        scope = {"subjects": subjects, "attributes": attributes, "languages": languages,
                 "modalities": modalities, "model": self.caps.name, "seed": SEED}
        spec = get_method(p.method.name)
        config = spec.resolve(p.method.params)
        layers = self.caps.num_layers
        edit_edges = [("edit_set", e[0]) for e in edits]
        parents = [*edit_edges, *weights]
        if spec.localize:
            params = {**self._method_params(p), **scope, **spec.localize_params}
            loc = self.add("localize", spec.localize, params, [*edit_edges, *weights],
                           f"localize: {spec.name}", name, p.method.span,
                           _cost(spec.localize_cost(config, n_edit, edit_tokens, layers)))
            parents.append(("localize", loc))
        edit_params = {**self._method_params(p), **scope}
        if spec.reads_requirements:
            edit_params["requirements"] = [
                {"metric": r.metric, "split": r.split, "op": r.op, "threshold": r.threshold}
                for r in p.requirements]
        edit = self.add("edit", spec.edit["refuse"], edit_params, parents,
                        f"edit: {spec.name} ({name})", name, p.method.span,
                        _cost(spec.edit_cost(config, n_edit, edit_tokens, layers)))
        verifies = self.verify_refuse(p, edit, languages, edits)
        self.report(p, edit, verifies)
        return edit

    def _verify(self, op: str, p: ir.Policy, edit: str, data: list[tuple[str, int, int]],
                params: dict[str, Any], label: str, span: Span) -> str:
        n = sum(d[1] for d in data)
        tokens = sum(d[2] for d in data)
        cost = Cost(forward_passes=2 * n, tokens=2 * (tokens + n * MAX_NEW_TOKENS))
        params = {**params, "model": self.caps.name, "max_new_tokens": MAX_NEW_TOKENS}
        return self.add("verify", op, params,
                        [("edited", edit), *[("queries", d[0]) for d in data]],
                        label, p.name, span, cost)

    def verify_attacks(self, p: ir.Policy, edit: str, heldout: list[tuple[str, int, int]],
                       params: dict[str, Any]) -> list[str]:
        """One node per attack (docs/robustness.md) on the rules' held-out questions.

        Attacks are planned for every refuse policy, not only when a requirement names them: a
        reviewer sees how deep the edit goes whether or not the policy sets a threshold.
        """
        settings = self.std.attacks.settings
        n = min(settings.items, sum(d[1] for d in heldout))
        per_question = max(1, sum(d[2] for d in heldout) // max(1, sum(d[1] for d in heldout)))
        out = []
        for attack in ATTACKS:
            passes = 2 * n * _ATTACK_WORK[attack](settings)
            # relearn trains on both sides: steps x batch sequences forward and backward each
            trained = 2 * settings.relearn_steps * settings.relearn_batch \
                if attack == "relearn" else 0
            cost = Cost(forward_passes=passes + trained, backward_passes=trained,
                        tokens=passes * (per_question + (0 if attack in _NO_GENERATION
                                                         else MAX_NEW_TOKENS)))
            nid = self.add("verify", f"verify.{attack}", {
                **{k: params[k] for k in ("subjects", "attributes", "rule_languages",
                                          "refusal_languages") if k in params},
                "model": self.caps.name}, [("edited", edit), *[("queries", d[0]) for d in heldout]],
                f"attack: {attack} ({p.name})", p.name, p.span, cost)
            out.append(nid)
        return out

    def verify_refuse(self, p: ir.Policy, edit: str, languages: list[str],
                      edits: list[tuple[str, int, int]]) -> list[str]:
        name = p.name
        rules = p.refuse_rules()
        out: list[str] = []
        refusal_data = []
        for r in rules:
            refusal_data.append(self.data(
                f"held-out: {', '.join(r.attributes)} / {'+'.join(r.languages)} / "
                f"{'+'.join(r.modalities)}", name, r.span, subjects=r.subjects,
                attributes=r.attributes, languages=r.languages, modalities=r.modalities,
                splits=["heldout"]))
        unseen = [lang for lang in self.caps.languages
                  if lang in self.std.languages and lang not in languages]
        attributes = list(dict.fromkeys(a for r in rules for a in r.attributes))
        subjects = list(dict.fromkeys(s for r in rules for s in r.subjects))
        if unseen:
            refusal_data.append(self.data(
                f"unseen languages: {'+'.join(unseen)}", name, p.span, subjects=subjects,
                attributes=attributes, languages=unseen, modalities=["text"],
                splits=["heldout"]))
        params: dict[str, Any] = {
            "subjects": subjects, "attributes": attributes, "rule_languages": languages,
            "modalities": [m for m in ir.MODALITIES if any(m in r.modalities for r in rules)],
        }
        if p.refusal_languages:
            params["refusal_languages"] = list(p.refusal_languages)
        if any(r.split == "edit" for r in p.requirements):
            # Only a requirement on the edit split measures on what the edit trained on.
            refusal_data.extend(edits)
            params["include_edit"] = True
        out.append(self._verify("verify.refusal", p, edit, refusal_data, params,
                                f"verify refusal ({name})", p.span))
        out.extend(self.verify_attacks(p, edit, refusal_data[: len(rules)], params))
        locality = []
        if p.preserves("other_subjects"):
            locality.append(self.data(
                "other subjects, same attributes", name, p.span, exclude=subjects,
                attributes=attributes, languages=languages, modalities=["text"],
                splits=["heldout"], per_cell_limit=LOCALITY_SAMPLE))
        if p.preserves("other_attributes"):
            excluded = {a for m in _EXCLUDED_FROM_LOCALITY for a in self.std.modules.get(m, ())}
            others = [a for a in self.std.attributes if a not in attributes and a not in excluded]
            if others:
                locality.append(self.data(
                    "same subjects, other attributes", name, p.span, subjects=subjects,
                    attributes=others, languages=languages, modalities=["text"],
                    splits=["heldout"]))
        for k in p.keep_rules():
            locality.append(self.data(
                f"kept: {', '.join(k.attributes)}", name, k.span, subjects=k.subjects,
                attributes=k.attributes, languages=languages, modalities=["text"],
                splits=["heldout"]))
        if locality:
            out.append(self._verify("verify.locality", p, edit, locality, {
                "subjects": subjects, "attributes": attributes, "rule_languages": languages,
            }, f"verify locality ({name})", p.span))
        if p.preserves("utility"):
            # A text-only model is scored on the text tasks only (it cannot see the images).
            text_only = ["text"] if "image" not in self.caps.modalities else None
            util = self.data("utility tasks", name, p.span, source="utility",
                             languages=languages, modalities=text_only)
            out.append(self._verify("verify.utility", p, edit, [util], {
                "rule_languages": languages}, f"verify utility ({name})", p.span))
        return out

    def anonymize_policy(self, p: ir.Policy, prev_edit: str | None) -> str:
        name = p.name
        edit = prev_edit
        verifies = []
        spec = get_method(p.method.name)
        config = spec.resolve(p.method.params)
        for r in p.anonymize_rules():
            for enc in r.encoders:
                modality = "text" if enc == "text" else "image"
                data = self.data(f"{enc} encoder: subjects", name, r.span, subjects=r.subjects,
                                 languages=list(self.caps.languages[:1]) or ["en"],
                                 attributes=(), modalities=[modality], splits=["edit"])
                params = {**self._method_params(p), "subjects": list(r.subjects),
                          "encoder": self.caps.encoder_for(enc), "model": self.caps.name,
                          "seed": SEED}
                work = spec.edit_cost(config, data[1], data[2], self.caps.num_layers)
                edit = self.add("edit", spec.edit[enc], params,
                                [("edit_set", data[0]), *([("weights", edit)] if edit else [])],
                                f"edit: remap {enc} encoder ({name})", name, r.span, _cost(work))
            held = self.data("identity queries (held-out)", name, r.span, subjects=r.subjects,
                             languages=list(self.caps.languages), attributes=(),
                             modalities=["image" if "image" in r.encoders else "text"],
                             splits=["heldout"])
            assert edit is not None
            verifies.append(self._verify("verify.identity_inference", p, edit, [held], {
                "subjects": list(r.subjects), "encoders": list(r.encoders)},
                f"verify identity inference ({name})", r.span))
        assert edit is not None
        self.report(p, edit, verifies)
        return edit

    def report(self, p: ir.Policy, edit: str, verifies: list[str]) -> str:
        reqs = []
        for r in p.requirements:
            threshold = r.threshold * 100 if r.unit == "percent" else r.threshold
            reqs.append({"name": r.display(), "metric": r.metric, "split": r.split, "op": r.op,
                         "threshold": round(threshold, 10), "unit": r.unit, "policy": p.name})
        return self.add("report", "report.requirements", {"policy": p.name, "requirements": reqs},
                        [("edited", edit), *[("verify", v) for v in verifies]],
                        f"requirements ({p.name})", p.name, p.span, Cost())


def _cost(work: Work) -> Cost:
    return Cost(forward_passes=work.forward_passes, backward_passes=work.backward_passes,
                tokens=work.tokens)


def plan(pf: ir.PolicyFile, capabilities: ModelCapabilities | None = None, *,
         stdlib: Stdlib | None = None) -> Plan:
    """The pass graph for a checked policy file on a model (default: the built-in tiny-llava).

    Raises `PlanError` with located diagnostics when the model cannot run the policy.
    """
    caps = capabilities or TINY_LLAVA_CAPABILITIES
    std = stdlib or load_stdlib()
    if pf.stdlib_version != std.version:
        raise PlanError(f"{pf.source} was checked against stdlib {pf.stdlib_version}, "
                        f"but this gatelang ships {std.version}; check it again")
    b = _Builder(pf, caps, std)
    for p in pf.policies:
        b.check(p)
    if b.diags:
        raise PlanError(diagnostics=b.diags)
    prev = None
    for p in pf.policies:
        prev = b.policy(p, prev)
    return Plan(b.g, model=caps, stdlib_version=std.version, stdlib_sha256=std.sha256,
                source=pf.source, policies=tuple(p.name for p in pf.policies))
