"""Steering, ablation and attribution services at an SAE's hook point (SPEC §4). No web imports here."""

from app.steering.ablate import ablation_effect, clean_and_ablated_logits
from app.steering.attribution import (
    BadTarget,
    ablation_deltas,
    attribute,
    attribute_ids,
    measure_ablations,
    ranked_nodes,
)
from app.steering.interventions import (
    MODES,
    Intervention,
    apply_interventions,
    check_interventions,
    steering_hook,
    steering_hooks,
    suggest_value,
)
from app.steering.steer import SteerResult, steer

__all__ = [
    "BadTarget",
    "MODES",
    "Intervention",
    "SteerResult",
    "ablation_deltas",
    "ablation_effect",
    "apply_interventions",
    "attribute",
    "attribute_ids",
    "check_interventions",
    "clean_and_ablated_logits",
    "measure_ablations",
    "ranked_nodes",
    "steer",
    "steering_hook",
    "steering_hooks",
    "suggest_value",
]
