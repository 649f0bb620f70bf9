//! Everything tfconv knows about each architecture, one module per architecture, plus the
//! shared vocabulary they are written in (plans, probes, outputs, variable roles).

pub mod albert;
pub mod arch;
pub mod bert;
pub mod candle_util;
pub mod gpt2;
pub mod openai_gpt;
pub mod plan;
pub mod probe;
pub mod roles;
pub mod stage;
pub mod synthetic;
pub mod t5;
pub mod tf_graph;
pub mod transfo_xl;
pub mod xlm;
pub mod xlnet;
