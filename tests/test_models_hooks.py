"""gatelang.models.hooks: captures see the right tensor, replacements change the forward, and
every hook is gone after the block, whether it ended normally or with an exception."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gatelang.models.hooks import (
    capture,
    capture_inputs,
    capture_outputs,
    intervene,
    replace_inputs,
    replace_outputs,
)


class Pair(nn.Module):
    """Returns a tuple, as decoder layers do in transformers 4.x."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, str]:
        return self.lin(x) * scale, "rest"


def no_hooks(module: nn.Module) -> bool:
    return not module._forward_hooks and not module._forward_pre_hooks


@pytest.fixture
def lin() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def test_capture_inputs_and_outputs_get_the_tensors_of_each_call(lin):
    x1, x2 = torch.randn(2, 4), torch.randn(5, 4)
    with capture_inputs(lin) as ins, capture_outputs(lin) as outs:
        y1, y2 = lin(x1), lin(x2)
    assert len(ins) == 2 and torch.equal(ins[0], x1) and torch.equal(ins[1], x2)
    assert len(outs) == 2 and torch.equal(outs[0], y1) and torch.equal(outs[1], y2)
    assert not outs[0].requires_grad  # detached by default
    assert no_hooks(lin)


def test_capture_reduce_runs_in_the_hook_and_detach_can_be_kept(lin):
    x = torch.randn(3, 4)
    with capture_outputs(lin, reduce=lambda t: t.sum(0)) as sums:
        y = lin(x)
    assert len(sums) == 1 and torch.equal(sums[0], y.detach().sum(0))
    with capture_outputs(lin, detach=False) as live:
        lin(x).sum().backward()
    assert live[0].requires_grad and live[0].grad_fn is not None


def test_capture_outputs_takes_the_first_item_of_a_tuple():
    torch.manual_seed(0)
    mod = Pair()
    x = torch.randn(2, 4)
    with capture_outputs(mod) as outs:
        y, _ = mod(x)
    assert torch.equal(outs[0], y)


def test_replace_inputs_and_outputs_change_the_forward(lin):
    x = torch.randn(2, 4)
    base = lin(x)
    with replace_inputs(lin, lambda t: t * 0):
        assert torch.equal(lin(x), lin.bias.expand_as(base))
    with replace_outputs(lin, lambda t: t + 1):
        assert torch.equal(lin(x), base + 1)
    assert torch.equal(lin(x), base)
    assert no_hooks(lin)


def test_replace_keeps_other_arguments_and_the_rest_of_a_tuple():
    torch.manual_seed(0)
    mod = Pair()
    x = torch.randn(2, 4)
    base, _ = mod(x, 2.0)
    with replace_inputs(mod, lambda t: t * 0):
        y, rest = mod(x, 2.0)  # the second positional argument passes through
    assert torch.equal(y, mod.lin.bias.expand_as(base) * 2.0) and rest == "rest"
    with replace_outputs(mod, lambda t: -t):
        y, rest = mod(x, 2.0)
    assert torch.equal(y, -base) and rest == "rest"
    assert no_hooks(mod)


def test_replace_outputs_refuses_an_output_without_a_tensor_first():
    class Words(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"x": x}

    mod = Words()
    with pytest.raises(TypeError, match="cannot replace"), replace_outputs(mod, lambda t: t):
        mod(torch.zeros(1))
    assert no_hooks(mod)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: capture_inputs(m),
        lambda m: capture_outputs(m),
        lambda m: replace_inputs(m, lambda t: t),
        lambda m: replace_outputs(m, lambda t: t),
    ],
    ids=["capture_inputs", "capture_outputs", "replace_inputs", "replace_outputs"],
)
def test_hooks_are_removed_after_an_exception(lin, make):
    with pytest.raises(RuntimeError, match="boom"), make(lin):
        lin(torch.randn(1, 4))
        assert not no_hooks(lin)  # installed inside the block
        raise RuntimeError("boom")
    assert no_hooks(lin)


def test_hooks_are_removed_when_the_hook_itself_fails(lin):
    def bad(t: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad fn")

    with pytest.raises(ValueError, match="bad fn"), replace_outputs(lin, bad):
        lin(torch.randn(1, 4))
    assert no_hooks(lin)


class _Tok:
    pad_token_id = 0
    eos_token = "</s>"
    padding_side = "left"


def test_site_capture_and_intervene_on_a_tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    from gatelang.models.families.llama import LlamaAdapter

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
    )
    model = LlamaForCausalLM(cfg).eval()
    adapter = LlamaAdapter(model, _Tok())
    ids = torch.randint(1, 40, (2, 6))
    down = model.model.layers[0].mlp.down_proj
    layer = model.model.layers[0]
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with capture_inputs(down) as units, capture_outputs(layer) as hidden:
            model(input_ids=ids)
        with capture(adapter, ["mlp_act(0)", "decoder_layer(0)"]) as acts:
            model(input_ids=ids)
        with intervene(adapter, "mlp_act(0)", torch.zeros_like):
            ablated = model(input_ids=ids).logits
    # a site is its module's input or output, as the adapter says
    assert torch.equal(acts["mlp_act(0)"][0], units[0]) and units[0].shape == (2, 6, 24)
    assert torch.equal(acts["decoder_layer(0)"][0], hidden[0]) and hidden[0].shape == (2, 6, 16)
    assert not torch.allclose(ablated, base)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, base)
    assert all(no_hooks(m) for m in model.modules())
