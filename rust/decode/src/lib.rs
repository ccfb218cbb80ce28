//! The single-token decode step of a GPT-2- or Llama-style decoder (fastllm's MiniGPT) for one
//! sequence on the CPU in float32, with no Python and no tensors in sight.
//!
//! Why: at batch 1 a decode step is bound by reading the weights once, and PyTorch's eager mode
//! adds a dispatch per tiny op on top (about 80 per step); here the whole step is one call. The
//! caller prefills the prompt (a batched forward is faster there), `load`s the K/V it computed,
//! then calls `step` once per token. Everything the step needs beyond the borrowed weights lives
//! in `State`: the sequence's K/V and scratch rows, so a step allocates nothing.

pub mod config;
pub mod error;
pub mod kernels;
pub mod step;

pub use config::{Config, Entry, Layout, Mlp, Norm, Positions};
pub use error::{DecodeError, Result};
pub use step::{Model, State, Weights};
