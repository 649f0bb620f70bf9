//! A forward pass cut into stages that candle and TensorFlow can each run on their own, so that
//! a verifier can hold one stage's weights at a time and compare every stage both chained (each
//! side fed its own previous outputs) and isolated (both sides fed the reference's inputs), which
//! blames a divergence on the stage that introduced it rather than on everything after it.

use candle_core::{DType, Device, Tensor};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::probe::Outputs;

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
}

// JSON form, readable and self-describing so other tools (the interop harness) can build
// tensors from it: a value is {"dtype": "int64"|"float32", "shape": [..], "data": [..]}
// (data row-major), and named values are a list of those with a "name" first, in order.

#[derive(Serialize)]
struct WireRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    dtype: &'static str,
    shape: &'a [usize],
    data: DataRef<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataRef<'a> {
    Int(&'a [i64]),
    Float(&'a [f32]),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    name: Option<String>,
    dtype: String,
    shape: Vec<usize>,
    data: Data,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Data {
    Int(Vec<i64>),
    Float(Vec<f32>),
}

impl Value {
    fn wire<'a>(&'a self, name: Option<&'a str>) -> WireRef<'a> {
        match self {
            Value::Int { shape, data } => WireRef { name, dtype: "int64", shape, data: DataRef::Int(data) },
            Value::Float { shape, data } => WireRef { name, dtype: "float32", shape, data: DataRef::Float(data) },
        }
    }
}

impl Values {
    /// Each named value as one compact JSON object, in order: for files people read too.
    pub fn json_items(&self) -> Vec<String> {
        self.0.iter().map(|(n, v)| serde_json::to_string(&v.wire(Some(n))).expect("JSON of plain values")).collect()
    }
}

impl Wire {
    /// The value, checked: a known dtype whose data fits it, and as many elements as the shape.
    fn value(self) -> Result<Value, String> {
        let name = self.name.as_deref().unwrap_or("value");
        let value = match (self.dtype.as_str(), self.data) {
            ("int64", Data::Int(data)) => Value::Int { shape: self.shape, data },
            // Whole numbers parse as integers first; in a float tensor they are floats.
            ("float32", Data::Int(data)) => Value::Float { shape: self.shape, data: data.into_iter().map(|x| x as f32).collect() },
            ("float32", Data::Float(data)) => Value::Float { shape: self.shape, data },
            ("int64", Data::Float(_)) => return Err(format!("{name}: int64 data holds non-integers")),
            (other, _) => return Err(format!("{name}: dtype {other:?} is not int64 or float32")),
        };
        let len = match &value {
            Value::Int { data, .. } => data.len(),
            Value::Float { data, .. } => data.len(),
        };
        let elements: usize = value.shape().iter().product();
        if len != elements {
            return Err(format!("{name}: shape {:?} holds {elements} elements, data has {len}", value.shape()));
        }
        Ok(value)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire(None).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        Wire::deserialize(d)?.value().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Values {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(name, v)| v.wire(Some(name))))
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Values, D::Error> {
        let mut out = Values::default();
        for wire in Vec::<Wire>::deserialize(d)? {
            let name = wire.name.clone().ok_or_else(|| serde::de::Error::custom("a named value has no \"name\""))?;
            if out.get(&name).is_some() {
                return Err(serde::de::Error::custom(format!("{name} appears twice")));
            }
            out.push(name, wire.value().map_err(serde::de::Error::custom)?);
        }
        Ok(out)
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
