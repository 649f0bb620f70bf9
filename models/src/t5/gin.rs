//! The bindings of Mesh TensorFlow's `operative_config.gin` that define a T5 model, translated
//! into HF `T5Config` keys (architectures.md §7.1). Only what the model needs is read: a binding
//! is `[scope/]Configurable.param = value` or a macro `name = value`, values may span lines
//! inside brackets, and `%name` refers to a macro.

use std::collections::HashMap;

use serde_json::{json, Value};

/// The bindings, key → raw value text (continuation lines joined, comments dropped).
pub fn bindings(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut pending: Option<(String, String)> = None;
    for (number, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        if let Some((key, mut value)) = pending.take() {
            value.push(' ');
            value.push_str(line.trim());
            if open_brackets(&value) > 0 {
                pending = Some((key, value));
            } else {
                out.insert(key, value.trim().to_string());
            }
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with("import ") || line.starts_with("include ") {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected `name = value`, got {line:?}", number + 1));
        };
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        if open_brackets(&value) > 0 || value.ends_with('\\') {
            pending = Some((key, value.trim_end_matches('\\').to_string()));
        } else {
            out.insert(key, value);
        }
    }
    if let Some((key, _)) = pending {
        return Err(format!("the value of {key} is never closed"));
    }
    Ok(out)
}

fn strip_comment(line: &str) -> &str {
    // A `#` inside a quoted string is not a comment.
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            ('#', None) => return &line[..i],
            _ => {}
        }
    }
    line
}

fn open_brackets(value: &str) -> i32 {
    value.chars().map(|c| match c {
        '[' | '(' | '{' => 1,
        ']' | ')' | '}' => -1,
        _ => 0,
    }).sum()
}

/// A binding's value by the last dot-separated parts of its key (`num_heads`,
/// `SelfAttention.relative_attention_num_buckets`), with any scope (`decoder/…`) allowed, macros
/// (`%d_model`) resolved. Several scoped bindings must agree.
fn lookup(b: &HashMap<String, String>, suffix: &str) -> Result<Option<String>, String> {
    let mut found: Vec<(&String, String)> = Vec::new();
    for (key, value) in b {
        let unscoped = key.rsplit('/').next().unwrap_or(key);
        if unscoped == suffix || unscoped.ends_with(&format!(".{suffix}")) {
            found.push((key, resolve(b, value, 0)?));
        }
    }
    found.sort();
    match found.as_slice() {
        [] => Ok(None),
        [(_, v), rest @ ..] if rest.iter().all(|(_, w)| w == v) => Ok(Some(v.clone())),
        many => Err(format!(
            "the gin binds {suffix} differently: {}",
            many.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join("; ")
        )),
    }
}

fn resolve(b: &HashMap<String, String>, value: &str, depth: usize) -> Result<String, String> {
    match value.strip_prefix('%') {
        Some(name) if depth < 8 => {
            let v = b.get(name).ok_or_else(|| format!("macro %{name} is not bound"))?;
            resolve(b, v, depth + 1)
        }
        Some(name) => Err(format!("macro %{name} refers to itself")),
        None => Ok(value.to_string()),
    }
}

fn int(b: &HashMap<String, String>, key: &str) -> Result<Option<u64>, String> {
    lookup(b, key)?.map(|v| v.parse::<u64>().map_err(|_| format!("{key} = {v} is not an integer"))).transpose()
}

/// The HF config for a gin's bindings.
pub fn to_config(text: &str) -> Result<Value, String> {
    let b = bindings(text)?;
    let need = |key: &str| -> Result<u64, String> { int(&b, key)?.ok_or_else(|| format!("the gin does not bind {key}")) };
    let d_model = need("d_model")?;
    let num_heads = need("num_heads")?;
    let d_ff = need("d_ff")?;
    let d_kv = int(&b, "d_kv")?.unwrap_or(64);
    // One depth for both stacks, or each stack's make_layer_stack.num_layers.
    let stack_layers = |scope: &str| -> Result<Option<u64>, String> {
        b.iter()
            .find(|(k, _)| k.starts_with(&format!("{scope}/")) && k.ends_with("make_layer_stack.num_layers"))
            .map(|(k, v)| resolve(&b, v, 0)?.parse::<u64>().map_err(|_| format!("{k} = {v} is not an integer")))
            .transpose()
    };
    // The macro only: `make_layer_stack.num_layers` bindings are per stack, read above.
    let layers = b.get("num_layers").map(|v| resolve(&b, v, 0)?.parse::<u64>().map_err(|_| format!("num_layers = {v} is not an integer"))).transpose()?;
    let encoder_layers = stack_layers("encoder")?.or(layers).ok_or("the gin does not bind num_layers")?;
    let decoder_layers = stack_layers("decoder")?.or(layers).unwrap_or(encoder_layers);
    let activation = lookup(&b, "DenseReluDense.activation")?.unwrap_or_else(|| "'relu'".into());
    let feed_forward = match activation.replace(' ', "").replace('"', "'").as_str() {
        "'relu'" => "relu",
        "['gelu','linear']" | "('gelu','linear')" => "gated-gelu",
        other => return Err(format!("DenseReluDense.activation = {other} is not supported (relu, or ['gelu', 'linear'])")),
    };
    let shared = lookup(&b, "shared_embedding_and_softmax_weights")?.unwrap_or_else(|| "True".into());
    let tie = match shared.as_str() {
        "True" => true,
        "False" => false,
        other => return Err(format!("shared_embedding_and_softmax_weights = {other} is not True or False")),
    };
    let buckets = int(&b, "SelfAttention.relative_attention_num_buckets")?.unwrap_or(32);
    let eps = match lookup(&b, "sublayer_rms_norm.epsilon")?.or(lookup(&b, "LayerStack.norm_epsilon")?) {
        Some(v) => v.parse::<f64>().map_err(|_| format!("the norm epsilon {v} is not a number"))?,
        None => 1e-6,
    };
    Ok(json!({
        "d_model": d_model, "d_kv": d_kv, "d_ff": d_ff, "num_heads": num_heads,
        "num_layers": encoder_layers, "num_decoder_layers": decoder_layers,
        "relative_attention_num_buckets": buckets, "relative_attention_max_distance": 128,
        "layer_norm_epsilon": eps, "feed_forward_proj": feed_forward, "tie_word_embeddings": tie,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bindings of a t5.1.1 operative config, in the shapes gin writes them.
    const V11: &str = r#"
import mesh_tensorflow.transformer.transformer_layers
# Parameters for decoder/DenseReluDense:
decoder/DenseReluDense.activation = ['gelu', 'linear']
decoder/DenseReluDense.dropout_rate = %dropout_rate
encoder/DenseReluDense.activation = ['gelu', 'linear']
d_ff = 2048
d_kv = 64
d_model = 768
dropout_rate = 0.0
num_heads = 12
num_layers = 12
SelfAttention.relative_attention_num_buckets = 32
sublayer_rms_norm.epsilon = 1e-06
decoder/Unitransformer.shared_embedding_and_softmax_weights = False
make_layer_stack.layers = \
    [@mesh_tensorflow.transformer.transformer_layers.SelfAttention,
     @mesh_tensorflow.transformer.transformer_layers.DenseReluDense]
get_variable_dtype.master_dtype = 'bfloat16'  # stored as bf16
"#;

    #[test]
    fn a_t5_1_1_gin_becomes_its_hf_config() {
        let c = to_config(V11).unwrap();
        assert_eq!(c["d_model"], 768);
        assert_eq!(c["feed_forward_proj"], "gated-gelu");
        assert_eq!(c["tie_word_embeddings"], false);
        assert_eq!((c["num_layers"].as_u64(), c["num_decoder_layers"].as_u64()), (Some(12), Some(12)));
        assert_eq!(c["layer_norm_epsilon"], 1e-6);
    }

    #[test]
    fn macros_scoped_depths_and_disagreements() {
        let gin = "d_model = 64\nmy_heads = 4\nnum_heads = %my_heads\nd_ff = 128\nencoder/make_layer_stack.num_layers = 3\ndecoder/make_layer_stack.num_layers = 2\nDenseReluDense.activation = 'relu'\n";
        let c = to_config(gin).unwrap();
        assert_eq!((c["num_heads"].as_u64(), c["num_layers"].as_u64(), c["num_decoder_layers"].as_u64()), (Some(4), Some(3), Some(2)));
        assert_eq!((c["feed_forward_proj"].as_str(), c["tie_word_embeddings"].as_bool()), (Some("relu"), Some(true)));
        let clash = "d_model = 64\nnum_heads = 4\nd_ff = 8\nnum_layers = 1\nencoder/DenseReluDense.activation = 'relu'\ndecoder/DenseReluDense.activation = ['gelu', 'linear']\n";
        assert!(to_config(clash).unwrap_err().contains("binds DenseReluDense.activation differently"));
        assert!(to_config("d_model = 64\n").unwrap_err().contains("does not bind num_heads"));
        assert!(to_config("d_model = 8\nnum_heads = %missing\n").unwrap_err().contains("macro %missing is not bound"));
        assert!(to_config("x = [1,\n").unwrap_err().contains("never closed"));
    }
}
