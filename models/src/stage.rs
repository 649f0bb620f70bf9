//! A forward pass cut into stages that candle and TensorFlow can each run on their own, so that
//! a verifier can hold one stage's weights at a time and compare every stage both chained (each
//! side fed its own previous outputs) and isolated (both sides fed the reference's inputs), which
//! blames a divergence on the stage that introduced it rather than on everything after it.

use candle_core::{DType, Device, Tensor};

use crate::probe::{Outputs, Probes};

/// A named tensor flowing between stages: a probe input (ids, masks) or a stage output.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int { shape: Vec<usize>, data: Vec<i64> },
    Float { shape: Vec<usize>, data: Vec<f32> },
}

impl Value {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Int { shape, .. } | Value::Float { shape, .. } => shape,
        }
    }

    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Value::Int { shape, data } => Tensor::from_slice(data, shape.as_slice(), device),
            Value::Float { shape, data } => Tensor::from_slice(data, shape.as_slice(), device),
        }
    }

    /// Integer tensors stay integers (i64); every float dtype becomes f32.
    pub fn from_tensor(xs: &Tensor) -> candle_core::Result<Value> {
        let shape = xs.dims().to_vec();
        Ok(match xs.dtype() {
            DType::U8 | DType::U32 | DType::I64 => {
                Value::Int { shape, data: xs.to_dtype(DType::I64)?.flatten_all()?.to_vec1()? }
            }
            _ => Value::Float { shape, data: xs.to_dtype(DType::F32)?.flatten_all()?.to_vec1()? },
        })
    }
}

/// Named values in order; lookup by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values(pub Vec<(String, Value)>);

impl Values {
    pub fn push(&mut self, name: impl Into<String>, value: Value) {
        self.0.push((name.into(), value));
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The values called `names`, in that order; Err names every one that is absent.
    pub fn pick(&self, names: &[String]) -> Result<Values, String> {
        let missing: Vec<&str> = names.iter().filter(|n| self.get(n).is_none()).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(format!("missing stage input(s) {} (have: {})", missing.join(", "), self.names().join(", ")));
        }
        Ok(Values(names.iter().map(|n| (n.clone(), self.get(n).unwrap().clone())).collect()))
    }

    /// The float values as [`Outputs`], the comparison's vocabulary.
    pub fn to_outputs(&self) -> Outputs {
        let mut out = Outputs::default();
        for (name, value) in &self.0 {
            if let Value::Float { shape, data } = value {
                out.push(name.clone(), shape.clone(), data.clone());
            }
        }
        out
    }

    /// The token-level probe inputs: "input_ids", "token_type_ids", "attention_mask", [B, S].
    pub fn from_probes(probes: &Probes) -> Values {
        let int = |data: &[i64]| Value::Int { shape: vec![probes.batch, probes.seq_len], data: data.to_vec() };
        Values(vec![
            ("input_ids".into(), int(&probes.input_ids)),
            ("token_type_ids".into(), int(&probes.token_type_ids)),
            ("attention_mask".into(), int(&probes.attention_mask)),
        ])
    }
}

/// One stage of a forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// "embeddings", "layer.3", "pooler", or a head: "mlm", "nsp", "classifier", "qa".
    pub name: String,
    /// The original checkpoint variables the reference restores for this stage, and no others.
    pub original_vars: Vec<String>,
    /// The HF state-dict tensors the candle stage loads, and no others (a tied one included:
    /// the MLM decoder reads the word embeddings).
    pub hf_tensors: Vec<String>,
    /// Probe inputs or earlier stages' outputs, in the order the stage takes them.
    pub inputs: Vec<String>,
    /// What the stage produces, named as the whole-model outputs are.
    pub outputs: Vec<String>,
}

/// Runs `stages` in order, each on its inputs picked by name from `inputs` and the outputs of
/// the stages before it (so each side can be fed its own previous outputs). Returns every
/// stage output, in order.
pub fn chain(
    stages: &[Stage],
    inputs: &Values,
    mut run: impl FnMut(&Stage, &Values) -> anyhow::Result<Values>,
) -> anyhow::Result<Values> {
    let mut known = inputs.clone();
    let mut outputs = Values::default();
    for stage in stages {
        let ins = known.pick(&stage.inputs).map_err(|e| anyhow::anyhow!("stage {}: {e}", stage.name))?;
        let outs = run(stage, &ins)?;
        let names: Vec<&str> = outs.names();
        if names != stage.outputs {
            anyhow::bail!("stage {} produced {names:?}, but declares {:?}", stage.name, stage.outputs);
        }
        known.0.extend(outs.0.iter().cloned());
        outputs.0.extend(outs.0);
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f32) -> Value {
        Value::Float { shape: vec![1], data: vec![x] }
    }

    fn stage(name: &str, inputs: &[&str], outputs: &[&str]) -> Stage {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Stage { name: name.into(), original_vars: vec![], hf_tensors: vec![], inputs: strings(inputs), outputs: strings(outputs) }
    }

    /// Each stage gets exactly its inputs, in its order, from the probes and earlier outputs.
    #[test]
    fn chain_feeds_each_stage_its_named_inputs() {
        let stages = [stage("double", &["x"], &["2x"]), stage("sum", &["2x", "x"], &["3x"])];
        let mut seen = Vec::new();
        let out = chain(&stages, &Values(vec![("x".into(), float(1.5))]), |s, ins| {
            seen.push((s.name.clone(), ins.names().join(",")));
            let get = |n: &str| match ins.get(n) {
                Some(Value::Float { data, .. }) => data[0],
                _ => panic!("no {n}"),
            };
            let y = match s.name.as_str() {
                "double" => 2.0 * get("x"),
                _ => get("2x") + get("x"),
            };
            Ok(Values(vec![(s.outputs[0].clone(), float(y))]))
        })
        .unwrap();
        assert_eq!(seen, [("double".to_string(), "x".to_string()), ("sum".to_string(), "2x,x".to_string())]);
        assert_eq!(out, Values(vec![("2x".into(), float(3.0)), ("3x".into(), float(4.5))]));
        assert_eq!(out.to_outputs().get("3x").map(|o| o.values.clone()), Some(vec![4.5]));
    }

    #[test]
    fn chain_names_a_missing_input_and_a_misnamed_output() {
        let e = chain(&[stage("s", &["x", "y"], &["z"])], &Values::default(), |_, _| unreachable!()).unwrap_err();
        assert_eq!(e.to_string(), "stage s: missing stage input(s) x, y (have: )");
        let e = chain(&[stage("s", &[], &["z"])], &Values::default(), |_, _| Ok(Values(vec![("w".into(), float(0.0))]))).unwrap_err();
        assert_eq!(e.to_string(), "stage s produced [\"w\"], but declares [\"z\"]");
    }
}
