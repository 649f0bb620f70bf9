//! BERT (google-research/bert) → `BertForPreTraining` and its fine-tuned heads.

use serde::{Deserialize, Serialize};

pub mod candle;
pub mod reference;

/// `bert_config.json` as released, which is also a valid HF `config.json` for BERT (HF adds keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Original BERT hard-codes 1e-12 (tf.contrib.layers.layer_norm); HF spells it out.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// HF's flag; when false the MLM decoder has its own weight instead of the word embeddings.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_true() -> bool {
    true
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Which model the checkpoint holds, hence which HF class it converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// `BertForPreTraining`: MLM and next-sentence heads.
    PreTraining,
    /// `BertForSequenceClassification` (run_classifier fine-tunes).
    SequenceClassification { num_labels: usize },
    /// `BertForQuestionAnswering` (run_squad fine-tunes); HF's class has no pooler.
    QuestionAnswering,
    /// `BertModel`: the encoder with its pooler.
    Base,
}

impl Head {
    pub fn has_pooler(self) -> bool {
        !matches!(self, Head::QuestionAnswering)
    }
    /// The key prefix of the encoder in HF's state dict for this class.
    pub fn prefix(self) -> &'static str {
        match self {
            Head::Base => "",
            _ => "bert.",
        }
    }
}
