//! Hand-written prost messages for the protos stored in TensorFlow checkpoints
//! (tensor_bundle.proto, tensor_shape.proto, tensor_slice.proto, versions.proto,
//! saved_tensor_slice.proto, tensor.proto). Field numbers: docs/checkpoint-formats.md §1.2 and §2.
//!
//! Enum fields (DataType, endianness) are declared as `int32`: the wire encoding is identical and
//! unknown values then reach our own validation, which produces better error messages.
//! Free-text fields that we never interpret (dimension names) are `bytes` so that odd encodings
//! cannot fail decoding.

/// `tensorflow.VersionDef`
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionDef {
    #[prost(int32, tag = "1")]
    pub producer: i32,
    #[prost(int32, tag = "2")]
    pub min_consumer: i32,
    #[prost(int32, repeated, tag = "3")]
    pub bad_consumers: Vec<i32>,
}

/// `tensorflow.BundleHeaderProto` (value of the empty key in a V2 `.index`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BundleHeaderProto {
    #[prost(int32, tag = "1")]
    pub num_shards: i32,
    /// 0 = LITTLE, 1 = BIG.
    #[prost(int32, tag = "2")]
    pub endianness: i32,
    #[prost(message, optional, tag = "3")]
    pub version: Option<VersionDef>,
}

pub const ENDIANNESS_LITTLE: i32 = 0;
pub const ENDIANNESS_BIG: i32 = 1;

/// `tensorflow.TensorShapeProto.Dim`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dim {
    #[prost(int64, tag = "1")]
    pub size: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub name: Vec<u8>,
}

/// `tensorflow.TensorShapeProto`
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

impl TensorShapeProto {
    pub fn from_dims(dims: &[i64]) -> Self {
        TensorShapeProto { dim: dims.iter().map(|&size| Dim { size, name: Vec::new() }).collect(), unknown_rank: false }
    }
}

/// `tensorflow.TensorSliceProto.Extent`. `length == None` means "the whole dimension"
/// (the `has_length` oneof is wire-compatible with a proto3 optional field).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Extent {
    #[prost(int64, tag = "1")]
    pub start: i64,
    #[prost(int64, optional, tag = "2")]
    pub length: Option<i64>,
}

/// `tensorflow.TensorSliceProto`
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorSliceProto {
    #[prost(message, repeated, tag = "1")]
    pub extent: Vec<Extent>,
}

/// `tensorflow.BundleEntryProto` (value of every tensor key in a V2 `.index`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BundleEntryProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    pub shard_id: i32,
    #[prost(int64, tag = "4")]
    pub offset: i64,
    #[prost(int64, tag = "5")]
    pub size: i64,
    /// Masked CRC32C of the stored bytes.
    #[prost(fixed32, tag = "6")]
    pub crc32c: u32,
    #[prost(message, repeated, tag = "7")]
    pub slices: Vec<TensorSliceProto>,
}

/// `tensorflow.TensorProto` (only the fields a checkpoint reader can use; others are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    pub version_number: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    #[prost(int32, repeated, tag = "7")]
    pub int_val: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
    #[prost(float, repeated, tag = "9")]
    pub scomplex_val: Vec<f32>,
    #[prost(int64, repeated, tag = "10")]
    pub int64_val: Vec<i64>,
    #[prost(bool, repeated, tag = "11")]
    pub bool_val: Vec<bool>,
    #[prost(double, repeated, tag = "12")]
    pub dcomplex_val: Vec<f64>,
    /// DT_HALF and DT_BFLOAT16 values as 16-bit patterns in int32.
    #[prost(int32, repeated, tag = "13")]
    pub half_val: Vec<i32>,
    #[prost(uint32, repeated, tag = "16")]
    pub uint32_val: Vec<u32>,
    #[prost(uint64, repeated, tag = "17")]
    pub uint64_val: Vec<u64>,
    #[prost(bytes = "vec", tag = "18")]
    pub float8_val: Vec<u8>,
}

/// `tensorflow.SavedSliceMeta`: one tensor in a V1 checkpoint and the slices saved for it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedSliceMeta {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(message, repeated, tag = "4")]
    pub slice: Vec<TensorSliceProto>,
}

/// `tensorflow.SavedTensorSliceMeta`
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedTensorSliceMeta {
    #[prost(message, repeated, tag = "1")]
    pub tensor: Vec<SavedSliceMeta>,
    #[prost(message, optional, tag = "2")]
    pub versions: Option<VersionDef>,
}

/// `tensorflow.SavedSlice`: the data of one slice of one tensor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedSlice {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub slice: Option<TensorSliceProto>,
    #[prost(message, optional, tag = "3")]
    pub data: Option<TensorProto>,
}

/// `tensorflow.SavedTensorSlices`: every value of a V1 checkpoint (meta under the empty key,
/// data under the slice keys).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedTensorSlices {
    #[prost(message, optional, tag = "1")]
    pub meta: Option<SavedTensorSliceMeta>,
    #[prost(message, optional, tag = "2")]
    pub data: Option<SavedSlice>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn doc_entry_example_bytes() {
        // `a`, float32 [2,3], offset 0, 24 bytes (docs §1.2).
        let bytes = [
            0x08, 0x01, 0x12, 0x08, 0x12, 0x02, 0x08, 0x02, 0x12, 0x02, 0x08, 0x03, 0x28, 0x18, 0x35, 0xc0, 0xdb, 0x3d,
            0x17,
        ];
        let e = BundleEntryProto::decode(&bytes[..]).unwrap();
        assert_eq!(e.dtype, 1);
        let dims: Vec<i64> = e.shape.as_ref().unwrap().dim.iter().map(|d| d.size).collect();
        assert_eq!(dims, [2, 3]);
        assert_eq!((e.shard_id, e.offset, e.size), (0, 0, 24));
        assert_eq!(e.crc32c, 0x173d_dbc0);
        assert!(e.slices.is_empty());
        assert_eq!(e.encode_to_vec(), bytes);
    }

    #[test]
    fn doc_header_example_bytes() {
        let h = BundleHeaderProto::decode(&[0x08, 0x01, 0x1a, 0x02, 0x08, 0x01][..]).unwrap();
        assert_eq!(h.num_shards, 1);
        assert_eq!(h.endianness, ENDIANNESS_LITTLE);
        assert_eq!(h.version.unwrap().producer, 1);
    }

    #[test]
    fn extent_presence() {
        let s =
            TensorSliceProto { extent: vec![Extent { start: 0, length: Some(0) }, Extent { start: 3, length: None }] };
        let back = TensorSliceProto::decode(&s.encode_to_vec()[..]).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn tensor_proto_unpacked_and_packed_floats() {
        // field 5, unpacked (wire type 5) twice, then packed.
        let mut b = vec![0x2d];
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.push(0x2d);
        b.extend_from_slice(&2.5f32.to_le_bytes());
        b.extend_from_slice(&[0x2a, 0x04]);
        b.extend_from_slice(&3.5f32.to_le_bytes());
        let t = TensorProto::decode(&b[..]).unwrap();
        assert_eq!(t.float_val, [1.5, 2.5, 3.5]);
    }
}
