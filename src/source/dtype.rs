//! Element types, numbered as TensorFlow's `DataType` enum (types.proto).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I32,
    U8,
    I16,
    I8,
    String,
    I64,
    Bool,
    BF16,
    U16,
    F16,
    U32,
    U64,
}

impl DType {
    /// Maps a TF `DataType` number; `None` for types that never hold model weights
    /// (complex, quantized, resource, variant, float8, sub-byte).
    pub fn from_tf(v: i32) -> Option<DType> {
        Some(match v {
            1 => DType::F32,
            2 => DType::F64,
            3 => DType::I32,
            4 => DType::U8,
            5 => DType::I16,
            6 => DType::I8,
            7 => DType::String,
            9 => DType::I64,
            10 => DType::Bool,
            14 => DType::BF16,
            17 => DType::U16,
            19 => DType::F16,
            22 => DType::U32,
            23 => DType::U64,
            _ => return None,
        })
    }

    pub fn to_tf(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::F64 => 2,
            DType::I32 => 3,
            DType::U8 => 4,
            DType::I16 => 5,
            DType::I8 => 6,
            DType::String => 7,
            DType::I64 => 9,
            DType::Bool => 10,
            DType::BF16 => 14,
            DType::U16 => 17,
            DType::F16 => 19,
            DType::U32 => 22,
            DType::U64 => 23,
        }
    }

    /// TF's own name for a `DataType` number, for error messages about unsupported types.
    pub fn tf_name(v: i32) -> String {
        const NAMES: &[(i32, &str)] = &[
            (0, "DT_INVALID"), (8, "DT_COMPLEX64"), (11, "DT_QINT8"), (12, "DT_QUINT8"), (13, "DT_QINT32"),
            (15, "DT_QINT16"), (16, "DT_QUINT16"), (18, "DT_COMPLEX128"), (20, "DT_RESOURCE"), (21, "DT_VARIANT"),
            (24, "DT_FLOAT8_E5M2"), (25, "DT_FLOAT8_E4M3FN"), (29, "DT_INT4"), (30, "DT_UINT4"),
        ];
        match DType::from_tf(v) {
            Some(d) => d.name().to_string(),
            None => NAMES.iter().find(|(n, _)| *n == v).map(|(_, s)| s.to_string()).unwrap_or(format!("DataType({v})")),
        }
    }

    /// Bytes per element; `None` for strings.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::String => return None,
        })
    }

    /// Lower-case name as numpy/torch spell it (also used in `inspect`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I32 => "int32",
            DType::U8 => "uint8",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::String => "string",
            DType::I64 => "int64",
            DType::Bool => "bool",
            DType::BF16 => "bfloat16",
            DType::U16 => "uint16",
            DType::F16 => "float16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
        }
    }

    /// The dtype string of the safetensors format.
    pub fn safetensors_name(self) -> Option<&'static str> {
        Some(match self {
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::I32 => "I32",
            DType::U8 => "U8",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::I64 => "I64",
            DType::Bool => "BOOL",
            DType::BF16 => "BF16",
            DType::U16 => "U16",
            DType::F16 => "F16",
            DType::U32 => "U32",
            DType::U64 => "U64",
            DType::String => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
}
