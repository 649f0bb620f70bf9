//! `tfconv inspect`: what a checkpoint holds, one row per tensor.

use std::io::Write;

use serde_json::json;

use crate::error::Result;
use crate::roles::{role, Role};
use crate::source::Checkpoint;

/// Bytes as a person reads them: 1.2 MB, 340 kB (decimal units, like HF's shard sizes).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn shape_text(shape: &[usize]) -> String {
    format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

struct Row {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Option<u64>,
    role: Role,
}

fn rows(ckpt: &dyn Checkpoint) -> Vec<Row> {
    ckpt.tensors()
        .iter()
        .map(|t| Row {
            name: t.name.clone(),
            dtype: t.dtype.name(),
            shape: t.shape.clone(),
            bytes: t.nbytes().map(|b| b as u64),
            role: role(&t.name),
        })
        .collect()
}

pub fn print_table(ckpt: &dyn Checkpoint, out: &mut dyn Write) -> Result<()> {
    let rows = rows(ckpt);
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).clamp(4, 100);
    let shape_w = rows.iter().map(|r| shape_text(&r.shape).len()).max().unwrap_or(5).max(5);
    let io = |e| crate::Error::write("<stdout>", e);
    writeln!(out, "{} ({})", ckpt.path().display(), ckpt.format()).map_err(io)?;
    writeln!(out, "{:<name_w$}  {:<8}  {:<shape_w$}  {:>10}  role", "name", "dtype", "shape", "bytes").map_err(io)?;
    for r in &rows {
        let bytes = r.bytes.map(human_bytes).unwrap_or_else(|| "-".into());
        writeln!(out, "{:<name_w$}  {:<8}  {:<shape_w$}  {:>10}  {}", r.name, r.dtype, shape_text(&r.shape), bytes, r.role).map_err(io)?;
    }
    let total = |want: Role| -> (usize, u64, u64) {
        let sel: Vec<&Row> = rows.iter().filter(|r| r.role == want).collect();
        let params = sel.iter().map(|r| r.shape.iter().product::<usize>() as u64).sum();
        (sel.len(), sel.iter().filter_map(|r| r.bytes).sum(), params)
    };
    writeln!(out).map_err(io)?;
    for (label, want) in [("weights", Role::Weight), ("optimizer slots", Role::OptimizerSlot), ("bookkeeping", Role::Bookkeeping)] {
        let (n, bytes, params) = total(want);
        writeln!(out, "{label:<16} {n:>6} tensors  {:>10}  {params} elements", human_bytes(bytes)).map_err(io)?;
    }
    let all_bytes: u64 = rows.iter().filter_map(|r| r.bytes).sum();
    writeln!(out, "{:<16} {:>6} tensors  {:>10}", "total", rows.len(), human_bytes(all_bytes)).map_err(io)?;
    Ok(())
}

pub fn to_json(ckpt: &dyn Checkpoint) -> serde_json::Value {
    let rows = rows(ckpt);
    let tensors: Vec<_> = rows
        .iter()
        .map(|r| json!({"name": r.name, "dtype": r.dtype, "shape": r.shape, "bytes": r.bytes, "role": r.role}))
        .collect();
    let mut totals = serde_json::Map::new();
    for want in [Role::Weight, Role::OptimizerSlot, Role::Bookkeeping] {
        let sel: Vec<&Row> = rows.iter().filter(|r| r.role == want).collect();
        totals.insert(
            serde_json::to_value(want).unwrap().as_str().unwrap().to_string(),
            json!({
                "tensors": sel.len(),
                "bytes": sel.iter().filter_map(|r| r.bytes).sum::<u64>(),
                "elements": sel.iter().map(|r| r.shape.iter().product::<usize>() as u64).sum::<u64>(),
            }),
        );
    }
    json!({
        "path": ckpt.path(),
        "format": ckpt.format(),
        "tensors": tensors,
        "totals": totals,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_uses_decimal_units() {
        assert_eq!(super::human_bytes(999), "999 B");
        assert_eq!(super::human_bytes(1000), "1.0 kB");
        assert_eq!(super::human_bytes(440_000_000), "440.0 MB");
    }
}
