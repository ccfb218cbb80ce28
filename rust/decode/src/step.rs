//! `Model::step`: one new token of one sequence through every layer, reading and extending the
//! sequence's own K/V (`State`), ending in the logits over the vocabulary.
//!
//! The weights are borrowed per call (one flat buffer laid out by `Layout`, plus the token and
//! position embeddings), so the caller can keep them in memory it shares with other code paths.

use crate::config::{Config, Layout, Mlp, Norm, Positions};
use crate::error::{DecodeError, Result};
use crate::kernels;

/// The borrowed weights of one step.
pub struct Weights<'a> {
    /// The flat buffer of `Layout::total` floats.
    pub flat: &'a [f32],
    /// (vocab, d_model)
    pub tok_emb: &'a [f32],
    /// (context, d_model), with learned positions
    pub pos_emb: Option<&'a [f32]>,
}

/// A validated config and its layout.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: Config,
    pub layout: Layout,
}

/// One sequence's cache and the step's scratch rows.
#[derive(Debug, Clone)]
pub struct State {
    capacity: usize,
    len: usize,
    /// per layer (n_kv_head, head_dim, capacity): keys transposed (see `kernels::attend`)
    k: Vec<Vec<f32>>,
    /// per layer (n_kv_head, capacity, head_dim)
    v: Vec<Vec<f32>>,
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    y: Vec<f32>,
    delta: Vec<f32>,
    h: Vec<f32>,
    scores: Vec<f32>,
    /// the last step's logits
    logits: Vec<f32>,
}

impl State {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The logits (vocab) of the last `Model::step`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// The index of the largest of the last step's logits; the first one on ties, and the first
    /// NaN if there is one (torch.argmax's answer).
    pub fn argmax(&self) -> usize {
        let mut best = 0;
        for (i, &v) in self.logits.iter().enumerate() {
            if v.is_nan() {
                return i;
            }
            if v > self.logits[best] {
                best = i;
            }
        }
        best
    }
}

impl Model {
    pub fn new(config: Config) -> Result<Model> {
        let layout = Layout::new(&config)?;
        Ok(Model { config, layout })
    }

    /// An empty cache for up to `capacity` tokens (at most the context).
    pub fn state(&self, capacity: usize) -> Result<State> {
        let c = &self.config;
        if capacity == 0 || capacity > c.context {
            return Err(DecodeError::Config(format!("capacity={capacity} must be in [1, context={}]", c.context)));
        }
        let kv = c.n_kv_head * c.head_dim * capacity;
        Ok(State {
            capacity,
            len: 0,
            k: vec![vec![0.0; kv]; c.n_layer],
            v: vec![vec![0.0; kv]; c.n_layer],
            x: vec![0.0; c.d_model],
            normed: vec![0.0; c.d_model],
            qkv: vec![0.0; c.qkv()],
            y: vec![0.0; c.d_model],
            delta: vec![0.0; c.d_model],
            h: vec![0.0; c.fc()],
            scores: vec![0.0; capacity],
            logits: vec![0.0; c.vocab],
        })
    }

    /// Copies `n` cached tokens of `layer` into an empty-or-filling state: `k` and `v` are
    /// (n_kv_head, n, head_dim) row-major (what a prefill computed). After every layer is loaded,
    /// `set_len(n)` makes them visible.
    pub fn load(&self, state: &mut State, layer: usize, k: &[f32], v: &[f32], n: usize) -> Result<()> {
        let c = &self.config;
        if layer >= c.n_layer {
            return Err(DecodeError::Layer { layer, n_layer: c.n_layer });
        }
        if n > state.capacity {
            return Err(DecodeError::Full { capacity: state.capacity });
        }
        let (hk, d, cap) = (c.n_kv_head, c.head_dim, state.capacity);
        for (name, got) in [("k", k.len()), ("v", v.len())] {
            if got != hk * n * d {
                return Err(DecodeError::Size { name, got, expected: hk * n * d });
            }
        }
        let (sk, sv) = (&mut state.k[layer], &mut state.v[layer]);
        for g in 0..hk {
            for t in 0..n {
                let src = (g * n + t) * d;
                for i in 0..d {
                    sk[(g * d + i) * cap + t] = k[src + i];
                }
                sv[(g * cap + t) * d..(g * cap + t) * d + d].copy_from_slice(&v[src..src + d]);
            }
        }
        Ok(())
    }

    /// Declares the first `n` slots of every layer filled (after `load`).
    pub fn set_len(&self, state: &mut State, n: usize) -> Result<()> {
        if n > state.capacity {
            return Err(DecodeError::Full { capacity: state.capacity });
        }
        state.len = n;
        Ok(())
    }

    pub fn check(&self, w: &Weights<'_>) -> Result<()> {
        let c = &self.config;
        if w.flat.len() != self.layout.total {
            return Err(DecodeError::Size { name: "weights", got: w.flat.len(), expected: self.layout.total });
        }
        if w.tok_emb.len() != c.vocab * c.d_model {
            return Err(DecodeError::Size { name: "tok_emb", got: w.tok_emb.len(), expected: c.vocab * c.d_model });
        }
        match (c.positions, w.pos_emb) {
            (Positions::Learned, Some(p)) if p.len() != c.context * c.d_model => {
                Err(DecodeError::Size { name: "pos_emb", got: p.len(), expected: c.context * c.d_model })
            }
            (Positions::Learned, None) => {
                Err(DecodeError::Size { name: "pos_emb", got: 0, expected: c.context * c.d_model })
            }
            (Positions::Rope, Some(p)) => Err(DecodeError::Size { name: "pos_emb", got: p.len(), expected: 0 }),
            _ => Ok(()),
        }
    }

    /// Runs `token` at `position` through the model, appended to `state` as its next slot; the
    /// logits are then `state.logits()`. With `parallel` the matrix products split their columns
    /// over the current rayon pool (call it inside `ThreadPool::install`); the result is the same
    /// either way.
    pub fn step(
        &self,
        w: &Weights<'_>,
        state: &mut State,
        token: usize,
        position: usize,
        parallel: bool,
    ) -> Result<()> {
        let c = &self.config;
        let l = &self.layout;
        self.check(w)?;
        if token >= c.vocab {
            return Err(DecodeError::Token { token, vocab: c.vocab });
        }
        if position >= c.context {
            return Err(DecodeError::Position { position, context: c.context });
        }
        if state.len >= state.capacity {
            return Err(DecodeError::Full { capacity: state.capacity });
        }
        let f = w.flat;
        let at = |off: usize, n: usize| &f[off..off + n];
        let opt = |off: Option<usize>, n: usize| off.map(|o| &f[o..o + n]);
        let (d, hd, nh, nkv) = (c.d_model, c.head_dim, c.n_head, c.n_kv_head);
        let (cap, t) = (state.capacity, state.len);
        let State { k: ks, v: vs, x, normed, qkv, y, delta, h, scores, logits, .. } = state;

        x.copy_from_slice(&w.tok_emb[token * d..token * d + d]);
        if let Some(p) = w.pos_emb {
            for (xi, pi) in x.iter_mut().zip(&p[position * d..position * d + d]) {
                *xi += pi;
            }
        }
        let norm = |out: &mut [f32], x: &[f32], wo: usize, bo: Option<usize>| match c.norm {
            Norm::Layer => kernels::layer_norm(out, x, at(wo, d), opt(bo, d), c.eps),
            Norm::Rms => kernels::rms_norm(out, x, at(wo, d), c.eps),
        };
        let group = nh / nkv;
        for (li, lo) in l.layers.iter().enumerate() {
            // attention
            norm(normed, x, lo.ln1_w, lo.ln1_b);
            kernels::gemv(qkv, normed, at(lo.wqkv, d * c.qkv()), opt(lo.bqkv, c.qkv()), parallel);
            if let Some((cos, sin)) = l.rope {
                let (cs, sn) = (at(cos + position * hd, hd), at(sin + position * hd, hd));
                kernels::rope(&mut qkv[..(nh + nkv) * hd], hd, cs, sn);
            }
            let (q, kv) = qkv.split_at(nh * hd);
            let (k_new, v_new) = kv.split_at(nkv * hd);
            let (kc, vc) = (&mut ks[li], &mut vs[li]);
            for g in 0..nkv {
                for i in 0..hd {
                    kc[(g * hd + i) * cap + t] = k_new[g * hd + i];
                }
                vc[(g * cap + t) * hd..(g * cap + t) * hd + hd].copy_from_slice(&v_new[g * hd..g * hd + hd]);
            }
            for hq in 0..nh {
                let g = hq / group;
                kernels::attend(
                    &mut y[hq * hd..hq * hd + hd],
                    &q[hq * hd..hq * hd + hd],
                    &kc[g * hd * cap..(g + 1) * hd * cap],
                    &vc[g * cap * hd..(g + 1) * cap * hd],
                    cap,
                    t + 1,
                    scores,
                );
            }
            kernels::gemv(delta, y, at(lo.wo, d * d), opt(lo.bo, d), parallel);
            for (xi, di) in x.iter_mut().zip(delta.iter()) {
                *xi += di;
            }
            // MLP
            norm(normed, x, lo.ln2_w, lo.ln2_b);
            kernels::gemv(h, normed, at(lo.w1, d * c.fc()), opt(lo.b1, c.fc()), parallel);
            match c.mlp {
                Mlp::Gelu => kernels::gelu(h),
                Mlp::GeluTanh => kernels::gelu_tanh(h),
                Mlp::SwiGlu => kernels::swiglu(h),
            }
            kernels::gemv(delta, &h[..c.hidden], at(lo.w2, c.hidden * d), opt(lo.b2, d), parallel);
            for (xi, di) in x.iter_mut().zip(delta.iter()) {
                *xi += di;
            }
        }
        norm(normed, x, l.lnf_w, l.lnf_b);
        kernels::gemv(logits, normed, at(l.lm_head, d * c.vocab), None, parallel);
        state.len += 1;
        Ok(())
    }
}
