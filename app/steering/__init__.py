"""Steering, ablation and encoding services at an SAE's hook point (SPEC §4). No web imports here."""

from app.steering.ablate import ablation_effect, clean_and_ablated_logits
from app.steering.attribution import (
    BadTarget,
    ablation_deltas,
    attribute,
    attribute_ids,
    measure_ablations,
    ranked_nodes,
)
from app.steering.chat import chat_prompt, completion_note, has_chat_template
from app.steering.encode import InputTooLong, encode_many, encode_text, prompt_ids
from app.steering.interventions import (
    MODES,
    Intervention,
    UnknownLatent,
    apply_interventions,
    check_interventions,
    hook_of,
    steering_hook,
    steering_hooks,
    suggest_value,
)
from app.steering.latent_info import latent_weights_summary
from app.steering.steer import SteerResult, steer

__all__ = [
    "BadTarget",
    "MODES",
    "InputTooLong",
    "Intervention",
    "SteerResult",
    "UnknownLatent",
    "ablation_deltas",
    "ablation_effect",
    "apply_interventions",
    "attribute",
    "attribute_ids",
    "chat_prompt",
    "check_interventions",
    "clean_and_ablated_logits",
    "completion_note",
    "encode_many",
    "encode_text",
    "has_chat_template",
    "hook_of",
    "latent_weights_summary",
    "measure_ablations",
    "prompt_ids",
    "ranked_nodes",
    "steer",
    "steering_hook",
    "steering_hooks",
    "suggest_value",
]
