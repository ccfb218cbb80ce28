//! The model's shape and switches, and the layout of its decode weights in one flat f32 buffer.
//!
//! The layout is defined here only: the Python side asks for it (`Layout::entries`) and fills the
//! buffer, so the two can never disagree. Matrices are stored (in, out), row-major: a one-row
//! product then streams each weight row once (see `kernels::gemv`).

use crate::error::{DecodeError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// LayerNorm (GPT-2), with a bias when `Config::bias`.
    Layer,
    /// RMSNorm (Llama): x / sqrt(mean(x^2) + eps) * weight.
    Rms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlp {
    /// fc -> exact (erf) GELU -> proj.
    Gelu,
    /// fc -> tanh-approximate GELU (GPT-2, HF "gelu_new") -> proj.
    GeluTanh,
    /// down(silu(gate x) * up x) (Llama); gate|up are one (d_model, 2 hidden) matrix.
    SwiGlu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Learned absolute embeddings added to the token embedding (GPT-2).
    Learned,
    /// Rotary embeddings on q and k, HF Llama's rotate_half layout; cos/sin tables in the buffer.
    Rope,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab: usize,
    pub context: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub d_model: usize,
    pub hidden: usize,
    pub norm: Norm,
    pub eps: f32,
    pub mlp: Mlp,
    pub positions: Positions,
    /// Biases in every linear layer (and LayerNorm).
    pub bias: bool,
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DecodeError::Config(m));
        for (name, v) in [
            ("vocab", self.vocab),
            ("context", self.context),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("head_dim", self.head_dim),
            ("d_model", self.d_model),
            ("hidden", self.hidden),
        ] {
            if v == 0 || v > 1 << 31 {
                return bad(format!("{name}={v} must be in [1, 2^31]"));
            }
        }
        if self.n_head % self.n_kv_head != 0 {
            return bad(format!("n_kv_head={} must divide n_head={}", self.n_kv_head, self.n_head));
        }
        if self.n_head.checked_mul(self.head_dim) != Some(self.d_model) {
            return bad(format!(
                "n_head={} * head_dim={} must equal d_model={}",
                self.n_head, self.head_dim, self.d_model
            ));
        }
        if self.positions == Positions::Rope && self.head_dim % 2 != 0 {
            return bad(format!("RoPE needs an even head_dim, got {}", self.head_dim));
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad(format!("eps must be > 0, got {}", self.eps));
        }
        Ok(())
    }

    /// Width of the fused q|k|v projection.
    pub fn qkv(&self) -> usize {
        (self.n_head + 2 * self.n_kv_head) * self.head_dim
    }

    /// Width of the first MLP matrix (gate|up for SwiGLU).
    pub fn fc(&self) -> usize {
        if self.mlp == Mlp::SwiGlu {
            2 * self.hidden
        } else {
            self.hidden
        }
    }

    fn norm_bias(&self) -> bool {
        self.bias && self.norm == Norm::Layer
    }
}

/// Where one tensor lives in the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub offset: usize,
    pub shape: Vec<usize>,
}

impl Entry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Offsets of one layer's tensors (`None`: absent under this config).
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOffsets {
    pub ln1_w: usize,
    pub ln1_b: Option<usize>,
    pub wqkv: usize,
    pub bqkv: Option<usize>,
    pub wo: usize,
    pub bo: Option<usize>,
    pub ln2_w: usize,
    pub ln2_b: Option<usize>,
    pub w1: usize,
    pub b1: Option<usize>,
    pub w2: usize,
    pub b2: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub entries: Vec<Entry>,
    pub layers: Vec<LayerOffsets>,
    pub lnf_w: usize,
    pub lnf_b: Option<usize>,
    /// (d_model, vocab)
    pub lm_head: usize,
    /// (context, head_dim) each, with RoPE
    pub rope: Option<(usize, usize)>,
    pub total: usize,
}

impl Layout {
    pub fn new(c: &Config) -> Result<Layout> {
        c.validate()?;
        // Every size fits in usize with room to spare: the largest tensor is at most
        // max(dim)^2, and the total at most (6 n_layer + 8) of them.
        let largest = [c.vocab, c.context, c.d_model, c.hidden, c.qkv(), c.fc()].into_iter().max().unwrap_or(0);
        let room = largest
            .checked_mul(largest)
            .and_then(|m| m.checked_mul(c.n_layer.checked_mul(6)?.checked_add(8)?))
            .is_some();
        if !room {
            return Err(DecodeError::Config(format!(
                "sizes too large: n_layer={} and a dimension of {largest}",
                c.n_layer
            )));
        }
        let mut entries = Vec::new();
        let mut total = 0usize;
        let mut add = |name: String, shape: Vec<usize>| -> usize {
            let offset = total;
            total += shape.iter().product::<usize>();
            entries.push(Entry { name, offset, shape });
            offset
        };
        let d = c.d_model;
        let nb = c.norm_bias();
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let p = |s: &str| format!("layers.{i}.{s}");
            let ln1_w = add(p("ln1.weight"), vec![d]);
            let ln1_b = nb.then(|| add(p("ln1.bias"), vec![d]));
            let wqkv = add(p("wqkv"), vec![d, c.qkv()]);
            let bqkv = c.bias.then(|| add(p("bqkv"), vec![c.qkv()]));
            let wo = add(p("wo"), vec![d, d]);
            let bo = c.bias.then(|| add(p("bo"), vec![d]));
            let ln2_w = add(p("ln2.weight"), vec![d]);
            let ln2_b = nb.then(|| add(p("ln2.bias"), vec![d]));
            let w1 = add(p("w1"), vec![d, c.fc()]);
            let b1 = c.bias.then(|| add(p("b1"), vec![c.fc()]));
            let w2 = add(p("w2"), vec![c.hidden, d]);
            let b2 = c.bias.then(|| add(p("b2"), vec![d]));
            layers.push(LayerOffsets { ln1_w, ln1_b, wqkv, bqkv, wo, bo, ln2_w, ln2_b, w1, b1, w2, b2 });
        }
        let lnf_w = add("ln_f.weight".into(), vec![d]);
        let lnf_b = nb.then(|| add("ln_f.bias".into(), vec![d]));
        let lm_head = add("lm_head".into(), vec![d, c.vocab]);
        let rope = (c.positions == Positions::Rope).then(|| {
            let cos = add("rope.cos".into(), vec![c.context, c.head_dim]);
            (cos, add("rope.sin".into(), vec![c.context, c.head_dim]))
        });
        Ok(Layout { entries, layers, lnf_w, lnf_b, lm_head, rope, total })
    }
}
