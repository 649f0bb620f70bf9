//! The mapping vocabulary: a plan says, for every tensor of the output, which source variable
//! it comes from and how it is reshaped; and for every source variable that is not used, why.
//! The plan is data: it is printed, tested and diffed, and executing it is the converter's job.

use std::collections::BTreeMap;
use std::fmt;

use crate::roles::Role;

/// A source variable as the mapping tables see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceVar {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A shape change applied to a tensor's elements, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// Swap the two axes of a matrix (TF kernels are [in, out], torch Linear weights are [out, in]).
    Transpose,
    /// Drop every axis of length 1 (GPT-2's Conv1D kernels are [1, in, out]).
    Squeeze,
    /// Same elements, new shape (TF2 attention kernels [H, N, Dh] → [H, H]).
    Reshape(Vec<usize>),
    /// Take index `index` of axis `axis`, dropping that axis (stacked per-layer tensors).
    Select { axis: usize, index: usize },
}

impl Transform {
    /// The shape after this transform, or why it does not apply.
    pub fn apply_shape(&self, shape: &[usize]) -> Result<Vec<usize>, String> {
        match self {
            Transform::Transpose => match shape {
                [a, b] => Ok(vec![*b, *a]),
                _ => Err(format!("transpose needs a matrix, got shape {shape:?}")),
            },
            Transform::Squeeze => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
            Transform::Reshape(to) => {
                if to.iter().product::<usize>() == shape.iter().product::<usize>() {
                    Ok(to.clone())
                } else {
                    Err(format!("cannot reshape {shape:?} to {to:?}"))
                }
            }
            Transform::Select { axis, index } => {
                if *axis < shape.len() && *index < shape[*axis] {
                    let mut s = shape.to_vec();
                    s.remove(*axis);
                    Ok(s)
                } else {
                    Err(format!("cannot select index {index} of axis {axis} from shape {shape:?}"))
                }
            }
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Transpose => write!(f, "transpose"),
            Transform::Squeeze => write!(f, "squeeze"),
            Transform::Reshape(s) => write!(f, "reshape{s:?}"),
            Transform::Select { axis, index } => write!(f, "select(axis {axis}, {index})"),
        }
    }
}

/// One output tensor: where it comes from and how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mapping {
    pub target: String,
    pub source: String,
    pub transforms: Vec<Transform>,
    /// The shape the output must have, derived from the config (checked against the source).
    pub shape: Vec<usize>,
}

/// What a synthesized tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// The identity matrix (square shape).
    Identity,
    Zeros,
    /// A sinusoid encoding's inverse frequencies `1 / 10000^(2i / (2·len))` for i < len, as
    /// transformers computes its `inv_freq` buffers in float32.
    InverseFrequencies,
}

impl Fill {
    /// The float32 values of a tensor of `shape` filled this way.
    pub fn values(self, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match (self, shape) {
            (Fill::Identity, [rows, cols]) => (0..n).map(|i| if i / cols == i % cols && i / cols < *rows { 1.0 } else { 0.0 }).collect(),
            (Fill::InverseFrequencies, _) => (0..n).map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / (2 * n) as f32)).collect(),
            _ => vec![0.0; n],
        }
    }
}

impl fmt::Display for Fill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fill::Identity => "identity",
            Fill::Zeros => "zeros",
            Fill::InverseFrequencies => "inverse frequencies",
        })
    }
}

/// An output tensor with no source variable: the target class has a module the original
/// computes without (ALBERT's embedding projection when E == H is the identity).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Synthesized {
    pub target: String,
    pub shape: Vec<usize>,
    pub fill: Fill,
    /// Why the tensor is made rather than converted.
    pub reason: String,
}

/// The complete, checked plan of a conversion.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// Output tensors in state-dict order.
    pub mappings: Vec<Mapping>,
    /// Output tensors made without a source, written after the mappings.
    pub synthesized: Vec<Synthesized>,
    /// Source variables deliberately not converted, with their role.
    pub skipped: Vec<(String, Role)>,
    /// Model weights the target class has no place for, with the reason.
    pub dropped: Vec<(String, String)>,
}

impl Plan {
    /// Every output tensor with its shape: the mappings, then the synthesized ones.
    pub fn targets(&self) -> impl Iterator<Item = (&str, &[usize])> {
        let mapped = self.mappings.iter().map(|m| (m.target.as_str(), m.shape.as_slice()));
        mapped.chain(self.synthesized.iter().map(|s| (s.target.as_str(), s.shape.as_slice())))
    }
}

/// Why a plan could not be made. Every list names all offenders, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{} variable(s) are neither mapped nor known optimizer/bookkeeping slots: {}", .0.len(), .0.join(", "))]
    Unmapped(Vec<String>),
    #[error("{} required variable(s) are missing from the checkpoint: {}", .0.len(), .0.join(", "))]
    Missing(Vec<String>),
    #[error("shapes disagree with the config:\n  {}", .0.join("\n  "))]
    Shape(Vec<String>),
    #[error("{0}")]
    Other(String),
}

/// Builds a plan from an architecture's table of expected (target, source, transforms, shape)
/// rows against the variables actually present. `optional` rows may be absent.
pub struct PlanBuilder<'a> {
    vars: BTreeMap<&'a str, &'a SourceVar>,
    mappings: Vec<Mapping>,
    synthesized: Vec<Synthesized>,
    dropped: Vec<(String, String)>,
    missing: Vec<String>,
    shape_errors: Vec<String>,
}

impl<'a> PlanBuilder<'a> {
    pub fn new(vars: &'a [SourceVar]) -> Self {
        PlanBuilder {
            vars: vars.iter().map(|v| (v.name.as_str(), v)).collect(),
            mappings: Vec::new(),
            synthesized: Vec::new(),
            dropped: Vec::new(),
            missing: Vec::new(),
            shape_errors: Vec::new(),
        }
    }

    pub fn has(&self, source: &str) -> bool {
        self.vars.contains_key(source)
    }

    pub fn source_shape(&self, source: &str) -> Option<&[usize]> {
        self.vars.get(source).map(|v| v.shape.as_slice())
    }

    /// Maps `source` to `target`, expecting `shape` after `transforms`.
    pub fn map(&mut self, target: impl Into<String>, source: impl Into<String>, transforms: Vec<Transform>, shape: Vec<usize>) {
        let (target, source) = (target.into(), source.into());
        let Some(var) = self.vars.get(source.as_str()) else {
            self.missing.push(source);
            return;
        };
        let mut got = var.shape.clone();
        for t in &transforms {
            match t.apply_shape(&got) {
                Ok(s) => got = s,
                Err(e) => {
                    self.shape_errors.push(format!("{source}: {e}"));
                    return;
                }
            }
        }
        if got != shape {
            self.shape_errors.push(format!(
                "{source} has shape {:?}; {target} needs {shape:?} after [{}] (source would give {got:?})",
                var.shape,
                transforms.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
            ));
            return;
        }
        self.mappings.push(Mapping { target, source, transforms, shape });
    }

    /// Adds an output tensor that no source variable provides.
    pub fn synthesize(&mut self, target: impl Into<String>, shape: Vec<usize>, fill: Fill, reason: impl Into<String>) {
        self.synthesized.push(Synthesized { target: target.into(), shape, fill, reason: reason.into() });
    }

    /// Records a weight the target class deliberately has no place for.
    pub fn drop_unused(&mut self, source: &str, reason: &str) {
        self.dropped.push((source.to_string(), reason.to_string()));
    }

    /// Finishes: every source variable must be mapped or have a non-weight role.
    pub fn finish(self, role: impl Fn(&str) -> Role) -> Result<Plan, PlanError> {
        if !self.missing.is_empty() {
            return Err(PlanError::Missing(self.missing));
        }
        if !self.shape_errors.is_empty() {
            return Err(PlanError::Shape(self.shape_errors));
        }
        let used: std::collections::BTreeSet<&str> =
            self.mappings.iter().map(|m| m.source.as_str()).chain(self.dropped.iter().map(|d| d.0.as_str())).collect();
        let mut unmapped = Vec::new();
        let mut skipped = Vec::new();
        for name in self.vars.keys() {
            if used.contains(name) {
                continue;
            }
            match role(name) {
                Role::Weight => unmapped.push(name.to_string()),
                r => skipped.push((name.to_string(), r)),
            }
        }
        if !unmapped.is_empty() {
            return Err(PlanError::Unmapped(unmapped));
        }
        Ok(Plan { mappings: self.mappings, synthesized: self.synthesized, skipped, dropped: self.dropped })
    }
}
