//! TensorFlow's own checkpoint I/O, run through the C API: `SaveV2`, `MergeV2Checkpoints`,
//! `SaveSlices` (V1) and `RestoreV2`. It writes the fixtures and serves as ground truth for the
//! pure-Rust readers; converting never calls it.

use tensorflow::{
    BFloat16, DataType, Graph, Operation, Output, Session, SessionOptions, SessionRunArgs, Tensor, TensorType,
};

use crate::error::{Error, Result};
use crate::source::DType;

/// A tensor in host memory: little-endian row-major bytes, or the elements of a string tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
    pub strings: Vec<Vec<u8>>,
}

impl HostTensor {
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Self {
        HostTensor { dtype, shape, data, strings: Vec::new() }
    }
    pub fn strings(shape: Vec<usize>, strings: Vec<Vec<u8>>) -> Self {
        HostTensor { dtype: DType::String, shape, data: Vec::new(), strings }
    }
    pub fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        HostTensor::new(DType::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// One item to save: a name and a slice spec as SaveV2 takes it ("" for a whole tensor,
/// "10 4 0,4:-" for a slice of a partitioned variable).
pub struct SaveItem<'a> {
    pub name: &'a str,
    pub slice_spec: &'a str,
    pub tensor: &'a HostTensor,
}

/// The original checkpoint as the reference reads it: restored by TensorFlow's own `RestoreV2` for
/// TF formats; for numpy shards and torch pickles, which TF cannot read, each variable read by
/// tfconv's reader and given to the graph as a float32 constant.
pub fn original_weights(ckpt: &dyn crate::source::Checkpoint) -> Result<tfconv_models::tf_graph::OriginalWeights> {
    let dtypes = ckpt.tensors().iter().map(|t| (t.name.clone(), tf_dtype(t.dtype))).collect();
    let mut weights = tfconv_models::tf_graph::OriginalWeights::new(ckpt.path().to_string_lossy(), dtypes);
    if !restorable(ckpt) {
        let reader = std::sync::Arc::new(crate::source::open(ckpt.path())?);
        weights.constants = Some(std::sync::Arc::new(move |name: &str| read_f32(reader.as_ref().as_ref(), name)));
    }
    Ok(weights)
}

pub fn tf_dtype(dtype: DType) -> DataType {
    match dtype {
        DType::F32 => DataType::Float,
        DType::F64 => DataType::Double,
        DType::I32 => DataType::Int32,
        DType::U8 => DataType::UInt8,
        DType::I16 => DataType::Int16,
        DType::I8 => DataType::Int8,
        DType::String => DataType::String,
        DType::I64 => DataType::Int64,
        DType::Bool => DataType::Bool,
        DType::BF16 => DataType::BFloat16,
        DType::U16 => DataType::UInt16,
        DType::F16 => DataType::Half,
        DType::U32 => DataType::UInt32,
        DType::U64 => DataType::UInt64,
    }
}

fn tf_err(what: &str) -> impl Fn(tensorflow::Status) -> Error + '_ {
    move |s| Error::ReferenceUnavailable(format!("TensorFlow {what}: {s}"))
}

/// A typed TF tensor for any supported dtype, so heterogeneous feeds can be held together.
enum AnyTensor {
    F32(Tensor<f32>),
    F64(Tensor<f64>),
    I32(Tensor<i32>),
    U8(Tensor<u8>),
    I16(Tensor<i16>),
    I8(Tensor<i8>),
    Str(Tensor<String>),
    I64(Tensor<i64>),
    Bool(Tensor<bool>),
    BF16(Tensor<BFloat16>),
    U16(Tensor<u16>),
    F16(Tensor<half::f16>),
    U32(Tensor<u32>),
    U64(Tensor<u64>),
}

/// Runs `$body` with `$t` bound to the typed tensor inside an `AnyTensor`.
macro_rules! with_any {
    ($any:expr, $t:ident => $body:expr) => {
        match $any {
            AnyTensor::F32($t) => $body,
            AnyTensor::F64($t) => $body,
            AnyTensor::I32($t) => $body,
            AnyTensor::U8($t) => $body,
            AnyTensor::I16($t) => $body,
            AnyTensor::I8($t) => $body,
            AnyTensor::Str($t) => $body,
            AnyTensor::I64($t) => $body,
            AnyTensor::Bool($t) => $body,
            AnyTensor::BF16($t) => $body,
            AnyTensor::U16($t) => $body,
            AnyTensor::F16($t) => $body,
            AnyTensor::U32($t) => $body,
            AnyTensor::U64($t) => $body,
        }
    };
}

/// Copies raw little-endian bytes into a fresh TF tensor of a plain-old-data element type.
fn pod_tensor<T: TensorType + Copy>(shape: &[u64], bytes: &[u8]) -> Tensor<T> {
    let mut t = Tensor::<T>::new(shape);
    let n = std::mem::size_of_val(&t[..]);
    assert_eq!(n, bytes.len(), "byte length does not match shape");
    // SAFETY: every T used here is a plain numeric type (or a u16 newtype) with no invalid bit
    // patterns except bool, and bool data comes from TF-compatible 0/1 bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), t.as_mut_ptr() as *mut u8, n) };
    t
}

fn pod_bytes<T: TensorType + Copy>(t: &Tensor<T>) -> Vec<u8> {
    let n = std::mem::size_of_val(&t[..]);
    // SAFETY: reading the initialized element memory of the tensor as bytes.
    unsafe { std::slice::from_raw_parts(t.as_ptr() as *const u8, n) }.to_vec()
}

impl AnyTensor {
    fn from_host(h: &HostTensor) -> Result<AnyTensor> {
        let shape: Vec<u64> = h.shape.iter().map(|&d| d as u64).collect();
        let expected = h.dtype.size().map(|s| s * h.shape.iter().product::<usize>());
        if let Some(n) = expected {
            if n != h.data.len() {
                return Err(Error::Output(format!("host tensor has {} bytes, dtype×shape needs {n}", h.data.len())));
            }
        }
        let b = &h.data;
        Ok(match h.dtype {
            DType::F32 => AnyTensor::F32(pod_tensor(&shape, b)),
            DType::F64 => AnyTensor::F64(pod_tensor(&shape, b)),
            DType::I32 => AnyTensor::I32(pod_tensor(&shape, b)),
            DType::U8 => AnyTensor::U8(pod_tensor(&shape, b)),
            DType::I16 => AnyTensor::I16(pod_tensor(&shape, b)),
            DType::I8 => AnyTensor::I8(pod_tensor(&shape, b)),
            DType::I64 => AnyTensor::I64(pod_tensor(&shape, b)),
            DType::Bool => AnyTensor::Bool(pod_tensor(&shape, b)),
            DType::BF16 => AnyTensor::BF16(pod_tensor(&shape, b)),
            DType::U16 => AnyTensor::U16(pod_tensor(&shape, b)),
            DType::F16 => AnyTensor::F16(pod_tensor(&shape, b)),
            DType::U32 => AnyTensor::U32(pod_tensor(&shape, b)),
            DType::U64 => AnyTensor::U64(pod_tensor(&shape, b)),
            DType::String => {
                let mut t = Tensor::<String>::new(&shape);
                if t.len() != h.strings.len() {
                    return Err(Error::Output("string tensor element count does not match its shape".into()));
                }
                for (dst, src) in t.iter_mut().zip(&h.strings) {
                    *dst = String::from_utf8(src.clone())
                        .map_err(|_| Error::Output("the tensorflow crate only feeds UTF-8 strings".into()))?;
                }
                AnyTensor::Str(t)
            }
        })
    }

    fn fetch(args: &mut SessionRunArgs, token: tensorflow::FetchToken, dtype: DType) -> Result<AnyTensor> {
        let e = tf_err("fetch");
        Ok(match dtype {
            DType::F32 => AnyTensor::F32(args.fetch(token).map_err(e)?),
            DType::F64 => AnyTensor::F64(args.fetch(token).map_err(e)?),
            DType::I32 => AnyTensor::I32(args.fetch(token).map_err(e)?),
            DType::U8 => AnyTensor::U8(args.fetch(token).map_err(e)?),
            DType::I16 => AnyTensor::I16(args.fetch(token).map_err(e)?),
            DType::I8 => AnyTensor::I8(args.fetch(token).map_err(e)?),
            DType::String => AnyTensor::Str(args.fetch(token).map_err(e)?),
            DType::I64 => AnyTensor::I64(args.fetch(token).map_err(e)?),
            DType::Bool => AnyTensor::Bool(args.fetch(token).map_err(e)?),
            DType::BF16 => AnyTensor::BF16(args.fetch(token).map_err(e)?),
            DType::U16 => AnyTensor::U16(args.fetch(token).map_err(e)?),
            DType::F16 => AnyTensor::F16(args.fetch(token).map_err(e)?),
            DType::U32 => AnyTensor::U32(args.fetch(token).map_err(e)?),
            DType::U64 => AnyTensor::U64(args.fetch(token).map_err(e)?),
        })
    }

    fn to_host(&self, dtype: DType) -> HostTensor {
        let shape: Vec<usize> = with_any!(self, t => t.dims().iter().map(|&d| d as usize).collect());
        match self {
            AnyTensor::Str(t) => HostTensor::strings(shape, t.iter().map(|s| s.as_bytes().to_vec()).collect()),
            AnyTensor::F32(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::F64(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::I32(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::U8(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::I16(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::I8(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::I64(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::Bool(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::BF16(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::U16(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::F16(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::U32(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
            AnyTensor::U64(t) => HostTensor::new(dtype, shape, pod_bytes(t)),
        }
    }
}

/// A graph under construction with the feeds it needs, run once.
struct OneShot {
    graph: Graph,
    feeds: Vec<(Operation, AnyTensor)>,
    counter: usize,
}

impl OneShot {
    fn new() -> Result<Self> {
        crate::tf_runtime::load()?;
        Ok(OneShot { graph: Graph::new(), feeds: Vec::new(), counter: 0 })
    }

    fn placeholder(&mut self, value: AnyTensor, dtype: DataType) -> Result<Output> {
        self.counter += 1;
        let name = format!("feed_{}", self.counter);
        let mut nd = self.graph.new_operation("Placeholder", &name).map_err(|e| Error::Output(e.to_string()))?;
        nd.set_attr_type("dtype", dtype).map_err(|e| Error::Output(e.to_string()))?;
        let op = nd.finish().map_err(tf_err("Placeholder"))?;
        self.feeds.push((op.clone(), value));
        Ok(Output { operation: op, index: 0 })
    }

    fn strings(&mut self, values: &[&str]) -> Result<Output> {
        let mut t = Tensor::<String>::new(&[values.len() as u64]);
        for (d, s) in t.iter_mut().zip(values) {
            *d = s.to_string();
        }
        self.placeholder(AnyTensor::Str(t), DataType::String)
    }

    fn scalar_string(&mut self, value: &str) -> Result<Output> {
        let t = Tensor::<String>::new(&[]).with_values(&[value.to_string()]).map_err(tf_err("tensor"))?;
        self.placeholder(AnyTensor::Str(t), DataType::String)
    }

    fn op(&mut self, op_type: &str, inputs: &[Output], lists: &[&[Output]], attrs: impl FnOnce(&mut tensorflow::OperationDescription) -> std::result::Result<(), std::ffi::NulError>) -> Result<Operation> {
        let mut nd = self.graph.new_operation(op_type, op_type).map_err(|e| Error::Output(e.to_string()))?;
        for i in inputs {
            nd.add_input(i.clone());
        }
        for l in lists {
            nd.add_input_list(l);
        }
        attrs(&mut nd).map_err(|e| Error::Output(e.to_string()))?;
        nd.finish().map_err(tf_err(op_type))
    }

    fn run(self, target: Option<&Operation>, fetch: Option<(&Operation, &[DType])>) -> Result<Vec<HostTensor>> {
        let mut session = Session::new(&SessionOptions::new(), &self.graph).map_err(tf_err("session"))?;
        let mut args = SessionRunArgs::new();
        for (op, value) in &self.feeds {
            with_any!(value, t => args.add_feed(op, 0, t));
        }
        if let Some(t) = target {
            args.add_target(t);
        }
        let tokens: Vec<_> = match fetch {
            Some((op, dtypes)) => (0..dtypes.len()).map(|i| args.request_fetch(op, i as i32)).collect(),
            None => Vec::new(),
        };
        session.run(&mut args).map_err(tf_err("run"))?;
        let mut out = Vec::new();
        if let Some((_, dtypes)) = fetch {
            for (token, &dtype) in tokens.into_iter().zip(dtypes) {
                out.push(AnyTensor::fetch(&mut args, token, dtype)?.to_host(dtype));
            }
        }
        session.close().map_err(tf_err("close"))?;
        Ok(out)
    }
}

/// Writes a V2 bundle at `prefix` with TF's `SaveV2`.
pub fn save_v2(prefix: &str, items: &[SaveItem]) -> Result<()> {
    save_with("SaveV2", "dtypes", prefix, items)
}

/// Writes a V1 (tensor-slice) checkpoint file with TF's `SaveSlices`.
pub fn save_v1(filename: &str, items: &[SaveItem]) -> Result<()> {
    save_with("SaveSlices", "T", filename, items)
}

/// Runs one of TF's save ops, which share their inputs (path, names, slice specs, values) and
/// differ in the name of the dtype-list attribute.
fn save_with(op_type: &str, dtypes_attr: &str, path: &str, items: &[SaveItem]) -> Result<()> {
    let mut g = OneShot::new()?;
    let path = g.scalar_string(path)?;
    let names = g.strings(&items.iter().map(|i| i.name).collect::<Vec<_>>())?;
    let specs = g.strings(&items.iter().map(|i| i.slice_spec).collect::<Vec<_>>())?;
    let mut values = Vec::new();
    let mut dtypes = Vec::new();
    for item in items {
        let dtype = tf_dtype(item.tensor.dtype);
        values.push(g.placeholder(AnyTensor::from_host(item.tensor)?, dtype)?);
        dtypes.push(dtype);
    }
    let save = g.op(op_type, &[path, names, specs], &[&values], |nd| nd.set_attr_type_list(dtypes_attr, &dtypes))?;
    g.run(Some(&save), None).map(|_| ())
}

/// Merges several V2 bundles into one multi-shard bundle with TF's `MergeV2Checkpoints`
/// (the inputs are deleted, as TF does).
pub fn merge_v2(sources: &[&str], destination: &str) -> Result<()> {
    let mut g = OneShot::new()?;
    let src = g.strings(sources)?;
    let dst = g.scalar_string(destination)?;
    let merge = g.op("MergeV2Checkpoints", &[src, dst], &[], |nd| nd.set_attr_bool("delete_old_dirs", false))?;
    g.run(Some(&merge), None).map(|_| ())
}

/// Restores tensors with TF's own reader (`RestoreV2`; it also reads V1 files).
/// `requests` are (name, slice spec, dtype); use "" as the spec for a whole tensor.
pub fn restore(prefix: &str, requests: &[(&str, &str, DType)]) -> Result<Vec<HostTensor>> {
    let mut g = OneShot::new()?;
    let prefix = g.scalar_string(prefix)?;
    let names = g.strings(&requests.iter().map(|r| r.0).collect::<Vec<_>>())?;
    let specs = g.strings(&requests.iter().map(|r| r.1).collect::<Vec<_>>())?;
    let dtypes: Vec<DType> = requests.iter().map(|r| r.2).collect();
    let tf_dtypes: Vec<DataType> = dtypes.iter().map(|&d| tf_dtype(d)).collect();
    let restore = g.op("RestoreV2", &[prefix, names, specs], &[], |nd| nd.set_attr_type_list("dtypes", &tf_dtypes))?;
    g.run(None, Some((&restore, &dtypes)))
}

/// Whether TensorFlow's `RestoreV2` reads this checkpoint's format itself (V2 bundles, and V1
/// files through its fallback); any other original (OpenAI GPT's numpy shards) is handed to the
/// reference as constants through [`read_f32`] (see [`original_weights`]).
pub fn restorable(ckpt: &dyn crate::source::Checkpoint) -> bool {
    matches!(ckpt.format(), "tf-bundle-v2" | "tf-checkpoint-v1")
}

/// One variable of `ckpt` as float32 (shape, values), for the reference's constants.
pub fn read_f32(ckpt: &dyn crate::source::Checkpoint, name: &str) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let info = ckpt.info(name).ok_or_else(|| anyhow::anyhow!("{name} is not in {}", ckpt.path().display()))?;
    let bytes = ckpt.read(name)?;
    let floats = crate::sink::cast(&bytes, info.dtype, DType::F32)?;
    Ok((info.shape.clone(), floats.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
}
