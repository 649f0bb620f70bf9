//! What a checkpoint variable is for, judged from its name alone: a model weight, an optimizer
//! slot, or trainer bookkeeping. The skip lists of every original trainer are unioned here
//! (architectures.md §0.7) so that the mapping engine can refuse anything else it cannot map.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Weight,
    OptimizerSlot,
    Bookkeeping,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Weight => "weight",
            Role::OptimizerSlot => "optimizer",
            Role::Bookkeeping => "bookkeeping",
        })
    }
}

/// Path segments that only optimizers create.
const OPTIMIZER_SEGMENTS: &[&str] = &[
    "adam_m", "adam_v", "Adam", "Adam_1", "AdamWeightDecayOptimizer", "AdamWeightDecayOptimizer_1",
    "adafactor_v", "adafactor_vr", "adafactor_vc", "Momentum", "RMSProp", "RMSProp_1", "LAMB", "LAMB_1",
    ".OPTIMIZER_SLOT",
];

/// Whole names (or first segments) that trainers keep for themselves.
const BOOKKEEPING: &[&str] = &["global_step", "_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter", "beta1_power", "beta2_power"];

pub fn role(name: &str) -> Role {
    let segments: Vec<&str> = name.split('/').collect();
    if segments.iter().any(|s| OPTIMIZER_SEGMENTS.contains(s)) {
        return Role::OptimizerSlot;
    }
    let last = segments.last().copied().unwrap_or("");
    // Mesh-TF Adafactor stores slots as siblings: `<var>_slot_vr`, `_slot_vc`, `_slot_v`, `_slot_m`.
    if last.contains("_slot_") {
        return Role::OptimizerSlot;
    }
    if segments.first().is_some_and(|s| *s == "optimizer") {
        return Role::OptimizerSlot;
    }
    if BOOKKEEPING.iter().any(|b| segments.first() == Some(b) || last == *b) {
        return Role::Bookkeeping;
    }
    Role::Weight
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_trainers_names() {
        for (name, expected) in [
            ("bert/encoder/layer_0/attention/self/query/kernel", Role::Weight),
            ("bert/encoder/layer_0/attention/self/query/kernel/adam_m", Role::OptimizerSlot),
            ("cls/predictions/output_bias/adam_v", Role::OptimizerSlot),
            ("model/transformer/r_w_bias/Adam_1", Role::OptimizerSlot),
            ("encoder/block_000/layer_000/SelfAttention/q_slot_vc", Role::OptimizerSlot),
            ("newslm/layer0/w/adafactor_vr", Role::OptimizerSlot),
            ("model/layer_with_weights-0/embeddings/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE", Role::OptimizerSlot),
            ("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE", Role::OptimizerSlot),
            ("global_step", Role::Bookkeeping),
            ("_CHECKPOINTABLE_OBJECT_GRAPH", Role::Bookkeeping),
            ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", Role::Bookkeeping),
            ("beta1_power", Role::Bookkeeping),
            ("model/layer_with_weights-0/embeddings/.ATTRIBUTES/VARIABLE_VALUE", Role::Weight),
            ("output_weights", Role::Weight),
        ] {
            assert_eq!(role(name), expected, "{name}");
        }
    }
}
