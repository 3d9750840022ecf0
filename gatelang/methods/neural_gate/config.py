"""Neural Gate's parameters and profiles (the single source of both).

The `method` group is the paper's: the feature-vector learning that builds the gate and the
gated fine-tune. The `tuning` group is how the edit is batched, which data it sees and how much
of the model it may touch; a policy should not need them, so they come in named profiles.
"""

from __future__ import annotations

from typing import Literal

from gatelang.methods.base import Layer, MethodConfig, ModelShape, Work, param


class RefusalEditConfig(MethodConfig):
    """The fine-tune towards refusal shared by neural_gate, random_gate and finetune."""

    renamed = {"kl_factor": "retain_weight"}

    layer: Layer = param("auto", "decoder layer to edit, or auto")
    steps: int = param(10, "fine-tune steps per (sensitive, retain) pair batch", ge=1, le=10000)
    lr: float = param(1e-5, "Adam learning rate of the fine-tune", ge=0.0, le=1.0)
    retain_weight: float = param(1.25, "weight of the retain NLL on benign pairs "
                                 "(the paper's factor on its retain term)", ge=0.0, le=100.0)
    epochs: int = param(1, "passes over the edit pairs", ge=1, le=100)
    reference_width: int = param(
        11008, "MLP width lr was tuned for; lr is scaled by reference_width / the model's MLP "
        "width (0: no scaling)", ge=0, le=1_000_000, group="tuning")
    pair_batch: int = param(1, "(sensitive, retain) pairs per fine-tune step; 1 is the paper",
                            ge=1, le=1024, group="tuning")
    reset_optimizer: bool = param(True, "re-create Adam for every pair batch, as the paper does",
                                  group="tuning")
    retain_other_subjects: int = param(
        0, "retain rows per pair asking the same about subjects outside the rule", ge=0, le=16,
        group="tuning")
    retain_same_subject: int = param(
        1, "benign rows per pair about the subject's attributes outside the rule (1 is the "
        "paper's pair)", ge=1, le=8, group="tuning")
    unit_budget: float = param(1.0, "share of the model's MLP units the fine-tune may change",
                               percent=True, group="tuning")
    unit_select: Literal["salient", "quiet"] = param(
        "salient", "which units unit_budget keeps: most salient for the edit loss, or least "
        "active on the edit prompts (to be rewritten with unit_inputs)", group="tuning")
    unit_inputs: bool = param(False, "with unit_budget, also retrain the selected units' input "
                              "weights (the units are rewritten in full)", group="tuning")


class NeuralGateConfig(RefusalEditConfig):
    layer: Layer = param("auto", "decoder layer to edit, or auto (peak share of strongly-active "
                         "dims)")
    mask_steps: int = param(25, "Adam steps for each feature vector", ge=1, le=1000)
    mask_lr: float = param(0.5, "learning rate of the feature vectors", ge=0.0, le=10.0)
    mask_l1: float = param(0.001, "L1 weight on the feature vectors", ge=0.0, le=1.0)
    privacy_value: float = param(0.0, "a dim is selected in a sample when tanh(m) < privacy_value",
                                 ge=-1.0, le=1.0)
    gate_threshold: float = param(0.3, "share of samples that must select a dim for it to enter "
                                  "the gate", percent=True)
    sparsity: float = param(1.0, "upper bound on the gate's share of the layer's dims",
                            percent=True)
    mask_samples: int = param(24, "edit queries used to learn feature vectors, spread over the "
                              "cells (0: all)", ge=0, le=100000, group="tuning")
    layer_probe_samples: int = param(4, "samples per candidate layer when layer is auto",
                                     ge=1, le=1000, group="tuning")
    gate_rows_only: bool = param(False, "confine the update to the gate's output rows",
                                 group="tuning")


# The reference example's configuration for tiny-llava's 4 layers, chosen on the edit split
# (bench/acceptance/README.md): the last decoder layer, the update confined to 1% of the model's
# MLP units chosen among the least active and rewritten in full, two retain rows about other
# people per pair.
PROFILES = {
    "paper": {},
    "tiny_llava": {
        "layer": 3, "lr": 0.02, "reference_width": 0, "steps": 1, "epochs": 8,
        "pair_batch": 16, "reset_optimizer": False, "retain_weight": 2.0,
        "retain_other_subjects": 2, "mask_samples": 4, "unit_budget": 0.01,
        "unit_select": "quiet", "unit_inputs": True,
    },
}


def localize_cost(cfg: NeuralGateConfig, n_edit: int, edit_tokens: int, layers: int) -> Work:
    search = layers * cfg.layer_probe_samples if cfg.layer == "auto" else 0
    samples = min(n_edit, cfg.mask_samples) if cfg.mask_samples else n_edit
    steps = cfg.mask_steps * (samples + search)
    return Work(forward_passes=steps, backward_passes=steps, tokens=edit_tokens)


def edit_cost(cfg: RefusalEditConfig, n_edit: int, edit_tokens: int, layers: int) -> Work:
    steps = cfg.steps * cfg.epochs * n_edit * 2
    return Work(forward_passes=steps, backward_passes=steps,
                tokens=edit_tokens * 2 * cfg.steps * cfg.epochs)


def _where(cfg: RefusalEditConfig) -> str:
    return ("one auto-selected decoder layer" if cfg.layer == "auto"
            else f"decoder layer {cfg.layer}")


def touches(cfg: RefusalEditConfig, shape: ModelShape) -> str:
    """The down projection of one layer, through the gate when the method has one."""
    units = shape.intermediate_size
    if cfg.unit_budget < 1.0:
        k = max(1, int(cfg.unit_budget * shape.num_layers * units))
        full = " (input and output weights)" if cfg.unit_inputs else ""
        return f"at most {k} MLP units{full} of {where_units(shape)} in {_where(cfg)}"
    sparsity = getattr(cfg, "sparsity", None)
    if sparsity is None:
        return f"MLP down-projection of {_where(cfg)}, all {units} units"
    gate = max(1, int(sparsity * shape.hidden_size))
    return (f"MLP down-projection of {_where(cfg)}, through a gate of at most {gate} of "
            f"{shape.hidden_size} residual dimensions")


def where_units(shape: ModelShape) -> str:
    return f"the model's {shape.num_layers * shape.intermediate_size}"
