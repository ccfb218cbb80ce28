//! Where a decode step's time goes, for the bench model's shape (GPT-2 style, vocab 8192,
//! 6 layers, d_model 384): the whole step against its matrix products alone and a plain read of
//! the weights. `cargo run --release -p fastllm-decode --example step_profile`

use std::time::Instant;

use decode::{kernels, Config, Mlp, Model, Norm, Positions, Weights};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let c = Config {
        vocab: 8192,
        context: 512,
        n_layer: 6,
        n_head: 6,
        n_kv_head: 6,
        head_dim: 64,
        d_model: 384,
        hidden: 1536,
        norm: Norm::Layer,
        eps: 1e-5,
        mlp: Mlp::GeluTanh,
        positions: Positions::Learned,
        bias: true,
    };
    let model = Model::new(c.clone())?;
    let flat: Vec<f32> = (0..model.layout.total).map(|i| ((i * 2654435761) % 1000) as f32 * 1e-5 - 5e-3).collect();
    let tok: Vec<f32> = (0..c.vocab * c.d_model).map(|i| ((i * 40503) % 1000) as f32 * 1e-4).collect();
    let pos: Vec<f32> = vec![0.01; c.context * c.d_model];
    let w = Weights { flat: &flat, tok_emb: &tok, pos_emb: Some(&pos) };
    let steps = 128;
    let mut full = vec![];
    for _ in 0..7 {
        let mut st = model.state(512)?;
        let t = Instant::now();
        for i in 0..steps {
            model.step(&w, &mut st, i % c.vocab, i, false)?;
        }
        full.push(t.elapsed().as_secs_f64() / steps as f64);
    }
    let mats: Vec<(usize, usize, usize)> = model
        .layout
        .entries
        .iter()
        .filter(|e| e.shape.len() == 2 && !e.name.starts_with("rope"))
        .map(|e| (e.offset, e.shape[0], e.shape[1]))
        .collect();
    let x = vec![0.5f32; 2048];
    let mut y = vec![0.0f32; 8192];
    let mut gem = vec![];
    let mut read = vec![];
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..steps {
            for &(o, i, n) in &mats {
                kernels::gemv(&mut y[..n], &x[..i], &flat[o..o + i * n], None, false);
            }
        }
        gem.push(t.elapsed().as_secs_f64() / steps as f64);
        let t = Instant::now();
        let mut s = 0.0f32;
        for _ in 0..steps {
            for ch in flat.chunks_exact(16) {
                for (a, b) in y[..16].iter_mut().zip(ch) {
                    *a += b;
                }
            }
            s += y[3];
        }
        read.push(t.elapsed().as_secs_f64() / steps as f64);
        std::hint::black_box(s);
    }
    let mb = model.layout.total as f64 * 4.0 / 1e6;
    println!("weights {mb:.1} MB");
    for (name, v) in [("full step", full), ("gemvs only", gem), ("plain read", read)] {
        let m = median(v);
        println!("{name:>12}: {:.3} ms  ({:.1} GB/s)", m * 1e3, mb / m / 1e3);
    }
    // the pieces, per step (6 layers)
    // fresh inputs every call: GELU applied to its own output shrinks toward denormals
    let src: Vec<f32> = (0..1536).map(|i| ((i * 37) % 1000) as f32 * 6e-3 - 3.0).collect();
    let mut h = src.clone();
    let t = Instant::now();
    for _ in 0..steps {
        for _ in 0..6 {
            h.copy_from_slice(&src);
            kernels::gelu_tanh(&mut h);
        }
    }
    println!("gelu_tanh: {:.3} ms/step", t.elapsed().as_secs_f64() / steps as f64 * 1e3);
    let kt = vec![0.01f32; 64 * 512];
    let vv = vec![0.01f32; 512 * 64];
    let mut out = vec![0.0f32; 64];
    let mut sc = vec![0.0f32; 512];
    let t = Instant::now();
    for s in 0..steps {
        for _ in 0..36 {
            kernels::attend(&mut out, &x[..64], &kt, &vv, 512, 32 + s, &mut sc);
        }
    }
    println!("attend (36 heads, len 32..160): {:.3} ms/step", t.elapsed().as_secs_f64() / steps as f64 * 1e3);
    let mut o = vec![0.0f32; 384];
    let t = Instant::now();
    for _ in 0..steps {
        for _ in 0..13 {
            kernels::layer_norm(&mut o, &x[..384], &x[..384], Some(&x[..384]), 1e-5);
        }
    }
    println!("layer_norm x13: {:.3} ms/step", t.elapsed().as_secs_f64() / steps as f64 * 1e3);
    Ok(())
}

#[allow(dead_code)]
fn pieces() {}
