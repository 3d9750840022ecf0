"""Refusal patch: rewrite k MLP units of the last decoder layer, trained on cached states.

The last decoder layer's MLP output is added to the residual stream right before the final norm
and the unembedding, and no attention reads it. So if only units of that MLP change, the logits
at a position depend on the change through that position's own states alone:

    logits' = unembed(h + mlp_k'(x) - mlp_k(x))

with `h` the last layer's output and `x` its MLP input, both computed once by the unedited model
(teacher forcing), and `mlp_k` the MLP restricted to the k rewritten units (a sliced copy of the
model's own MLP module, so the activation function and layout are the model's). Training then
never runs the model: each step is a k-unit MLP and an unembedding over the cached positions.
This is exact, not an approximation: the patched model computes the same numbers (tested).

Units are chosen among the least active on the edit rows, and rewritten in full (their input
rows and their output column), as `neural_gate`'s `unit_select quiet` + `unit_inputs` do.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gatelang.methods.refusal_patch.data import KINDS, Row, secret_of
from gatelang.models.hooks import capture_inputs, capture_outputs

BATCH = 32


@dataclass
class Cache:
    """States of the unedited model at the scored positions (one per scored target token) and at
    every token of the retain rows (for the activation margin)."""

    x: torch.Tensor  # [P, D] MLP input at the patched layer, at the position predicting the token
    h: torch.Tensor  # [P, D] the last decoder layer's output there
    token: torch.Tensor  # [P] the teacher-forced token
    row: torch.Tensor  # [P] row index
    kind: torch.Tensor  # [P] index into data.KINDS
    first: torch.Tensor  # [P] bool: the first scored token of a refuse row
    base_logp: torch.Tensor  # [P] the unedited model's log-probability of `token`
    weight: torch.Tensor  # [P] the row's weight
    retain_logp: torch.Tensor  # [R, V] unedited log-softmax at the retain positions (kind retain)
    local_x: torch.Tensor  # [Q, D] MLP input at every real token of the retain rows
    local_row: torch.Tensor  # [Q] their row index
    activity: torch.Tensor  # [units] mean |activation| of each MLP unit over every row's tokens
    languages: list[str] = field(default_factory=list)  # per row
    secrets: list[str] = field(default_factory=list)  # per row: "subject/attribute" or ""
    rows: int = 0


def mlp_module(model: nn.Module, adapter: Any, layer: int) -> nn.Module:
    """The MLP module of a decoder layer: the parent of its down projection."""
    path = adapter.site(f"down_proj({layer})").path
    return model.get_submodule(path.rsplit(".", 1)[0])


def _span(tokenizer: Any, row: Row, ids: list[int]) -> tuple[int, int]:
    """(start, end) of the scored tokens inside the target's token ids (EOS last)."""
    end = len(ids) if row.eos else len(ids) - 1
    start = 0
    if row.prefix:
        pre = tokenizer(" " + row.prefix, add_special_tokens=False)["input_ids"]
        while start < min(len(pre), end) and pre[start] == ids[start]:
            start += 1
    if row.take:
        end = min(end, start + row.take)
    return start, max(start, end)


def _order(rows: Sequence[Row]) -> list[int]:
    return sorted(range(len(rows)), key=lambda i: (rows[i].item.image is not None,
                                                   len(rows[i].item.prompt) + len(rows[i].target)))


@torch.no_grad()
def cache_states(loaded: Any, layer: int, rows: Sequence[Row], *, batch_size: int = BATCH,
                 progress: Callable[[int], None] | None = None, all_tokens: bool = False
                 ) -> Cache:
    """One forward of the unedited model per row, keeping what training needs (see `Cache`)."""
    model, adapter, tok = loaded.model, loaded.adapter, loaded.tokenizer
    mlp = mlp_module(model, adapter, layer)
    down = adapter.module(f"down_proj({layer})")
    last = adapter.module(f"decoder_layer({layer})")
    units = adapter.intermediate_size
    acc: dict[str, list[torch.Tensor]] = {k: [] for k in (
        "x", "h", "token", "row", "kind", "first", "base_logp", "retain_logp", "local_x",
        "local_row", "weight")}
    act_sum = torch.zeros(units)
    act_n = 0
    order = _order(rows)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = [rows[i] for i in idx]
        enc = adapter.encode([r.item for r in batch], [r.target for r in batch], add_eos=True)
        enc = enc.to(loaded.device, loaded.dtype)
        with capture_inputs(mlp) as xs, capture_outputs(last) as hs, capture_inputs(
                down, reduce=lambda a: a.float().abs()) as acts:
            logits = model(**enc.model_inputs(), use_cache=False).logits
        x, h, act = xs[-1].float(), hs[-1].float(), acts[-1]
        mask = enc.attention_mask.bool()
        act_sum += (act * mask.unsqueeze(-1)).sum((0, 1)).cpu()
        act_n += int(mask.sum())
        logp = torch.log_softmax(logits.float(), dim=-1)
        for b, r in enumerate(batch):
            tpos = torch.nonzero(enc.target_mask[b]).flatten()
            ids = enc.input_ids[b, tpos].tolist()
            s, e = _span(tok, r, ids)
            pos = tpos[s:e]
            if len(pos):
                pred = pos - 1
                kind = KINDS.index(r.kind)
                acc["x"].append(x[b, pred].cpu())
                acc["h"].append(h[b, pred].cpu())
                acc["token"].append(enc.input_ids[b, pos].cpu())
                acc["row"].append(torch.full((len(pos),), idx[b]))
                acc["kind"].append(torch.full((len(pos),), kind))
                acc["weight"].append(torch.full((len(pos),), float(r.weight)))
                first = torch.zeros(len(pos), dtype=torch.bool)
                first[0] = r.kind == "refuse"
                acc["first"].append(first)
                lp = logp[b, pred]
                acc["base_logp"].append(lp.gather(-1, enc.input_ids[b, pos].unsqueeze(-1))
                                        .squeeze(-1).cpu())
                if r.kind == "retain":
                    acc["retain_logp"].append(lp.cpu())
            if r.kind == "retain" and all_tokens:
                real = torch.nonzero(mask[b]).flatten()
                acc["local_x"].append(x[b, real].cpu())
                acc["local_row"].append(torch.full((len(real),), idx[b]))
        if progress is not None:
            progress(len(batch))
    dim = adapter.hidden_size
    vocab = int(model.get_output_embeddings().weight.shape[0])

    def cat(key: str, empty: torch.Tensor) -> torch.Tensor:
        return torch.cat(acc[key]) if acc[key] else empty

    return Cache(
        x=cat("x", torch.zeros(0, dim)), h=cat("h", torch.zeros(0, dim)),
        token=cat("token", torch.zeros(0, dtype=torch.long)),
        row=cat("row", torch.zeros(0, dtype=torch.long)),
        kind=cat("kind", torch.zeros(0, dtype=torch.long)),
        first=cat("first", torch.zeros(0, dtype=torch.bool)),
        base_logp=cat("base_logp", torch.zeros(0)), weight=cat("weight", torch.zeros(0)),
        retain_logp=cat("retain_logp", torch.zeros(0, vocab)),
        local_x=cat("local_x", torch.zeros(0, dim)),
        local_row=cat("local_row", torch.zeros(0, dtype=torch.long)),
        activity=act_sum / max(1, act_n), languages=[r.language for r in rows],
        secrets=[secret_of(r.item) if r.kind != "retain" else ""
                 for r in rows], rows=len(rows))


def thin(cache: Cache, easy: float) -> Cache:
    """Keep every reply token the unedited model would not write itself (log-probability below
    log 0.5: the reply's start, the joins between languages) and a share `easy` of the others
    (evenly spaced), which the model continues by itself and which only need to stay so."""
    if easy >= 1.0:
        return cache
    refuse = cache.kind == 0
    hard = cache.base_logp < math.log(0.5)
    step = max(1, round(1 / easy)) if easy > 0 else 0
    keep = ~refuse | hard
    if step:
        easy_idx = torch.nonzero(refuse & ~hard).flatten()
        keep[easy_idx[::step]] = True
    idx = torch.nonzero(keep).flatten()
    retain_keep = keep[cache.kind == 2]
    return Cache(x=cache.x[idx], h=cache.h[idx], token=cache.token[idx], row=cache.row[idx],
                 kind=cache.kind[idx], first=cache.first[idx], base_logp=cache.base_logp[idx],
                 weight=cache.weight[idx], retain_logp=cache.retain_logp[retain_keep],
                 local_x=cache.local_x, local_row=cache.local_row, activity=cache.activity,
                 languages=cache.languages, secrets=cache.secrets, rows=cache.rows)


def quiet_units(activity: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k least active units (ties to the lower index), sorted."""
    order = sorted(range(activity.numel()), key=lambda j: (float(activity[j]), j))
    return torch.tensor(sorted(order[:k]), dtype=torch.long)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def sliced_mlp(mlp: nn.Module, adapter: Any, layer: int, units: torch.Tensor) -> nn.Module:
    """A copy of the MLP module restricted to `units`: its input projections keep those units'
    rows (and biases), its down projection those units' columns and no bias. Its forward is the
    model's own MLP forward, so mlp_k(x) is exactly those units' contribution."""
    part = copy.deepcopy(mlp)
    base = adapter.site(f"down_proj({layer})").path.rsplit(".", 1)[0]
    with torch.no_grad():
        for name, module in adapter.mlp_input_weights(layer):
            rel = name[len(base) + 1:].rsplit(".", 1)[0]
            sub = part.get_submodule(rel)
            axis = adapter.units_axis(module, "input")
            sub.weight = nn.Parameter(module.weight.detach().index_select(
                axis, units.to(module.weight.device)).float().clone())
            if getattr(module, "bias", None) is not None:
                sub.bias = nn.Parameter(module.bias.detach()[units].float().clone())
            _resize(sub, len(units), "out")
        down_path = adapter.site(f"down_proj({layer})").path
        down = adapter.module(f"down_proj({layer})")
        sub = part.get_submodule(down_path[len(base) + 1:])
        axis = adapter.units_axis(down, "down")
        sub.weight = nn.Parameter(down.weight.detach().index_select(
            axis, units.to(down.weight.device)).float().clone())
        if getattr(down, "bias", None) is not None:
            sub.bias = None if _is_linear(down) else nn.Parameter(
                torch.zeros_like(down.bias, dtype=torch.float32))
        _resize(sub, len(units), "in")
    return part.float()


def _resize(module: nn.Module, k: int, side: str) -> None:
    if _is_linear(module):
        if side == "out":
            module.out_features = k
        else:
            module.in_features = k
    elif hasattr(module, "nf") and side == "out":  # GPT-2 Conv1D
        module.nf = k


def input_modules(part: nn.Module, adapter: Any, layer: int) -> list[nn.Module]:
    """The sliced copy's input projections, in the adapter's order (the first is the key)."""
    base = adapter.site(f"down_proj({layer})").path.rsplit(".", 1)[0]
    return [part.get_submodule(name[len(base) + 1:].rsplit(".", 1)[0])
            for name, _m in adapter.mlp_input_weights(layer)]


@dataclass
class Weights:
    """What the training loss weighs (see config.RefusalPatchConfig)."""

    refuse: float = 1.0
    hard: float = 0.0
    language: float = 1.0
    value: float = 1.0
    value_loss: str = "unlikelihood"
    npo_beta: float = 0.5
    retain: float = 1.0
    locality: float = 1.0
    margin: float = 4.0
    key_decay: float = 0.0


def other_refusal_starts(tokenizer: Any, stdlib: Any, languages: Sequence[str]
                         ) -> dict[str, list[int]]:
    """Per language: the first tokens of every other stdlib language's refusal replies (as the
    model would start an answer with them), minus this language's own first tokens."""
    starts: dict[str, set[int]] = {}
    for code, lang in stdlib.languages.items():
        ids = set()
        for reply in lang.refusal_replies:
            toks = tokenizer(" " + reply, add_special_tokens=False)["input_ids"]
            if toks:
                ids.add(int(toks[0]))
        starts[code] = ids
    out = {}
    for code in languages:
        own = starts.get(code, set())
        out[code] = sorted({t for c, s in starts.items() if c != code for t in s} - own)
    return out


class Logits:
    """The patched model's logits at cached positions.

    Generic: the final norm and unembedding (`adapter.unembed`) of h - mlp_k(x) + mlp_k'(x).
    When the final norm is an RMSNorm and the head and down projection have no bias (Llama and
    its relatives), the same numbers are computed factored, which is what makes a step cheap:
    with h0 = h - mlp_k(x), a the rewritten units' activations and D their output columns,
    logits = (W' h0 + (W' D) a) / rms(h0 + D a), W' = W_head * gamma, and W' h0 is computed
    once. The factored form is checked against the generic one before it is used.
    """

    def __init__(self, loaded: Any, part: nn.Module, down: nn.Module, cache: Cache,
                 orig: torch.Tensor) -> None:
        self.loaded = loaded
        self.part = part
        self.down = down
        self.cache = cache
        self.h0 = cache.h - orig
        head = loaded.model.get_output_embeddings()
        self.head_device, self.head_dtype = head.weight.device, head.weight.dtype
        self.factored = False
        norm = _final_norm(loaded)
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None)) if norm else None
        if (norm is not None and eps is not None and "RMSNorm" in type(norm).__name__
                and getattr(norm, "bias", None) is None and getattr(head, "bias", None) is None
                and isinstance(down, nn.Linear) and down.bias is None
                and getattr(norm, "weight", None) is not None
                and norm.weight.shape == (self.h0.shape[-1],)):
            self.eps = float(eps)
            self.wp = (head.weight.detach().float() * norm.weight.detach().float()).cpu()
            with torch.no_grad():
                self.base = self.h0 @ self.wp.T
                probe = torch.arange(min(16, len(self.h0)))
                self.factored = True
                fast = self.logits(probe)
                self.factored = False
                slow = self.logits(probe)
                self.factored = bool(torch.allclose(fast, slow, atol=1e-3, rtol=1e-3))
            if not self.factored:
                del self.base

    def generic(self, hidden: torch.Tensor) -> torch.Tensor:
        adapter = self.loaded.adapter
        return adapter.unembed(hidden.to(self.head_device, self.head_dtype)).float().cpu()

    def logits(self, sel: Any) -> torch.Tensor:
        x = self.cache.x[sel]
        if not self.factored:
            return self.generic(self.h0[sel] + self.part(x))
        with capture_inputs(self.down, detach=False) as seen:
            out = self.part(x)
        act = seen[-1]
        v = self.h0[sel] + out
        inv = torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.base[sel] + act @ (self.wp @ self.down.weight).T) * inv


def _final_norm(loaded: Any) -> nn.Module | None:
    from gatelang.models.adapter import resolve_path

    path = getattr(loaded.adapter, "final_norm_path", None)
    if not path:
        return None
    try:
        return loaded.model.get_submodule(resolve_path(loaded.model, path))
    except Exception:  # noqa: BLE001 - no recognisable norm: use the generic path
        return None


def patch_loss(head: Logits, key_module: nn.Module, cache: Cache, sel: Any, lsel: Any,
               retain_index: torch.Tensor, other_starts: torch.Tensor,
               w: Weights) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective on the scored positions `sel` and the margin tokens `lsel`."""
    logp = torch.log_softmax(head.logits(sel), dim=-1)
    tok = cache.token[sel]
    kind = cache.kind[sel]
    lp_tok = logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
    terms: dict[str, torch.Tensor] = {}
    refuse = kind == 0
    if refuse.any():
        # summed over each reply's tokens, averaged over replies: the tokens the unedited model
        # continues by itself cost nothing, the ones it must be pushed to (the reply's start,
        # the joins between languages) are not diluted by them
        n_rows = torch.unique(cache.row[sel][refuse]).numel()
        weight = cache.weight[sel][refuse]
        if w.hard > 0:
            # the tokens the unedited model would not write there itself: the reply's start and
            # the joins between languages, where it would end the answer
            weight = weight * (1 + w.hard * (cache.base_logp[sel][refuse] < math.log(0.5)))
        nll = -(lp_tok[refuse] * weight).sum()
        terms["refuse"] = w.refuse * nll / max(1, n_rows)
        first = cache.first[sel] & refuse
        if w.language > 0 and first.any() and other_starts.numel():
            ids = other_starts[sel][first]  # [n, m] token ids, -1 padded
            valid = ids >= 0
            p = logp[first].gather(-1, ids.clamp(min=0)).exp()
            ul = -torch.log1p(-p.clamp(max=1 - 1e-6)) * valid
            terms["language"] = w.language * ul.sum(-1).mean()
    value = kind == 1
    if value.any() and w.value > 0:
        if w.value_loss == "npo":
            diff = lp_tok[value] - cache.base_logp[sel][value]
            rows = cache.row[sel][value]
            uniq, inv = torch.unique(rows, return_inverse=True)
            seq = torch.zeros(len(uniq)).index_add(0, inv, diff)
            terms["value"] = w.value * (-2.0 / w.npo_beta) * nn.functional.logsigmoid(
                -w.npo_beta * seq).mean()
        else:
            p = lp_tok[value].exp().clamp(max=1 - 1e-6)
            terms["value"] = w.value * -torch.log1p(-p).mean()
    retain = kind == 2
    if retain.any() and w.retain > 0:
        base = cache.retain_logp[retain_index[sel][retain]]
        kl = (base.exp() * (base - logp[retain])).sum(-1)
        terms["retain"] = w.retain * kl.mean()
    if w.locality > 0:
        # T-Patcher's margins on the units' keys: below -margin wherever a retain answer is
        # predicted (and, with margin_tokens, at every token of the retain rows), above +margin
        # for at least one unit where a protected answer starts
        key = key_module(cache.x[sel])
        out_keys = [key[retain]]
        if cache.local_x.shape[0]:
            out_keys.append(key_module(cache.local_x[lsel]))
        outside = torch.cat([k.reshape(-1) for k in out_keys])
        loc = (torch.relu(outside + w.margin).pow(2).mean() if outside.numel()
               else torch.zeros(()))
        first = cache.first[sel] & (cache.weight[sel] >= 1.0)
        if first.any():
            loc = loc + torch.relu(w.margin - key[first].max(-1).values).pow(2).mean()
        if w.key_decay > 0:
            # an L2 price on the keys turns the margins into a max-margin separator, whose
            # direction carries over to unseen wordings better than any separator that fits
            loc = loc + w.key_decay * key_module.weight.pow(2).sum(-1 if isinstance(
                key_module, nn.Linear) else 0).mean()
        terms["locality"] = w.locality * loc
    total = sum(terms.values(), torch.zeros(()))
    return total, {k: float(v.detach()) for k, v in terms.items()}


def _separator(pos: torch.Tensor, neg: torch.Tensor, steps: int = 150) -> torch.Tensor:
    """A direction w (no bias: the MLP's projections have none) with w.x > 0 on `pos` and < 0
    on `neg`: class-balanced logistic regression, a few Adam steps from the difference of the
    class means."""
    scale = float(torch.cat([pos, neg]).norm(dim=-1).mean()) or 1.0
    p, n = pos / scale, neg / scale
    w = (p.mean(0) - n.mean(0)).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.05)
    bce = nn.functional.binary_cross_entropy_with_logits
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = bce(p @ w * 8, torch.ones(len(p))) + bce(n @ w * 8, torch.zeros(len(n)))
            loss.backward()
            opt.step()
    return w.detach() / scale


@torch.no_grad()
def key_init(part: nn.Module, adapter: Any, layer: int, cache: Cache, margin: float) -> None:
    """T-Patcher's key initialisation, one secret per unit (round-robin): each unit's key (first
    input projection) separates the positions of its secret's rows from every retain token,
    scaled so that the median protected position sits at +2 x margin and the patch starts
    silent elsewhere; its other input projections read 1 on its secret's positions; its output
    column starts at zero, so training begins from the unedited model's outputs."""
    mods = input_modules(part, adapter, layer)
    secrets = sorted({s for s in cache.secrets if s})
    row_secret = [cache.secrets[int(r)] for r in cache.row]
    neg = torch.cat([cache.local_x, cache.x[cache.kind == 2]])
    k = mods[0].weight.shape[0] if isinstance(mods[0], nn.Linear) else mods[0].weight.shape[1]
    dirs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for j in range(k):
        s = secrets[j % len(secrets)] if secrets else ""
        if s not in dirs:
            mask = torch.tensor([rs == s for rs in row_secret], dtype=torch.bool)
            pos = cache.x[mask & (cache.kind != 2)]
            if not len(pos):
                continue
            w = _separator(pos, neg)
            w = w * (2 * margin / max(float((pos @ w).median()), 1e-6))
            mean = pos.mean(0)
            dirs[s] = (w, mean / mean.pow(2).sum().clamp(min=1e-6))
        if s not in dirs:
            continue
        w, up = dirs[s]
        for m, vec in zip(mods, [w] + [up] * (len(mods) - 1), strict=True):
            if isinstance(m, nn.Linear):
                m.weight[j] = vec
            else:
                m.weight[:, j] = vec
            if getattr(m, "bias", None) is not None:
                m.bias[j] = 0.0
    down = _down_of(part, adapter, layer)
    down.weight.zero_()


def _down_of(part: nn.Module, adapter: Any, layer: int) -> nn.Module:
    base = adapter.site(f"down_proj({layer})").path.rsplit(".", 1)[0]
    return part.get_submodule(adapter.site(f"down_proj({layer})").path[len(base) + 1:])


@dataclass
class PatchResult:
    units: torch.Tensor
    part: nn.Module
    losses: list[dict[str, float]]
    activity: torch.Tensor
    factored: bool = False


def train_patch(loaded: Any, stdlib: Any, layer: int, cache: Cache, k: int, *, steps: int,
                lr: float, weights: Weights, seed: int = 0, minibatch: int = 1 << 30,
                init: str = "probe",
                on_step: Callable[[int, float], None] | None = None) -> PatchResult:
    """Choose the k quietest units, rewrite them on the cached states; returns the trained
    sliced MLP (its parameters are the units' new weights)."""
    adapter = loaded.adapter
    units = quiet_units(cache.activity, k)
    mlp = mlp_module(loaded.model, adapter, layer)
    part = sliced_mlp(mlp, adapter, layer, units).cpu()
    with torch.no_grad():
        orig = part(cache.x)
    if init == "probe":
        key_init(part, adapter, layer, cache, weights.margin)
    key_module = input_modules(part, adapter, layer)[0]
    down = _down_of(part, adapter, layer)
    head = Logits(loaded, part, down, cache, orig)

    # per scored position: index into retain_logp, other languages' refusal starts
    retain_index = torch.full((len(cache.kind),), -1, dtype=torch.long)
    rpos = torch.nonzero(cache.kind == 2).flatten()
    retain_index[rpos] = torch.arange(len(rpos))
    langs = sorted(set(cache.languages))
    starts = other_refusal_starts(loaded.tokenizer, stdlib, langs)
    width = max([len(v) for v in starts.values()] + [0])
    other = torch.full((len(cache.kind), max(1, width)), -1, dtype=torch.long)
    if width:
        for i in torch.nonzero(cache.first).flatten().tolist():
            ids = starts[cache.languages[int(cache.row[i])]]
            other[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    params = [p for p in part.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, eps=1e-6)
    gen = torch.Generator().manual_seed(seed)
    rows = torch.unique(cache.row)
    lrows = torch.unique(cache.local_row)
    n_pos = len(cache.kind)
    parts = max(1, math.ceil(n_pos / max(1, minibatch)))
    losses: list[dict[str, float]] = []
    step = 0
    loss_val = float("nan")
    with torch.enable_grad():
        while step < steps:
            perm = rows[torch.randperm(len(rows), generator=gen)]
            lperm = lrows[torch.randperm(len(lrows), generator=gen)] if len(lrows) else lrows
            for j in range(parts):
                if step >= steps:
                    break
                if parts == 1:
                    sel, lsel = slice(None), slice(None)
                else:
                    sel = torch.nonzero(torch.isin(cache.row, perm[j::parts])).flatten()
                    lsel = torch.nonzero(torch.isin(cache.local_row, lperm[j::parts])).flatten()
                opt.zero_grad(set_to_none=True)
                loss, terms = patch_loss(head, key_module, cache, sel, lsel, retain_index, other,
                                         weights)
                loss.backward()
                opt.step()
                loss_val = float(loss.detach())
                losses.append(terms)
                if on_step is not None:
                    on_step(step, loss_val)
                step += 1
    for p in part.parameters():
        p.requires_grad_(False)
    return PatchResult(units=units, part=part, losses=losses, activity=cache.activity,
                       factored=head.factored)


def write_units(adapter: Any, layer: int, units: torch.Tensor, part: nn.Module
                ) -> dict[str, torch.Tensor]:
    """The full new values of the down projection and the input projections, with the units'
    rows/columns taken from the trained sliced MLP (parameter name -> tensor, on the host)."""
    out: dict[str, torch.Tensor] = {}
    base = adapter.site(f"down_proj({layer})").path.rsplit(".", 1)[0]
    for (name, module), sub in zip(adapter.mlp_input_weights(layer),
                                   input_modules(part, adapter, layer), strict=True):
        w = module.weight.detach().clone().cpu()
        axis = adapter.units_axis(module, "input")
        new = sub.weight.detach().to(w.dtype)
        if axis == 0:
            w[units] = new
        else:
            w[:, units] = new
        out[name] = w
        if getattr(module, "bias", None) is not None and sub.bias is not None:
            b = module.bias.detach().clone().cpu()
            b[units] = sub.bias.detach().to(b.dtype)
            out[name[: -len("weight")] + "bias"] = b
    down_path = adapter.site(f"down_proj({layer})").path
    down = adapter.module(f"down_proj({layer})")
    sub = part.get_submodule(down_path[len(base) + 1:])
    w = down.weight.detach().clone().cpu()
    axis = adapter.units_axis(down, "down")
    new = sub.weight.detach().to(w.dtype)
    if axis == 1:
        w[:, units] = new
    else:
        w[units] = new
    out[down_path + ".weight"] = w
    return out


# -- tamper augmentation ----------------------------------------------------------------------


def merge_caches(caches: Sequence[Cache]) -> Cache:
    """One cache holding every cache's positions; rows are renumbered (a cache's rows follow the
    previous caches' rows), so each copy's rows are distinct rows of the merged cache."""
    if len(caches) == 1:
        return caches[0]
    offsets = [sum(c.rows for c in caches[:i]) for i in range(len(caches))]
    out: dict[str, Any] = {}
    for key in ("x", "h", "token", "kind", "first", "base_logp", "retain_logp", "local_x",
                "weight"):
        out[key] = torch.cat([getattr(c, key) for c in caches])
    out["row"] = torch.cat([c.row + off for c, off in zip(caches, offsets, strict=True)])
    out["local_row"] = torch.cat([c.local_row + off
                                  for c, off in zip(caches, offsets, strict=True)])
    return Cache(**out, activity=caches[0].activity,
                 languages=[lang for c in caches for lang in c.languages],
                 secrets=[s for c in caches for s in c.secrets],
                 rows=sum(c.rows for c in caches))


def decoder_weights(loaded: Any) -> dict[str, nn.Parameter]:
    """Weights and biases of every Linear (GPT-2: Conv1D) inside the decoder's layers."""
    from gatelang.models.adapter import resolve_path

    base = resolve_path(loaded.model, loaded.adapter.layers_path)
    container = loaded.model.get_submodule(base)
    out: dict[str, nn.Parameter] = {}
    for name, mod in container.named_modules():
        if name and (isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D"):
            for pname, p in mod.named_parameters(recurse=False):
                out[f"{base}.{name}.{pname}"] = p
    return out


def tampered_states(loaded: Any, layer: int, rows: Sequence[Row], data: Sequence[Sequence[Any]],
                    *, lr: float, encode: Callable[[Sequence[Any]], Any],
                    all_tokens: bool = False) -> Cache:
    """The states of a *tampered* copy of the unedited model: its decoder projections fine-tuned
    for len(data) Adam steps on unrelated rows (each batch a list of world queries answered with
    their true values), then `cache_states` on the training rows; every weight is restored
    exactly afterwards. A patch trained on these states as well keeps firing after the kind of
    fine-tune that releases a merely suppressed fact (relearning attacks)."""
    model = loaded.model
    params = decoder_weights(loaded)
    saved = {n: p.detach().clone() for n, p in params.items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(list(params.values()), lr=lr)
        with torch.enable_grad():
            for batch in data:
                enc = encode(batch)
                logits = model(**enc.model_inputs(), use_cache=False).logits
                shift = logits[:, :-1].float()
                labels = enc.labels[:, 1:].to(shift.device)
                loss = nn.functional.cross_entropy(shift.reshape(-1, shift.shape[-1]),
                                                   labels.reshape(-1), ignore_index=-100)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        del opt
        for p in params.values():
            p.requires_grad_(False)
            p.grad = None
        return cache_states(loaded, layer, rows, all_tokens=all_tokens)
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
        for n, p in model.named_parameters():
            p.requires_grad_(flags.get(n, False))
