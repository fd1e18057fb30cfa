//! Everything between a model and a user: tokenizers, chat templates, sampling, the generation loop.

pub mod chat_template;
pub mod generate;
pub mod harmony;
pub mod sampler;
pub mod tokenizer;
