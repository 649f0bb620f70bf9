//! Splitting a state dict into weight files the way Hugging Face does, and the index JSON that
//! maps tensor names to files.

use serde_json::{json, Map, Value};

use super::{Format, TensorSpec};
use crate::error::{Error, Result};

/// Which tensors go into which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// Per file, in file-number order: indices into the tensor list, ascending. There is always at
    /// least one file (an empty state dict gives one empty file).
    pub shards: Vec<Vec<usize>>,
    /// For each tensor (by index), the file it goes into.
    pub shard_of: Vec<usize>,
    /// Sum of all tensors' data bytes (the index's `total_size`).
    pub total_size: u64,
}

impl ShardPlan {
    /// True when more than one file is written (and so an index JSON is written too).
    pub fn is_sharded(&self) -> bool {
        self.shards.len() > 1
    }

    /// The weight file names, in file-number order: `model.safetensors` for a single file,
    /// `model-00001-of-00003.safetensors`, … otherwise.
    pub fn file_names(&self, format: Format) -> Vec<String> {
        let n = self.shards.len();
        if n <= 1 {
            return vec![format.single_file_name()];
        }
        (1..=n).map(|i| format.shard_file_name(i, n)).collect()
    }

    /// The index JSON (`{"metadata": {"total_size": …}, "weight_map": {name: file}}`), with keys
    /// sorted and two-space indentation like transformers' `save_pretrained`, newline-terminated.
    pub fn index_json(&self, specs: &[TensorSpec], format: Format) -> String {
        let files = self.file_names(format);
        let mut pairs: Vec<(&str, &str)> =
            specs.iter().zip(&self.shard_of).map(|(s, &f)| (s.name.as_str(), files[f].as_str())).collect();
        pairs.sort_unstable();
        let mut weight_map = Map::new();
        for (name, file) in pairs {
            weight_map.insert(name.to_string(), Value::String(file.to_string()));
        }
        let index = json!({
            "metadata": { "total_size": self.total_size },
            "weight_map": Value::Object(weight_map),
        });
        let mut s = serde_json::to_string_pretty(&index).expect("JSON of strings and numbers serializes");
        s.push('\n');
        s
    }
}

/// Plans the files for `specs` (in state-dict order) with an optional shard size limit in bytes.
///
/// Follows huggingface_hub's greedy rule: tensors are taken in order and added to the current
/// file until the next one would push it over the limit (a file may fill the limit exactly); a
/// tensor larger than the limit gets a file of its own, numbered before the file still being
/// filled. Only tensor data counts toward the limit (not headers). `None` means one file.
pub fn plan_shards(specs: &[TensorSpec], max_shard_size: Option<u64>) -> Result<ShardPlan> {
    let sizes = specs.iter().map(TensorSpec::nbytes).collect::<Result<Vec<u64>>>()?;
    Ok(plan_sizes(&sizes, max_shard_size))
}

fn plan_sizes(sizes: &[u64], max_shard_size: Option<u64>) -> ShardPlan {
    let total_size = sizes.iter().sum();
    let mut shards: Vec<Vec<usize>> = Vec::new();
    match max_shard_size {
        None => shards.push((0..sizes.len()).collect()),
        Some(max) => {
            let mut current: Vec<usize> = Vec::new();
            let mut current_size = 0u64;
            for (i, &size) in sizes.iter().enumerate() {
                if size > max {
                    shards.push(vec![i]);
                    continue;
                }
                if current_size + size > max {
                    shards.push(std::mem::take(&mut current));
                    current_size = 0;
                }
                current.push(i);
                current_size += size;
            }
            if !current.is_empty() || shards.is_empty() {
                shards.push(current);
            }
        }
    }
    let mut shard_of = vec![0; sizes.len()];
    for (f, shard) in shards.iter().enumerate() {
        for &i in shard {
            shard_of[i] = f;
        }
    }
    ShardPlan { shards, shard_of, total_size }
}

/// Parses a size such as `5GB`, `500MB`, `1.5GiB`, `10 kb` or `123` (bytes).
///
/// Like Hugging Face, `KB`/`MB`/`GB`/`TB` are decimal (powers of 1000) and `KiB`/`MiB`/`GiB`/`TiB`
/// binary (powers of 1024); units are case-insensitive and `B` is accepted. Fractions are allowed;
/// the result is rounded down to whole bytes and must be positive.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = |why: &str| Error::Output(format!("invalid size '{s}': {why} (examples: 5GB, 500MB, 2GiB, 1000000)"));
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad("unknown unit")),
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(bad("expected a number"));
    }
    if int_part.len() + frac_part.len() > 30 {
        return Err(bad("too large"));
    }
    // value = digits / 10^frac_len, exactly; multiply before dividing so fractions of a unit count.
    let digits: u128 = format!("{int_part}{frac_part}").parse().map_err(|_| bad("expected a number"))?;
    let scaled = digits.checked_mul(multiplier).ok_or_else(|| bad("too large"))?;
    let bytes = scaled / 10u128.pow(frac_part.len() as u32);
    let bytes = u64::try_from(bytes).map_err(|_| bad("too large"))?;
    if bytes == 0 {
        return Err(bad("must be at least one byte"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::DType;

    fn shards(sizes: &[u64], max: u64) -> Vec<Vec<usize>> {
        plan_sizes(sizes, Some(max)).shards
    }

    #[test]
    fn exact_fit_stays_in_one_shard() {
        assert_eq!(shards(&[4, 6], 10), vec![vec![0, 1]]);
        assert_eq!(shards(&[4, 6, 10, 1], 10), vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(shards(&[10], 10), vec![vec![0]]);
        assert_eq!(shards(&[5, 6], 10), vec![vec![0], vec![1]]);
    }

    #[test]
    fn oversized_tensor_gets_own_shard_before_the_open_one() {
        // huggingface_hub appends the big tensor's file immediately; the file being filled
        // continues afterwards, so it is numbered after.
        assert_eq!(shards(&[3, 50, 4, 5], 10), vec![vec![1], vec![0, 2], vec![3]]);
        assert_eq!(shards(&[50], 10), vec![vec![0]]);
        assert_eq!(shards(&[50, 60], 10), vec![vec![0], vec![1]]);
        assert_eq!(shards(&[11, 1, 1], 10), vec![vec![0], vec![1, 2]]);
        let p = plan_sizes(&[3, 50, 4, 5], Some(10));
        assert_eq!(p.shard_of, vec![1, 0, 1, 2]);
        assert_eq!(p.total_size, 62);
    }

    #[test]
    fn many_tiny_tensors() {
        let sizes = vec![1u64; 1000];
        let s = shards(&sizes, 64);
        assert_eq!(s.len(), 16); // 15 × 64 + 40
        assert!(s[..15].iter().all(|f| f.len() == 64));
        assert_eq!(s[15].len(), 40);
        let flat: Vec<usize> = s.concat();
        assert_eq!(flat, (0..1000).collect::<Vec<_>>());
        // Zero-sized tensors never split a file.
        assert_eq!(shards(&[10, 0, 0, 1], 10), vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn no_limit_and_empty() {
        assert_eq!(plan_sizes(&[1, 2, 3], None).shards, vec![vec![0, 1, 2]]);
        assert_eq!(plan_sizes(&[], None).shards, vec![Vec::<usize>::new()]);
        assert_eq!(plan_sizes(&[], Some(5)).shards, vec![Vec::<usize>::new()]);
        assert!(!plan_sizes(&[1, 2], Some(5)).is_sharded());
    }

    #[test]
    fn file_names_and_index_json() {
        let specs = vec![
            TensorSpec::new("b.weight", DType::F32, vec![2, 2]), // 16 bytes
            TensorSpec::new("a.bias", DType::F16, vec![3]),      // 6 bytes
            TensorSpec::new("c", DType::F32, vec![4]),           // 16 bytes
        ];
        let plan = plan_shards(&specs, Some(30)).unwrap();
        assert_eq!(plan.shards, vec![vec![0, 1], vec![2]]);
        assert_eq!(
            plan.file_names(Format::Safetensors),
            vec!["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        );
        assert_eq!(
            plan.file_names(Format::PytorchBin),
            vec!["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
        );
        let expected = r#"{
  "metadata": {
    "total_size": 38
  },
  "weight_map": {
    "a.bias": "model-00001-of-00002.safetensors",
    "b.weight": "model-00001-of-00002.safetensors",
    "c": "model-00002-of-00002.safetensors"
  }
}
"#;
        assert_eq!(plan.index_json(&specs, Format::Safetensors), expected);
        let one = plan_shards(&specs, None).unwrap();
        assert_eq!(one.file_names(Format::Safetensors), vec!["model.safetensors"]);
        assert_eq!(one.file_names(Format::PytorchBin), vec!["pytorch_model.bin"]);
        assert_eq!(Format::Safetensors.shard_file_name(7, 12345), "model-00007-of-12345.safetensors");
    }

    #[test]
    fn parse_size_units() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("5gb").unwrap(), 5_000_000_000);
        assert_eq!(parse_size(" 500 MB ").unwrap(), 500_000_000);
        assert_eq!(parse_size("10KB").unwrap(), 10_000);
        assert_eq!(parse_size("2TB").unwrap(), 2_000_000_000_000);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("3MiB").unwrap(), 3 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("0.5KB").unwrap(), 500);
        assert_eq!(parse_size(".5KB").unwrap(), 500);
        assert_eq!(parse_size("1.0001KB").unwrap(), 1000); // rounds down
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("123B").unwrap(), 123);
        for bad in ["", "GB", "5XB", "-5GB", "1.2.3GB", "0", "0.0001KB", "5 G B", "99999999999999999999TB", "abc"] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }
}
