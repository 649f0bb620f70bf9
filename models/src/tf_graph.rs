//! A small builder over TensorFlow's graph C API, used by the reference ("original model in
//! real TensorFlow") side of every architecture: restoring variables by their original names,
//! the handful of math ops the 2018–2020 model code used, and one-shot session runs.
//!
//! Ops are added with `Graph::new_operation` directly; type attributes that TF can infer from
//! the inputs (`T`, `Tidx`, `Tshape`, …) are left to TF.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use anyhow::{anyhow, bail, Context, Result};
use tensorflow::Shape;

use crate::stage::{Stage, Value, Values};
use tensorflow::{
    DataType, Graph, Operation, OperationDescription, Output, Session, SessionOptions, SessionRunArgs, Status, Tensor,
};

/// A value fed into a placeholder.
pub enum Feed {
    F32(Tensor<f32>),
    I32(Tensor<i32>),
    I64(Tensor<i64>),
}

impl Feed {
    pub fn f32(shape: &[usize], values: &[f32]) -> Result<Feed> {
        Ok(Feed::F32(Tensor::new(&dims(shape)).with_values(values).map_err(tf("feed tensor"))?))
    }
    pub fn i32(shape: &[usize], values: &[i32]) -> Result<Feed> {
        Ok(Feed::I32(Tensor::new(&dims(shape)).with_values(values).map_err(tf("feed tensor"))?))
    }
    pub fn i64(shape: &[usize], values: &[i64]) -> Result<Feed> {
        Ok(Feed::I64(Tensor::new(&dims(shape)).with_values(values).map_err(tf("feed tensor"))?))
    }
}

fn dims(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&d| d as u64).collect()
}

fn tf(what: &str) -> impl Fn(Status) -> anyhow::Error + '_ {
    move |s| anyhow!("TensorFlow {what}: {s}")
}

/// Reads one original variable as float32 (shape, row-major values).
pub type ReadArray<'a> = &'a (dyn Fn(&str) -> Result<(Vec<usize>, Vec<f32>)> + Sync);

/// The original checkpoint as the reference restores it.
#[derive(Clone, Default)]
pub struct OriginalWeights<'a> {
    /// The checkpoint prefix given to `RestoreV2`.
    pub prefix: String,
    /// The stored dtype of each variable (absent: float32).
    pub dtypes: HashMap<String, DataType>,
    /// Variables that the folder under test stores in a narrower float type (float16,
    /// bfloat16): the reference rounds each to that type and back, as the conversion did, so
    /// both sides compute on identical values and the comparison measures only the conversion.
    pub round_to: HashMap<String, DataType>,
    /// For originals that are no TF checkpoint (OpenAI GPT's numpy shards), which `RestoreV2`
    /// cannot read: each variable is read through this and held by the graph as a constant.
    pub arrays: Option<ReadArray<'a>>,
}

impl OriginalWeights<'_> {
    pub fn new(prefix: impl Into<String>, dtypes: HashMap<String, DataType>) -> Self {
        OriginalWeights { prefix: prefix.into(), dtypes, round_to: HashMap::new(), arrays: None }
    }
}

impl std::fmt::Debug for OriginalWeights<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginalWeights")
            .field("prefix", &self.prefix)
            .field("dtypes", &self.dtypes)
            .field("round_to", &self.round_to)
            .field("arrays", &self.arrays.map(|_| "constants"))
            .finish()
    }
}

/// A TF graph under construction. Names are made unique with a counter.
pub struct GraphBuilder {
    graph: Graph,
    counter: usize,
}

impl Default for GraphBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GraphBuilder {
    pub fn new() -> Self {
        GraphBuilder { graph: Graph::new(), counter: 0 }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    fn fresh_name(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}_{}", self.counter)
    }

    /// Adds one op with single-tensor `inputs` and attributes set by `attrs`.
    pub fn op(
        &mut self,
        op_type: &str,
        inputs: &[&Output],
        attrs: impl FnOnce(&mut OperationDescription) -> Result<()>,
    ) -> Result<Operation> {
        self.op_with_lists(op_type, inputs, &[], attrs)
    }

    /// Adds one op whose inputs are `inputs` followed by list inputs `lists` (e.g. `SaveV2`'s tensors).
    pub fn op_with_lists(
        &mut self,
        op_type: &str,
        inputs: &[&Output],
        lists: &[&[Output]],
        attrs: impl FnOnce(&mut OperationDescription) -> Result<()>,
    ) -> Result<Operation> {
        let name = self.fresh_name(op_type);
        let mut nd = self.graph.new_operation(op_type, &name)?;
        for i in inputs {
            nd.add_input((*i).clone());
        }
        for l in lists {
            nd.add_input_list(l);
        }
        attrs(&mut nd).with_context(|| format!("attributes of {op_type}"))?;
        nd.finish().map_err(tf(op_type))
    }

    fn out(op: Operation) -> Output {
        Output { operation: op, index: 0 }
    }

    /// An op with no attributes beyond inferred types, returning its first output.
    pub fn apply(&mut self, op_type: &str, inputs: &[&Output]) -> Result<Output> {
        self.op(op_type, inputs, |_| Ok(())).map(Self::out)
    }

    // ---- sources -------------------------------------------------------------------------

    /// A placeholder with the given dtype and op name (the name must be unique).
    pub fn placeholder(&mut self, name: &str, dtype: DataType) -> Result<Output> {
        let mut nd = self.graph.new_operation("Placeholder", name)?;
        nd.set_attr_type("dtype", dtype)?;
        Ok(Self::out(nd.finish().map_err(tf("Placeholder"))?))
    }

    fn constant<T: tensorflow::TensorType>(&mut self, dtype: DataType, t: Tensor<T>) -> Result<Output> {
        self.op("Const", &[], |nd| {
            nd.set_attr_type("dtype", dtype)?;
            nd.set_attr_tensor("value", t)?;
            Ok(())
        })
        .map(Self::out)
    }

    pub fn const_f32(&mut self, shape: &[usize], values: &[f32]) -> Result<Output> {
        let t = Tensor::new(&dims(shape)).with_values(values).map_err(tf("Const"))?;
        self.constant(DataType::Float, t)
    }

    pub fn scalar_f32(&mut self, value: f32) -> Result<Output> {
        self.const_f32(&[], &[value])
    }

    /// A 1-D int32 constant (shapes, permutations, axes, begins, sizes).
    pub fn const_i32(&mut self, values: &[i32]) -> Result<Output> {
        let t = Tensor::new(&[values.len() as u64]).with_values(values).map_err(tf("Const"))?;
        self.constant(DataType::Int32, t)
    }

    pub fn scalar_i32(&mut self, value: i32) -> Result<Output> {
        let t = Tensor::new(&[]).with_values(&[value]).map_err(tf("Const"))?;
        self.constant(DataType::Int32, t)
    }

    pub fn const_strings(&mut self, shape: &[usize], values: &[&str]) -> Result<Output> {
        let owned: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        let t = Tensor::new(&dims(shape)).with_values(&owned).map_err(tf("Const"))?;
        self.constant(DataType::String, t)
    }

    /// Restores `names` from the original checkpoint with one `RestoreV2`, casting every variable
    /// to float32 (after rounding it as [`OriginalWeights::round_to`] says). Returns name →
    /// float32 tensor.
    pub fn restore_f32(&mut self, weights: &OriginalWeights, names: &[String]) -> Result<HashMap<String, Output>> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        if let Some(read) = weights.arrays {
            let mut out = HashMap::new();
            for name in names {
                let (shape, values) = read(name).with_context(|| format!("reading {name}"))?;
                let value = self.const_f32(&shape, &values)?;
                out.insert(name.clone(), self.rounded(weights, name, value)?);
            }
            return Ok(out);
        }
        let vars: Vec<(String, DataType)> =
            names.iter().map(|n| (n.clone(), weights.dtypes.get(n).copied().unwrap_or(DataType::Float))).collect();
        let prefix_t = self.const_strings(&[], &[weights.prefix.as_str()])?;
        let names: Vec<&str> = vars.iter().map(|v| v.0.as_str()).collect();
        let names_t = self.const_strings(&[names.len()], &names)?;
        let specs_t = self.const_strings(&[names.len()], &vec![""; names.len()])?;
        let dtypes: Vec<DataType> = vars.iter().map(|v| v.1).collect();
        let restore = self.op("RestoreV2", &[&prefix_t, &names_t, &specs_t], |nd| Ok(nd.set_attr_type_list("dtypes", &dtypes)?))?;
        let mut out = HashMap::new();
        for (i, (name, dtype)) in vars.iter().enumerate() {
            let raw = Output { operation: restore.clone(), index: i as i32 };
            let value = if *dtype == DataType::Float { raw } else { self.cast(&raw, DataType::Float)? };
            out.insert(name.clone(), self.rounded(weights, name, value)?);
        }
        Ok(out)
    }

    /// `value` rounded to the dtype the folder stores `name` in and back (see `round_to`).
    fn rounded(&mut self, weights: &OriginalWeights, name: &str, value: Output) -> Result<Output> {
        match weights.round_to.get(name) {
            Some(&stored) if stored != DataType::Float => {
                let rounded = self.cast(&value, stored)?;
                self.cast(&rounded, DataType::Float)
            }
            _ => Ok(value),
        }
    }

    // ---- elementwise and shape ops --------------------------------------------------------

    pub fn add(&mut self, a: &Output, b: &Output) -> Result<Output> {
        self.apply("AddV2", &[a, b])
    }
    pub fn sub(&mut self, a: &Output, b: &Output) -> Result<Output> {
        self.apply("Sub", &[a, b])
    }
    pub fn mul(&mut self, a: &Output, b: &Output) -> Result<Output> {
        self.apply("Mul", &[a, b])
    }
    pub fn squared_difference(&mut self, a: &Output, b: &Output) -> Result<Output> {
        self.apply("SquaredDifference", &[a, b])
    }
    pub fn rsqrt(&mut self, x: &Output) -> Result<Output> {
        self.apply("Rsqrt", &[x])
    }
    pub fn erf(&mut self, x: &Output) -> Result<Output> {
        self.apply("Erf", &[x])
    }
    pub fn tanh(&mut self, x: &Output) -> Result<Output> {
        self.apply("Tanh", &[x])
    }
    pub fn relu(&mut self, x: &Output) -> Result<Output> {
        self.apply("Relu", &[x])
    }
    pub fn pow(&mut self, x: &Output, y: &Output) -> Result<Output> {
        self.apply("Pow", &[x, y])
    }
    /// Softmax over the last axis (TF's op takes any rank ≥ 1).
    pub fn softmax(&mut self, x: &Output) -> Result<Output> {
        self.apply("Softmax", &[x])
    }
    pub fn cast(&mut self, x: &Output, to: DataType) -> Result<Output> {
        self.op("Cast", &[x], |nd| Ok(nd.set_attr_type("DstT", to)?)).map(Self::out)
    }

    pub fn reshape(&mut self, x: &Output, shape: &[i32]) -> Result<Output> {
        let s = self.const_i32(shape)?;
        self.apply("Reshape", &[x, &s])
    }
    pub fn transpose(&mut self, x: &Output, perm: &[i32]) -> Result<Output> {
        let p = self.const_i32(perm)?;
        self.apply("Transpose", &[x, &p])
    }
    /// `tf.slice`: `size` -1 means "to the end".
    pub fn slice(&mut self, x: &Output, begin: &[i32], size: &[i32]) -> Result<Output> {
        let b = self.const_i32(begin)?;
        let s = self.const_i32(size)?;
        self.apply("Slice", &[x, &b, &s])
    }
    /// `tf.gather(params, indices)` on axis 0.
    pub fn gather(&mut self, params: &Output, indices: &Output) -> Result<Output> {
        let axis = self.scalar_i32(0)?;
        self.apply("GatherV2", &[params, indices, &axis])
    }
    /// Mean over `axes`, keeping them as length-1 axes when `keep_dims`.
    pub fn mean(&mut self, x: &Output, axes: &[i32], keep_dims: bool) -> Result<Output> {
        let a = self.const_i32(axes)?;
        self.op("Mean", &[x, &a], |nd| Ok(nd.set_attr_bool("keep_dims", keep_dims)?)).map(Self::out)
    }
    /// `tf.unstack(x, num, axis)`.
    pub fn unstack(&mut self, x: &Output, num: usize, axis: i64) -> Result<Vec<Output>> {
        let op = self.op("Unpack", &[x], |nd| {
            nd.set_attr_int("num", num as i64)?;
            nd.set_attr_int("axis", axis)?;
            Ok(())
        })?;
        Ok((0..num).map(|i| Output { operation: op.clone(), index: i as i32 }).collect())
    }

    // ---- linear algebra -------------------------------------------------------------------

    pub fn matmul(&mut self, a: &Output, b: &Output, transpose_a: bool, transpose_b: bool) -> Result<Output> {
        self.op("MatMul", &[a, b], |nd| {
            nd.set_attr_bool("transpose_a", transpose_a)?;
            nd.set_attr_bool("transpose_b", transpose_b)?;
            Ok(())
        })
        .map(Self::out)
    }
    pub fn batch_matmul(&mut self, x: &Output, y: &Output, adj_x: bool, adj_y: bool) -> Result<Output> {
        self.op("BatchMatMulV2", &[x, y], |nd| {
            nd.set_attr_bool("adj_x", adj_x)?;
            nd.set_attr_bool("adj_y", adj_y)?;
            Ok(())
        })
        .map(Self::out)
    }
    /// `tf.einsum` of two operands, as Keras' `EinsumDense` and Model Garden's attention use it.
    pub fn einsum(&mut self, equation: &str, a: &Output, b: &Output) -> Result<Output> {
        self.op_with_lists("Einsum", &[], &[&[a.clone(), b.clone()]], |nd| Ok(nd.set_attr_string("equation", equation)?))
            .map(Self::out)
    }
    pub fn bias_add(&mut self, x: &Output, bias: &Output) -> Result<Output> {
        self.apply("BiasAdd", &[x, bias])
    }

    /// `tf.layers.dense` without activation: `x` [N, in] · `kernel` [in, out] (+ `bias`).
    pub fn dense(&mut self, x: &Output, kernel: &Output, bias: Option<&Output>) -> Result<Output> {
        let y = self.matmul(x, kernel, false, false)?;
        match bias {
            Some(b) => self.bias_add(&y, b),
            None => Ok(y),
        }
    }

    // ---- model building blocks ------------------------------------------------------------

    /// `tf.contrib.layers.layer_norm` over the last axis, i.e. `tf.nn.moments` followed by
    /// `tf.nn.batch_normalization` with the same operation order.
    pub fn layer_norm(&mut self, x: &Output, gamma: &Output, beta: &Output, eps: f64) -> Result<Output> {
        let mean = self.mean(x, &[-1], true)?;
        let sq = self.squared_difference(x, &mean)?;
        let variance = self.mean(&sq, &[-1], true)?;
        let eps = self.scalar_f32(eps as f32)?;
        let var_eps = self.add(&variance, &eps)?;
        let inv = self.rsqrt(&var_eps)?;
        let inv = self.mul(&inv, gamma)?;
        let scaled = self.mul(x, &inv)?;
        let mean_inv = self.mul(&mean, &inv)?;
        let shift = self.sub(beta, &mean_inv)?;
        self.add(&scaled, &shift)
    }

    /// Exact GELU as BERT's `gelu` (2018): `x · 0.5 · (1 + erf(x / √2))`.
    pub fn gelu_erf(&mut self, x: &Output) -> Result<Output> {
        let sqrt2 = self.scalar_f32(std::f32::consts::SQRT_2)?;
        let scaled = self.apply("RealDiv", &[x, &sqrt2])?;
        let e = self.erf(&scaled)?;
        let one = self.scalar_f32(1.0)?;
        let half = self.scalar_f32(0.5)?;
        let s = self.add(&one, &e)?;
        let cdf = self.mul(&half, &s)?;
        self.mul(x, &cdf)
    }

    /// Tanh-approximated GELU (BERT's `gelu` after 2019-02, HF `gelu_new`):
    /// `x · 0.5 · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`.
    pub fn gelu_tanh(&mut self, x: &Output) -> Result<Output> {
        let three = self.scalar_f32(3.0)?;
        let cube = self.pow(x, &three)?;
        let c = self.scalar_f32(0.044715)?;
        let t = self.mul(&c, &cube)?;
        let inner = self.add(x, &t)?;
        let k = self.scalar_f32((2.0f64 / std::f64::consts::PI).sqrt() as f32)?;
        let inner = self.mul(&k, &inner)?;
        let th = self.tanh(&inner)?;
        let one = self.scalar_f32(1.0)?;
        let half = self.scalar_f32(0.5)?;
        let s = self.add(&one, &th)?;
        let cdf = self.mul(&half, &s)?;
        self.mul(x, &cdf)
    }

    /// The activation an HF `hidden_act` names: `gelu` (erf), `gelu_new`/`gelu_pytorch_tanh`
    /// (tanh approximation), `relu`.
    pub fn activation(&mut self, hf_name: &str, x: &Output) -> Result<Output> {
        match hf_name {
            "gelu" => self.gelu_erf(x),
            "gelu_new" | "gelu_pytorch_tanh" => self.gelu_tanh(x),
            "relu" => self.relu(x),
            other => bail!("unsupported activation {other:?} (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)"),
        }
    }

    /// `(1 - mask) · -10000` shaped [B, 1, 1, S] from a float mask [B, S] (1 = real token).
    pub fn attention_adder(&mut self, mask: &Output, batch: usize, seq: usize) -> Result<Output> {
        let m = self.reshape(mask, &[batch as i32, 1, 1, seq as i32])?;
        let one = self.scalar_f32(1.0)?;
        let inv = self.sub(&one, &m)?;
        let big = self.scalar_f32(-10000.0)?;
        self.mul(&inv, &big)
    }

    /// [B·S, N·Dh] → [B, N, S, Dh].
    pub fn split_heads(&mut self, x: &Output, batch: usize, seq: usize, heads: usize, head_dim: usize) -> Result<Output> {
        let r = self.reshape(x, &[batch as i32, seq as i32, heads as i32, head_dim as i32])?;
        self.transpose(&r, &[0, 2, 1, 3])
    }

    /// Multi-head scaled dot-product attention as BERT's `attention_layer` computes it, on
    /// already projected 2-D tensors: `q` [B·Sq, N·Dh], `k`/`v` [B·Sk, N·Dh]. Scores are
    /// multiplied by `scale`, then `adder` (broadcastable to [B, N, Sq, Sk]) is added.
    /// Returns the context [B·Sq, N·Dh].
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &mut self,
        q: &Output,
        k: &Output,
        v: &Output,
        adder: Option<&Output>,
        batch: usize,
        q_len: usize,
        k_len: usize,
        heads: usize,
        head_dim: usize,
        scale: f32,
    ) -> Result<Output> {
        let q = self.split_heads(q, batch, q_len, heads, head_dim)?;
        let k = self.split_heads(k, batch, k_len, heads, head_dim)?;
        let v = self.split_heads(v, batch, k_len, heads, head_dim)?;
        let scores = self.batch_matmul(&q, &k, false, true)?;
        let s = self.scalar_f32(scale)?;
        let mut scores = self.mul(&scores, &s)?;
        if let Some(a) = adder {
            scores = self.add(&scores, a)?;
        }
        let probs = self.softmax(&scores)?;
        let ctx = self.batch_matmul(&probs, &v, false, false)?;
        let ctx = self.transpose(&ctx, &[0, 2, 1, 3])?;
        self.reshape(&ctx, &[(batch * q_len) as i32, (heads * head_dim) as i32])
    }

    // ---- running --------------------------------------------------------------------------

    /// Runs the graph once, feeding placeholders and fetching float32 tensors as
    /// (shape, row-major values).
    pub fn run(&self, feeds: &[(&Output, &Feed)], fetches: &[&Output]) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        let mut session = Session::new(&SessionOptions::new(), &self.graph).map_err(tf("session"))?;
        let mut args = SessionRunArgs::new();
        for (out, feed) in feeds {
            match feed {
                Feed::F32(t) => args.add_feed(&out.operation, out.index, t),
                Feed::I32(t) => args.add_feed(&out.operation, out.index, t),
                Feed::I64(t) => args.add_feed(&out.operation, out.index, t),
            }
        }
        let tokens: Vec<_> = fetches.iter().map(|o| args.request_fetch(&o.operation, o.index)).collect();
        session.run(&mut args).map_err(tf("run"))?;
        let mut results = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.into_iter().enumerate() {
            let t: Tensor<f32> = args.fetch(token).map_err(tf("fetch")).with_context(|| format!("fetch #{i}"))?;
            results.push((t.dims().iter().map(|&d| d as usize).collect(), t.to_vec()));
        }
        session.close().map_err(tf("close"))?;
        Ok(results)
    }
}

/// Restored float32 variables by original name. Remembers which ones the graph read, so that a
/// stage restoring a variable it never reads is an error: a stage's variables are exactly what
/// its graph uses.
pub struct Vars {
    restored: HashMap<String, Output>,
    read: RefCell<BTreeSet<String>>,
}

impl Vars {
    pub fn restore(g: &mut GraphBuilder, weights: &OriginalWeights, names: &[String]) -> Result<Vars> {
        Ok(Vars { restored: g.restore_f32(weights, names)?, read: RefCell::default() })
    }

    pub fn get(&self, name: &str) -> Result<Output> {
        let out = self.restored.get(name).with_context(|| format!("variable {name} was not restored"))?;
        self.read.borrow_mut().insert(name.to_string());
        Ok(out.clone())
    }

    pub fn check_all_read(&self) -> Result<()> {
        let read = self.read.borrow();
        let mut unread: Vec<&str> = self.restored.keys().filter(|n| !read.contains(*n)).map(String::as_str).collect();
        unread.sort();
        match unread.is_empty() {
            true => Ok(()),
            false => bail!("restored but never read: {}", unread.join(", ")),
        }
    }
}

/// `value` as a feed of `dtype`: ids as int32 (as the original feeds them), the rest float.
pub fn feed(name: &str, value: &Value, dtype: DataType) -> Result<Feed> {
    match (value, dtype) {
        (Value::Int { shape, data }, DataType::Int32) => {
            let data = data.iter().map(|&x| i32::try_from(x)).collect::<Result<Vec<_>, _>>().with_context(|| format!("{name} does not fit in int32"))?;
            Feed::i32(shape, &data)
        }
        (Value::Int { shape, data }, _) => Feed::f32(shape, &data.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        (Value::Float { shape, data }, DataType::Float) => Feed::f32(shape, data),
        (Value::Float { .. }, _) => bail!("{name} must be integer ids, got floats"),
    }
}

/// Runs one stage in TensorFlow: a fresh graph restoring exactly `stage.original_vars`, with a
/// placeholder per `stage.inputs` (int32 for the names in `int_inputs`, float otherwise), built
/// by `build` from the restored variables and the placeholders (in `stage.inputs` order, with
/// the fed values for their shapes). Every restored variable must be read.
pub fn run_stage(
    weights: &OriginalWeights,
    stage: &Stage,
    inputs: &Values,
    int_inputs: &[&str],
    build: impl FnOnce(&mut GraphBuilder, &Vars, &[Output], &Values) -> Result<Vec<Output>>,
) -> Result<Values> {
    let inputs = inputs.pick(&stage.inputs).map_err(anyhow::Error::msg)?;
    let mut g = GraphBuilder::new();
    let vars = Vars::restore(&mut g, weights, &stage.original_vars)?;
    let mut placeholders = Vec::new();
    let mut feeds = Vec::new();
    for (name, value) in &inputs.0 {
        let dtype = if int_inputs.contains(&name.as_str()) { DataType::Int32 } else { DataType::Float };
        let shape = Shape::from(Some(value.shape().iter().map(|&d| Some(d as i64)).collect()));
        let op = g.op("Placeholder", &[], |nd| {
            nd.set_attr_type("dtype", dtype)?;
            Ok(nd.set_attr_shape("shape", &shape)?)
        })?;
        let placeholder = Output { operation: op, index: 0 };
        feeds.push((placeholder.clone(), feed(name, value, dtype)?));
        placeholders.push(placeholder);
    }
    let outs = build(&mut g, &vars, &placeholders, &inputs).with_context(|| format!("building TensorFlow stage {}", stage.name))?;
    vars.check_all_read().with_context(|| format!("TensorFlow stage {}", stage.name))?;
    if outs.len() != stage.outputs.len() {
        bail!("stage {} produced {} outputs, but declares {:?}", stage.name, outs.len(), stage.outputs);
    }
    let feed_refs: Vec<(&Output, &Feed)> = feeds.iter().map(|(o, f)| (o, f)).collect();
    let results = g.run(&feed_refs, &outs.iter().collect::<Vec<_>>()).with_context(|| format!("TensorFlow stage {}", stage.name))?;
    Ok(Values(stage.outputs.iter().cloned().zip(results).map(|(name, (shape, data))| (name, Value::Float { shape, data })).collect()))
}
