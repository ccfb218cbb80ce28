//! `Layout`, `Config::validate`, `Model::{state, load, set_len, step}` and `State::argmax` against
//! an f64 reference decoder written out here from the crate's documented semantics, plus the exact
//! properties: error variants, an errored call leaving the state as it was, thread-count
//! independence of the logits (bitwise), and argmax's tie and NaN rules.
//!
//! The reference reads every tensor by its `Layout` entry *name* (not through `LayerOffsets`), so a
//! step that reads the wrong tensor, head, position or cache slot disagrees with it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use decode::{Config, DecodeError, Layout, Mlp, Model, Norm, Positions, State, Weights};

mod common;
use common::Rng;
use proptest::prelude::*;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()
}

const THETA: f64 = 10000.0;

// ---------------------------------------------------------------------------------------------
// configs

/// A small GPT-2 style config: LayerNorm, learned positions, (tanh-)GELU, biases, MHA.
fn gpt2(vocab: usize, context: usize, n_layer: usize, n_head: usize, head_dim: usize, hidden: usize) -> Config {
    Config {
        vocab,
        context,
        n_layer,
        n_head,
        n_kv_head: n_head,
        head_dim,
        d_model: n_head * head_dim,
        hidden,
        norm: Norm::Layer,
        eps: 1e-5,
        mlp: Mlp::GeluTanh,
        positions: Positions::Learned,
        bias: true,
    }
}

/// A small Llama style config: RMSNorm, RoPE, SwiGLU, no biases, GQA.
fn llama(
    vocab: usize,
    context: usize,
    n_layer: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    hidden: usize,
) -> Config {
    Config {
        vocab,
        context,
        n_layer,
        n_head,
        n_kv_head,
        head_dim,
        d_model: n_head * head_dim,
        hidden,
        norm: Norm::Rms,
        eps: 1e-6,
        mlp: Mlp::SwiGlu,
        positions: Positions::Rope,
        bias: false,
    }
}

/// Small valid configs: GPT-2 style (0), Llama style (1) or every switch independent (2), with
/// d_model >= 8: LayerNorm over a few elements is ill-conditioned when they happen to be close
/// (over two, its output flips sign with x0 - x1), which would need a tolerance too loose to
/// catch anything. `any_config` has the tiny ones too (for the layout).
fn config() -> impl Strategy<Value = Config> {
    any_config().prop_filter("d_model >= 8", |c| c.d_model >= 8)
}

fn any_config() -> impl Strategy<Value = Config> {
    (
        0u8..3,
        (1usize..4, 1usize..4, 1usize..6, 1usize..24),
        (1usize..40, 4usize..12, 1usize..4),
        (any::<bool>(), any::<bool>(), 0u8..3, any::<bool>(), any::<bool>()),
        prop::sample::select(vec![1e-5f32, 1e-6, 1e-3]),
    )
        .prop_map(
            |(style, (n_kv, group, hd, hidden), (vocab, context, n_layer), (layer, rope, mlp, bias, gelu), eps)| {
                let mlp = [Mlp::Gelu, Mlp::GeluTanh, Mlp::SwiGlu][mlp as usize];
                match style {
                    0 => {
                        let mlp = if gelu { Mlp::Gelu } else { Mlp::GeluTanh };
                        Config { mlp, ..gpt2(vocab, context, n_layer, n_kv * group, hd, hidden) }
                    }
                    1 => llama(vocab, context, n_layer, n_kv * group, n_kv, 2 * hd, hidden),
                    _ => {
                        let positions = if rope { Positions::Rope } else { Positions::Learned };
                        let head_dim = if rope { 2 * hd } else { hd };
                        Config {
                            vocab,
                            context,
                            n_layer,
                            n_head: n_kv * group,
                            n_kv_head: n_kv,
                            head_dim,
                            d_model: n_kv * group * head_dim,
                            hidden,
                            norm: if layer { Norm::Layer } else { Norm::Rms },
                            eps,
                            mlp,
                            positions,
                            bias,
                        }
                    }
                }
            },
        )
}

// ---------------------------------------------------------------------------------------------
// weights

/// The weights of one model: the flat buffer, the embeddings.
struct Params {
    flat: Vec<f32>,
    tok_emb: Vec<f32>,
    pos_emb: Option<Vec<f32>>,
}

impl Params {
    fn weights(&self) -> Weights<'_> {
        Weights { flat: &self.flat, tok_emb: &self.tok_emb, pos_emb: self.pos_emb.as_deref() }
    }
}

/// Random weights at sensible scales (norm weights near 1, matrices ~ 1/sqrt(fan_in)), the RoPE
/// tables HF's way: cos/sin(pos * theta^(-2i/d)) for i < d/2, duplicated over the two halves.
fn params(m: &Model, seed: u64) -> Params {
    let c = &m.config;
    let mut rng = Rng(seed);
    let mut flat = vec![f32::NAN; m.layout.total];
    for e in &m.layout.entries {
        let dst = &mut flat[e.offset..e.offset + e.len()];
        let name = e.name.as_str();
        if name == "rope.cos" || name == "rope.sin" {
            let (ctx, hd) = (e.shape[0], e.shape[1]);
            for p in 0..ctx {
                for i in 0..hd {
                    let a = p as f64 * THETA.powf(-2.0 * (i % (hd / 2)) as f64 / hd as f64);
                    dst[p * hd + i] = if name == "rope.cos" { a.cos() } else { a.sin() } as f32;
                }
            }
        } else if name.ends_with(".weight") {
            dst.iter_mut().for_each(|v| *v = 1.0 + 0.3 * rng.unit());
        } else if e.shape.len() == 2 {
            let s = 1.5 / (e.shape[0] as f32).sqrt();
            dst.iter_mut().for_each(|v| *v = s * rng.unit());
        } else {
            dst.iter_mut().for_each(|v| *v = 0.2 * rng.unit());
        }
    }
    assert!(flat.iter().all(|v| v.is_finite()), "an entry left unfilled");
    let tok_emb = (0..c.vocab * c.d_model).map(|_| rng.unit()).collect();
    let pos_emb =
        (c.positions == Positions::Learned).then(|| (0..c.context * c.d_model).map(|_| 0.5 * rng.unit()).collect());
    Params { flat, tok_emb, pos_emb }
}

// ---------------------------------------------------------------------------------------------
// the f64 reference decoder

/// A matrix or vector from the flat buffer, by entry name, in f64.
struct Tensors {
    by_name: BTreeMap<String, (Vec<usize>, Vec<f64>)>,
}

impl Tensors {
    fn new(m: &Model, flat: &[f32]) -> Tensors {
        let by_name = m
            .layout
            .entries
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    (e.shape.clone(), flat[e.offset..e.offset + e.len()].iter().map(|&v| v as f64).collect()),
                )
            })
            .collect();
        Tensors { by_name }
    }

    fn get(&self, name: &str) -> &[f64] {
        &self.by_name[name].1
    }

    fn opt(&self, name: &str) -> Option<&[f64]> {
        self.by_name.get(name).map(|t| &t.1[..])
    }

    /// x W (+ b), W (in, out) row-major as the layout says.
    fn linear(&self, x: &[f64], w: &str, b: Option<&str>) -> Vec<f64> {
        let (shape, wv) = &self.by_name[w];
        let (inp, out) = (shape[0], shape[1]);
        assert_eq!(x.len(), inp);
        (0..out)
            .map(|j| {
                let s: f64 = (0..inp).map(|i| x[i] * wv[i * out + j]).sum();
                s + b.and_then(|b| self.opt(b)).map_or(0.0, |b| b[j])
            })
            .collect()
    }
}

fn norm(c: &Config, t: &Tensors, x: &[f64], prefix: &str) -> Vec<f64> {
    let n = x.len() as f64;
    let w = t.get(&format!("{prefix}.weight"));
    let eps = c.eps as f64;
    match c.norm {
        Norm::Layer => {
            let mean = x.iter().sum::<f64>() / n;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let b = t.opt(&format!("{prefix}.bias"));
            (0..x.len()).map(|i| (x[i] - mean) / (var + eps).sqrt() * w[i] + b.map_or(0.0, |b| b[i])).collect()
        }
        Norm::Rms => {
            let ms = x.iter().map(|v| v * v).sum::<f64>() / n;
            (0..x.len()).map(|i| x[i] / (ms + eps).sqrt() * w[i]).collect()
        }
    }
}

/// HF rotate_half RoPE on one head, with the table rows of `pos`.
fn rope(head: &mut [f64], cos: &[f64], sin: &[f64]) {
    let half = head.len() / 2;
    let rot: Vec<f64> = (0..head.len()).map(|i| if i < half { -head[i + half] } else { head[i - half] }).collect();
    for i in 0..head.len() {
        head[i] = head[i] * cos[i] + rot[i] * sin[i];
    }
}

/// One cached token of one KV head: (k after RoPE, v), head_dim each.
type Slot = (Vec<f64>, Vec<f64>);

/// The reference decoder: one sequence, token by token, its K/V cache in f64.
struct Reference<'a> {
    c: &'a Config,
    t: Tensors,
    p: &'a Params,
    /// per layer, per kv head, per cached token
    cache: Vec<Vec<Vec<Slot>>>,
}

impl<'a> Reference<'a> {
    fn new(m: &'a Model, p: &'a Params) -> Reference<'a> {
        let c = &m.config;
        Reference { c, t: Tensors::new(m, &p.flat), p, cache: vec![vec![Vec::new(); c.n_kv_head]; c.n_layer] }
    }

    /// The logits after appending `token` at `pos`.
    fn step(&mut self, token: usize, pos: usize) -> Vec<f64> {
        let (c, t) = (self.c, &self.t);
        let (d, hd, nh, nkv) = (c.d_model, c.head_dim, c.n_head, c.n_kv_head);
        let mut x: Vec<f64> = self.p.tok_emb[token * d..(token + 1) * d].iter().map(|&v| v as f64).collect();
        if let Some(pe) = &self.p.pos_emb {
            for (xi, &pi) in x.iter_mut().zip(&pe[pos * d..(pos + 1) * d]) {
                *xi += pi as f64;
            }
        }
        for l in 0..c.n_layer {
            let p = |s: &str| format!("layers.{l}.{s}");
            let h = norm(c, t, &x, &p("ln1"));
            let qkv = t.linear(&h, &p("wqkv"), Some(&p("bqkv")));
            assert_eq!(qkv.len(), (nh + 2 * nkv) * hd);
            let head = |i: usize| qkv[i * hd..(i + 1) * hd].to_vec();
            let mut q: Vec<Vec<f64>> = (0..nh).map(head).collect();
            let mut k: Vec<Vec<f64>> = (nh..nh + nkv).map(head).collect();
            let v: Vec<Vec<f64>> = (nh + nkv..nh + 2 * nkv).map(head).collect();
            if c.positions == Positions::Rope {
                let cos = &t.get("rope.cos")[pos * hd..(pos + 1) * hd];
                let sin = &t.get("rope.sin")[pos * hd..(pos + 1) * hd];
                q.iter_mut().chain(k.iter_mut()).for_each(|h| rope(h, cos, sin));
            }
            for g in 0..nkv {
                self.cache[l][g].push((k[g].clone(), v[g].clone()));
            }
            let mut y = Vec::with_capacity(d);
            for (hq, qh) in q.iter().enumerate() {
                let kv = &self.cache[l][hq / (nh / nkv)];
                let dot = |k: &[f64]| (0..hd).map(|i| qh[i] * k[i]).sum::<f64>();
                let s: Vec<f64> = kv.iter().map(|(k, _)| dot(k) / (hd as f64).sqrt()).collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                y.extend((0..hd).map(|i| kv.iter().zip(&e).map(|((_, v), e)| e / z * v[i]).sum::<f64>()));
            }
            let o = t.linear(&y, &p("wo"), Some(&p("bo")));
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let h = norm(c, t, &x, &p("ln2"));
            let f = t.linear(&h, &p("w1"), Some(&p("b1")));
            let a: Vec<f64> = match c.mlp {
                Mlp::Gelu => f.iter().map(|&u| 0.5 * u * (1.0 + libm::erf(u / std::f64::consts::SQRT_2))).collect(),
                Mlp::GeluTanh => {
                    let k = (2.0 / std::f64::consts::PI).sqrt();
                    f.iter().map(|&u| 0.5 * u * (1.0 + (k * (u + 0.044715 * u * u * u)).tanh())).collect()
                }
                Mlp::SwiGlu => {
                    let (gate, up) = f.split_at(c.hidden);
                    gate.iter().zip(up).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect()
                }
            };
            let o = t.linear(&a, &p("w2"), Some(&p("b2")));
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
        }
        let h = norm(c, t, &x, "ln_f");
        t.linear(&h, "lm_head", None)
    }

    /// One layer's first `n` cached tokens as `Model::load` takes them: (n_kv_head, n, head_dim).
    fn kv(&self, layer: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for g in &self.cache[layer] {
            for (kt, vt) in &g[..n] {
                k.extend(kt.iter().map(|&x| x as f32));
                v.extend(vt.iter().map(|&x| x as f32));
            }
        }
        (k, v)
    }
}

/// |logits - reference| within a relative tolerance of the reference's scale.
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= 2e-5 * scale, "{what}: logit {i} = {g}, want {w} (scale {scale})");
    }
}

/// How one sequence is run: `prompt` tokens prefilled by the reference and `load`ed, then `steps`
/// tokens stepped, in a state with `spare` slots beyond them (up to the context); token i sits at
/// position `pos0 + i` (a window that does not start at 0: the position is not the slot).
#[derive(Debug, Clone, Copy)]
struct Run {
    prompt: usize,
    steps: usize,
    spare: usize,
    pos0: usize,
}

impl Run {
    fn new(prompt: usize, steps: usize) -> Run {
        Run { prompt, steps, spare: 0, pos0: 0 }
    }
}

/// Runs `run` through the reference and the crate, comparing the logits at every step; returns
/// the steps' logits.
fn run_against_reference(c: &Config, seed: u64, run: Run) -> Vec<Vec<f32>> {
    let m = Model::new(c.clone()).unwrap();
    let p = params(&m, seed);
    let w = p.weights();
    let mut rng = Rng(seed ^ 0xDEAD_BEEF);
    let total = run.prompt + run.steps;
    assert!(run.pos0 + total <= c.context);
    let tokens: Vec<usize> = (0..total).map(|_| rng.below(c.vocab)).collect();
    let mut r = Reference::new(&m, &p);
    let want: Vec<Vec<f64>> = tokens.iter().enumerate().map(|(i, &tok)| r.step(tok, run.pos0 + i)).collect();

    let mut st = m.state((total + run.spare).min(c.context)).unwrap();
    for l in 0..c.n_layer {
        let (k, v) = r.kv(l, run.prompt);
        m.load(&mut st, l, &k, &v, run.prompt).unwrap();
    }
    m.set_len(&mut st, run.prompt).unwrap();
    assert_eq!(st.len(), run.prompt);
    let mut out = Vec::new();
    for i in run.prompt..total {
        m.step(&w, &mut st, tokens[i], run.pos0 + i, false).unwrap();
        assert_eq!(st.len(), i + 1);
        assert_close(st.logits(), &want[i], &format!("{c:?} {run:?} token {i}"));
        out.push(st.logits().to_vec());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn step_matches_the_f64_reference(c in config(), seed in any::<u64>(), steps in 1usize..5, spare in 0usize..3,
                                      prompt_frac in 0.0f64..1.0, pos0_frac in 0.0f64..1.0, shifted in any::<bool>()) {
        let steps = steps.min(c.context);
        let prompt = ((((c.context - steps) as f64) * prompt_frac) as usize).min(3);
        let pos0 = if shifted { ((c.context - steps - prompt) as f64 * pos0_frac) as usize } else { 0 };
        run_against_reference(&c, seed, Run { prompt, steps, spare, pos0 });
    }
}

#[test]
fn step_matches_the_reference_on_fixed_configs() {
    // MHA with every switch of GPT-2; GQA 4:2 and 4:1 with every switch of Llama; to the context
    let g = gpt2(50, 10, 2, 2, 4, 16);
    run_against_reference(&g, 1, Run::new(3, 7));
    run_against_reference(&Config { mlp: Mlp::Gelu, ..g.clone() }, 2, Run::new(0, 10));
    run_against_reference(&Config { bias: false, ..g.clone() }, 3, Run::new(5, 5));
    run_against_reference(&g, 6, Run { pos0: 4, spare: 4, ..Run::new(2, 4) });
    let l = llama(50, 10, 2, 4, 2, 4, 12);
    run_against_reference(&l, 4, Run::new(3, 7));
    run_against_reference(&llama(50, 10, 1, 4, 1, 6, 12), 5, Run::new(0, 10));
    run_against_reference(&l, 7, Run { pos0: 5, ..Run::new(1, 4) });
}

#[test]
fn a_loaded_prompt_gives_the_logits_of_stepping_it() {
    // the same sequence stepped from empty and resumed from a loaded prompt agree (both against
    // the reference, and with each other to f32 rounding of the loaded K/V)
    for c in [gpt2(30, 8, 2, 2, 4, 10), llama(30, 8, 2, 4, 2, 4, 10)] {
        let full = run_against_reference(&c, 11, Run::new(0, 8));
        let resumed = run_against_reference(&c, 11, Run::new(5, 3));
        for (a, b) in full[5..].iter().zip(&resumed) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// determinism over thread counts

#[test]
fn parallel_steps_are_bitwise_serial_steps() {
    // vocab, hidden (and in the last, qkv) at or above 1024 columns: those products take the
    // parallel branch
    let configs = [
        gpt2(1536, 8, 2, 4, 8, 1100),
        llama(1100, 8, 2, 4, 2, 8, 1030),
        Config { mlp: Mlp::Gelu, ..gpt2(1024, 8, 1, 16, 32, 1024) },
    ];
    let pools = [pool(2), pool(3)];
    for c in configs {
        let m = Model::new(c.clone()).unwrap();
        let p = params(&m, 99);
        let w = p.weights();
        let tokens = [3usize, 1000, 7, 512, 0, 1023];
        let mut serial = m.state(c.context).unwrap();
        let mut par: Vec<State> = pools.iter().map(|_| m.state(c.context).unwrap()).collect();
        let mut r = Reference::new(&m, &p);
        for (pos, &tok) in tokens.iter().enumerate() {
            m.step(&w, &mut serial, tok, pos, false).unwrap();
            assert_close(serial.logits(), &r.step(tok, pos), "serial");
            for (pl, st) in pools.iter().zip(par.iter_mut()) {
                pl.install(|| m.step(&w, st, tok, pos, true)).unwrap();
                assert_eq!(
                    bits(st.logits()),
                    bits(serial.logits()),
                    "{c:?}: pos {pos}, {} threads",
                    pl.current_num_threads()
                );
                assert_eq!(st.argmax(), serial.argmax());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// layout

/// The entries a config must have: name -> shape.
fn expected_entries(c: &Config) -> BTreeMap<String, Vec<usize>> {
    let mut e = BTreeMap::new();
    let d = c.d_model;
    let qkv = (c.n_head + 2 * c.n_kv_head) * c.head_dim;
    let fc = if c.mlp == Mlp::SwiGlu { 2 * c.hidden } else { c.hidden };
    let nb = c.bias && c.norm == Norm::Layer;
    let mut add = |n: String, s: Vec<usize>, present: bool| {
        if present {
            assert!(e.insert(n, s).is_none());
        }
    };
    for l in 0..c.n_layer {
        let p = |s: &str| format!("layers.{l}.{s}");
        add(p("ln1.weight"), vec![d], true);
        add(p("ln1.bias"), vec![d], nb);
        add(p("wqkv"), vec![d, qkv], true);
        add(p("bqkv"), vec![qkv], c.bias);
        add(p("wo"), vec![d, d], true);
        add(p("bo"), vec![d], c.bias);
        add(p("ln2.weight"), vec![d], true);
        add(p("ln2.bias"), vec![d], nb);
        add(p("w1"), vec![d, fc], true);
        add(p("b1"), vec![fc], c.bias);
        add(p("w2"), vec![c.hidden, d], true);
        add(p("b2"), vec![d], c.bias);
    }
    add("ln_f.weight".into(), vec![d], true);
    add("ln_f.bias".into(), vec![d], nb);
    add("lm_head".into(), vec![d, c.vocab], true);
    add("rope.cos".into(), vec![c.context, c.head_dim], c.positions == Positions::Rope);
    add("rope.sin".into(), vec![c.context, c.head_dim], c.positions == Positions::Rope);
    e
}

fn check_layout(c: &Config, l: &Layout) {
    // contiguous from 0, in order, non-overlapping, summing to the total
    let mut end = 0;
    for e in &l.entries {
        assert_eq!(e.offset, end, "{} does not start where the previous entry ends", e.name);
        assert!(!e.is_empty() && e.len() == e.shape.iter().product::<usize>(), "{}", e.name);
        end += e.len();
    }
    assert_eq!(end, l.total);
    assert_eq!(l.entries.iter().map(|e| e.len()).sum::<usize>(), l.total);
    let names: BTreeSet<&str> = l.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.len(), l.entries.len(), "duplicate names");
    // exactly the expected tensors, with their shapes
    let got: BTreeMap<String, Vec<usize>> = l.entries.iter().map(|e| (e.name.clone(), e.shape.clone())).collect();
    assert_eq!(got, expected_entries(c), "{c:?}");
    // the typed offsets agree with the named entries
    let off = |n: &str| l.entries.iter().find(|e| e.name == n).map(|e| e.offset);
    assert_eq!(l.layers.len(), c.n_layer);
    for (i, lo) in l.layers.iter().enumerate() {
        let p = |s: &str| off(&format!("layers.{i}.{s}"));
        assert_eq!(Some(lo.ln1_w), p("ln1.weight"));
        assert_eq!(lo.ln1_b, p("ln1.bias"));
        assert_eq!(Some(lo.wqkv), p("wqkv"));
        assert_eq!(lo.bqkv, p("bqkv"));
        assert_eq!(Some(lo.wo), p("wo"));
        assert_eq!(lo.bo, p("bo"));
        assert_eq!(Some(lo.ln2_w), p("ln2.weight"));
        assert_eq!(lo.ln2_b, p("ln2.bias"));
        assert_eq!(Some(lo.w1), p("w1"));
        assert_eq!(lo.b1, p("b1"));
        assert_eq!(Some(lo.w2), p("w2"));
        assert_eq!(lo.b2, p("b2"));
    }
    assert_eq!(Some(l.lnf_w), off("ln_f.weight"));
    assert_eq!(l.lnf_b, off("ln_f.bias"));
    assert_eq!(Some(l.lm_head), off("lm_head"));
    assert_eq!(l.rope.map(|r| r.0), off("rope.cos"));
    assert_eq!(l.rope.map(|r| r.1), off("rope.sin"));
    // closed-form total
    let d = c.d_model;
    let nb = (c.bias && c.norm == Norm::Layer) as usize;
    let (qkv, fc) = (c.qkv(), c.fc());
    let per_layer = 2 * d * (1 + nb) + d * qkv + d * d + d * fc + c.hidden * d + c.bias as usize * (qkv + d + fc + d);
    let rope = if c.positions == Positions::Rope { 2 * c.context * c.head_dim } else { 0 };
    assert_eq!(l.total, c.n_layer * per_layer + d * (1 + nb) + d * c.vocab + rope);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn layout_is_contiguous_and_follows_the_switches(c in any_config()) {
        prop_assert_eq!(c.qkv(), (c.n_head + 2 * c.n_kv_head) * c.head_dim);
        prop_assert_eq!(c.fc(), if c.mlp == Mlp::SwiGlu { 2 * c.hidden } else { c.hidden });
        let l = Layout::new(&c).unwrap();
        check_layout(&c, &l);
        let m = Model::new(c.clone()).unwrap();
        prop_assert_eq!(m.layout.entries, l.entries);
    }
}

#[test]
fn layout_bias_entries_by_switch() {
    let names = |c: &Config| Layout::new(c).unwrap().entries.into_iter().map(|e| e.name).collect::<Vec<_>>();
    let g = gpt2(10, 4, 1, 2, 2, 8);
    // LayerNorm with bias: norm biases and linear biases
    let n = names(&g);
    assert!(n.contains(&"layers.0.ln1.bias".to_string()) && n.contains(&"ln_f.bias".to_string()));
    assert!(n.contains(&"layers.0.bqkv".to_string()) && n.contains(&"layers.0.b2".to_string()));
    assert!(!n.iter().any(|s| s.starts_with("rope")));
    // LayerNorm without bias: none
    let n = names(&Config { bias: false, ..g.clone() });
    let is_bias = |s: &String| s.contains("bias") || [".bqkv", ".bo", ".b1", ".b2"].iter().any(|b| s.ends_with(b));
    assert!(!n.iter().any(is_bias), "{n:?}");
    // RMSNorm with linear biases: no norm biases
    let n = names(&Config { norm: Norm::Rms, ..g });
    assert!(!n.iter().any(|s| s.ends_with(".bias")), "{n:?}");
    assert!(n.contains(&"layers.0.bqkv".to_string()));
    // Llama: RoPE tables last, nothing else extra
    let c = llama(10, 4, 1, 2, 1, 4, 8);
    let l = Layout::new(&c).unwrap();
    let k = l.entries.len();
    assert_eq!(l.entries[k - 2].name, "rope.cos");
    assert_eq!(l.entries[k - 1].name, "rope.sin");
    assert_eq!(l.entries[k - 1].shape, vec![4, 4]);
    // six per layer (no biases), then ln_f.weight, lm_head and the two tables
    assert_eq!(l.entries.len(), 6 + 4, "{:?}", l.entries);
}

// ---------------------------------------------------------------------------------------------
// config validation

#[test]
fn invalid_configs_are_config_errors() {
    let base = llama(16, 8, 2, 4, 2, 4, 8);
    assert_eq!(base.validate(), Ok(()));
    let mut bad: Vec<(&str, Config)> = vec![
        ("vocab 0", Config { vocab: 0, ..base.clone() }),
        ("context 0", Config { context: 0, ..base.clone() }),
        ("n_layer 0", Config { n_layer: 0, ..base.clone() }),
        ("n_head 0", Config { n_head: 0, d_model: 0, ..base.clone() }),
        ("n_head 0 alone", Config { n_head: 0, ..base.clone() }),
        ("n_kv_head 0", Config { n_kv_head: 0, ..base.clone() }),
        ("head_dim 0", Config { head_dim: 0, ..base.clone() }),
        ("d_model 0", Config { d_model: 0, ..base.clone() }),
        ("hidden 0", Config { hidden: 0, ..base.clone() }),
        ("n_kv_head 4 of 6", Config { n_head: 6, n_kv_head: 4, d_model: 24, ..base.clone() }),
        ("n_kv_head above n_head", Config { n_kv_head: 8, ..base.clone() }),
        ("n_head * head_dim != d_model", Config { d_model: 17, ..base.clone() }),
        (
            "n_head * head_dim != d_model, learned",
            Config { d_model: 15, positions: Positions::Learned, ..base.clone() },
        ),
        ("odd head_dim with RoPE", Config { head_dim: 3, d_model: 12, ..base.clone() }),
        ("eps 0", Config { eps: 0.0, ..base.clone() }),
        ("eps -0", Config { eps: -0.0, ..base.clone() }),
        ("eps < 0", Config { eps: -1e-5, ..base.clone() }),
        ("eps NaN", Config { eps: f32::NAN, ..base.clone() }),
        ("eps inf", Config { eps: f32::INFINITY, ..base.clone() }),
    ];
    for field in 0..8 {
        // every size zero in a GPT-2 config too
        let mut c = gpt2(16, 8, 2, 4, 4, 8);
        let sizes = [&mut c.vocab, &mut c.context, &mut c.n_layer, &mut c.n_head];
        let more = [&mut c.n_kv_head, &mut c.head_dim, &mut c.d_model, &mut c.hidden];
        *sizes.into_iter().chain(more).nth(field).unwrap() = 0;
        bad.push(("gpt2 zero size", c));
    }
    for (what, c) in bad {
        assert!(matches!(c.validate(), Err(DecodeError::Config(_))), "{what}: {:?}", c.validate());
        assert!(matches!(Layout::new(&c), Err(DecodeError::Config(_))), "{what}");
        assert!(matches!(Model::new(c.clone()), Err(DecodeError::Config(_))), "{what}");
    }
    // and the neighbours that are fine
    for c in [
        Config { head_dim: 3, d_model: 12, positions: Positions::Learned, ..base.clone() },
        Config { n_kv_head: 1, ..base.clone() },
        Config { n_kv_head: 4, ..base.clone() },
        Config { eps: f32::MIN_POSITIVE, ..base.clone() },
        gpt2(1, 1, 1, 1, 1, 1),
    ] {
        assert_eq!(c.validate(), Ok(()), "{c:?}");
    }
}

#[test]
fn validate_rejects_sizes_whose_product_overflows() {
    // n_head * head_dim = 2^64 + 2, which wraps to d_model = 2
    let c = Config { n_head: (1usize << 63) + 1, n_kv_head: 1, head_dim: 2, d_model: 2, ..gpt2(4, 4, 1, 1, 2, 4) };
    let r = std::panic::catch_unwind(|| c.validate());
    assert!(matches!(r, Ok(Err(DecodeError::Config(_)))), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// argmax

/// A model whose every layer adds zero (all matrices and biases zero), so the final normed row is
/// tok_emb[0] / rms = (positive, 0, 0, ...) and logit j is exactly that positive number times
/// lm_head[0][j]: argmax sees `values` scaled by a positive constant (order and ties kept).
fn logits_of(values: &[f32]) -> State {
    let c = Config { mlp: Mlp::SwiGlu, norm: Norm::Rms, bias: false, ..gpt2(values.len(), 2, 1, 1, 4, 4) };
    let m = Model::new(c.clone()).unwrap();
    let mut flat = vec![0.0f32; m.layout.total];
    flat[m.layout.lnf_w..m.layout.lnf_w + 4].fill(1.0);
    flat[m.layout.lm_head..m.layout.lm_head + values.len()].copy_from_slice(values);
    let mut tok_emb = vec![0.0f32; c.vocab * 4];
    tok_emb[0] = 0.75;
    let pos = vec![0.0f32; 2 * 4];
    let w = Weights { flat: &flat, tok_emb: &tok_emb, pos_emb: Some(&pos) };
    let mut st = m.state(1).unwrap();
    m.step(&w, &mut st, 0, 0, false).unwrap();
    st
}

/// Logits from a few values, repeated (ties), NaN and the infinities.
fn logit() -> impl Strategy<Value = f32> {
    prop::sample::select(vec![-2.0f32, -0.5, 0.0, 1.0, 1.0, 3.0, 3.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY])
}

/// torch.argmax on a row: the first NaN, else the first maximum.
fn argmax_ref(v: &[f32]) -> usize {
    if let Some(i) = v.iter().position(|x| x.is_nan()) {
        return i;
    }
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[test]
fn argmax_takes_the_first_of_tied_maxima() {
    let st = logits_of(&[-1.0, 2.0, 0.5, 2.0, 2.0, 1.0]);
    let l = st.logits();
    assert!(l[1] > 0.0 && l[1] == l[3] && l[3] == l[4] && l[1] > l[5], "{l:?}");
    assert_eq!(st.argmax(), 1);
    assert_eq!(logits_of(&[3.0, 3.0]).argmax(), 0);
    assert_eq!(logits_of(&[-3.0, -3.0, -3.0]).argmax(), 0);
    assert_eq!(logits_of(&[0.0]).argmax(), 0);
    assert_eq!(logits_of(&[1.0, f32::INFINITY, 2.0, f32::INFINITY]).argmax(), 1);
    assert_eq!(logits_of(&[f32::NEG_INFINITY, f32::NEG_INFINITY]).argmax(), 0);
    assert_eq!(logits_of(&[f32::NEG_INFINITY, -1e30, -1e30]).argmax(), 1);
}

#[test]
fn argmax_returns_the_first_nan() {
    let st = logits_of(&[-1.0, 2.0, 0.5, f32::NAN, 9.0, f32::NAN]);
    assert!(st.logits()[3].is_nan() && st.logits()[5].is_nan());
    assert_eq!(st.argmax(), 3);
    assert_eq!(logits_of(&[f32::NAN, 1.0]).argmax(), 0);
    assert_eq!(logits_of(&[5.0, 1.0, f32::NAN]).argmax(), 2);
    assert_eq!(logits_of(&[f32::INFINITY, f32::NAN]).argmax(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn argmax_is_torchs(values in prop::collection::vec(logit(), 1..24)) {
        let st = logits_of(&values);
        // the logits keep the values' order, ties and NaNs
        prop_assert_eq!(argmax_ref(st.logits()), argmax_ref(&values));
        prop_assert_eq!(st.argmax(), argmax_ref(&values));
    }
}

// ---------------------------------------------------------------------------------------------
// errors

/// A state that is a copy of `st` in every field (`State` is Debug over all its fields).
fn snapshot(st: &State) -> String {
    format!("{st:?}")
}

#[test]
fn step_errors_leave_the_state_as_it_was() {
    for c in [gpt2(20, 6, 2, 2, 4, 8), llama(20, 6, 2, 4, 2, 4, 8)] {
        let m = Model::new(c.clone()).unwrap();
        let p = params(&m, 5);
        let w = p.weights();
        let mut st = m.state(4).unwrap();
        assert_eq!((st.len(), st.capacity(), st.is_empty()), (0, 4, true));
        m.step(&w, &mut st, 3, 0, false).unwrap();
        m.step(&w, &mut st, 4, 1, false).unwrap();
        assert_eq!((st.len(), st.is_empty()), (2, false));
        let before = snapshot(&st);

        assert_eq!(m.step(&w, &mut st, 20, 2, false), Err(DecodeError::Token { token: 20, vocab: 20 }));
        assert_eq!(m.step(&w, &mut st, usize::MAX, 2, false), Err(DecodeError::Token { token: usize::MAX, vocab: 20 }));
        assert_eq!(m.step(&w, &mut st, 0, 6, false), Err(DecodeError::Position { position: 6, context: 6 }));
        assert_eq!(
            m.step(&w, &mut st, 0, usize::MAX, false),
            Err(DecodeError::Position { position: usize::MAX, context: 6 })
        );

        let short = &p.flat[..p.flat.len() - 1];
        let e = m.step(&Weights { flat: short, ..p.weights() }, &mut st, 0, 2, false);
        assert_eq!(e, Err(DecodeError::Size { name: "weights", got: m.layout.total - 1, expected: m.layout.total }));
        let mut long = p.flat.clone();
        long.push(0.0);
        let e = m.step(&Weights { flat: &long, ..p.weights() }, &mut st, 0, 2, false);
        assert!(matches!(e, Err(DecodeError::Size { name: "weights", .. })), "{e:?}");
        let e = m.step(&Weights { tok_emb: &p.tok_emb[1..], ..p.weights() }, &mut st, 0, 2, false);
        assert_eq!(e, Err(DecodeError::Size { name: "tok_emb", got: 20 * c.d_model - 1, expected: 20 * c.d_model }));
        let mut tok_long = p.tok_emb.clone();
        tok_long.extend(vec![0.0; c.d_model]);
        let e = m.step(&Weights { tok_emb: &tok_long, ..p.weights() }, &mut st, 0, 2, false);
        assert_eq!(e, Err(DecodeError::Size { name: "tok_emb", got: 21 * c.d_model, expected: 20 * c.d_model }));
        if c.positions == Positions::Learned {
            let pe = p.pos_emb.as_deref().unwrap();
            let e =
                m.step(&Weights { pos_emb: Some(&pe[..pe.len() - c.d_model]), ..p.weights() }, &mut st, 0, 2, false);
            assert_eq!(e, Err(DecodeError::Size { name: "pos_emb", got: 5 * c.d_model, expected: 6 * c.d_model }));
            let mut pos_long = pe.to_vec();
            pos_long.push(0.0);
            let e = m.step(&Weights { pos_emb: Some(&pos_long), ..p.weights() }, &mut st, 0, 2, false);
            assert_eq!(e, Err(DecodeError::Size { name: "pos_emb", got: 6 * c.d_model + 1, expected: 6 * c.d_model }));
            let e = m.step(&Weights { pos_emb: None, ..p.weights() }, &mut st, 0, 2, false);
            assert_eq!(e, Err(DecodeError::Size { name: "pos_emb", got: 0, expected: 6 * c.d_model }));
        }
        assert_eq!(snapshot(&st), before, "an errored step changed the state");

        // fill it, then one more is Full and changes nothing
        m.step(&w, &mut st, 5, 2, false).unwrap();
        m.step(&w, &mut st, 6, 3, false).unwrap();
        assert_eq!(st.len(), 4);
        let full = snapshot(&st);
        assert_eq!(m.step(&w, &mut st, 7, 4, false), Err(DecodeError::Full { capacity: 4 }));
        assert_eq!(st.len(), 4);
        assert_eq!(snapshot(&st), full);
        // and the same step on a roomier state works (a full state is the only reason)
        let mut roomy = m.state(6).unwrap();
        for (pos, tok) in [3, 4, 5, 6, 7].into_iter().enumerate() {
            m.step(&w, &mut roomy, tok, pos, false).unwrap();
        }
        assert_eq!(roomy.len(), 5);
    }
}

#[test]
fn state_capacity_must_be_within_the_context() {
    let m = Model::new(gpt2(8, 5, 1, 1, 2, 4)).unwrap();
    assert!(matches!(m.state(0), Err(DecodeError::Config(_))));
    assert!(matches!(m.state(6), Err(DecodeError::Config(_))));
    assert!(matches!(m.state(usize::MAX), Err(DecodeError::Config(_))));
    for cap in 1..=5 {
        let st = m.state(cap).unwrap();
        assert_eq!((st.capacity(), st.len(), st.logits().len()), (cap, 0, 8));
    }
}

#[test]
fn load_and_set_len_errors() {
    let c = llama(10, 8, 2, 4, 2, 4, 8);
    let m = Model::new(c).unwrap();
    let mut st = m.state(5).unwrap();
    let kv = |n: usize| vec![0.25f32; 2 * n * 4];
    let before = snapshot(&st);
    assert_eq!(m.load(&mut st, 2, &kv(3), &kv(3), 3), Err(DecodeError::Layer { layer: 2, n_layer: 2 }));
    assert_eq!(
        m.load(&mut st, usize::MAX, &kv(3), &kv(3), 3),
        Err(DecodeError::Layer { layer: usize::MAX, n_layer: 2 })
    );
    assert_eq!(m.load(&mut st, 0, &kv(3)[1..], &kv(3), 3), Err(DecodeError::Size { name: "k", got: 23, expected: 24 }));
    assert_eq!(m.load(&mut st, 0, &kv(3), &kv(4), 3), Err(DecodeError::Size { name: "v", got: 32, expected: 24 }));
    assert_eq!(m.load(&mut st, 1, &kv(3), &kv(3), 2), Err(DecodeError::Size { name: "k", got: 24, expected: 16 }));
    assert_eq!(m.load(&mut st, 0, &kv(6), &kv(6), 6), Err(DecodeError::Full { capacity: 5 }));
    assert_eq!(m.set_len(&mut st, 6), Err(DecodeError::Full { capacity: 5 }));
    assert_eq!(snapshot(&st), before, "an errored load changed the state");
    m.load(&mut st, 0, &kv(5), &kv(5), 5).unwrap();
    m.load(&mut st, 1, &[], &[], 0).unwrap();
    m.set_len(&mut st, 5).unwrap();
    assert_eq!(st.len(), 5);
    m.set_len(&mut st, 0).unwrap();
    assert!(st.is_empty());
}

#[test]
fn a_rope_model_rejects_or_ignores_a_stray_pos_emb() {
    let c = llama(10, 8, 1, 2, 1, 4, 8);
    let m = Model::new(c).unwrap();
    let p = params(&m, 1);
    let mut good = m.state(2).unwrap();
    m.step(&p.weights(), &mut good, 1, 0, false).unwrap();
    let stray = [1.0f32; 3];
    let mut st = m.state(2).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.step(&Weights { pos_emb: Some(&stray), ..p.weights() }, &mut st, 1, 0, false)
    }));
    match r {
        Err(_) => panic!("step panicked on a pos_emb of 3 floats for a RoPE model"),
        Ok(Err(e)) => assert!(matches!(e, DecodeError::Size { name: "pos_emb", .. }), "{e:?}"),
        Ok(Ok(())) => assert_eq!(bits(st.logits()), bits(good.logits()), "the stray pos_emb was used"),
    }
}
