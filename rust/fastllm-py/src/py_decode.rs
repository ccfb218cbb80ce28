//! Bindings for the CPU decode step: `_core.Decoder` (config, layout, borrowed weights) and
//! `_core.DecodeState` (one sequence's K/V). The Python side (`fastllm/decode.py`) fills the flat
//! weight buffer in the layout this module reports, keeps it alive, and decides when the step
//! applies (CPU, float32, one sequence). These signatures are private; where several arguments
//! share a type (the constructor's sizes, `load`'s layer and count, `step`'s token and position)
//! they are keyword-only, so a swap is a TypeError instead of a wrong model.
//!
//! The weights stay numpy views of torch tensors, borrowed read-only for the length of a step, so
//! the step shares memory with the torch decode path instead of holding a copy.

use decode::{kernels, Config, Mlp, Model, Norm, Positions, State, Weights};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadwriteArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::IntoPy;
use crate::pool;

type LayoutEntry = (String, usize, Vec<usize>);

#[pyclass(module = "fastllm._core", name = "Decoder")]
pub struct CoreDecoder {
    model: Model,
    flat: Option<Py<PyArray1<f32>>>,
    tok_emb: Option<Py<PyArray1<f32>>>,
    pos_emb: Option<Py<PyArray1<f32>>>,
}

#[pyclass(module = "fastllm._core", name = "DecodeState")]
pub struct CoreDecodeState {
    inner: State,
}

fn parse<T>(value: &str, name: &str, options: &[(&str, T)]) -> PyResult<T>
where
    T: Copy,
{
    options.iter().find(|(k, _)| *k == value).map(|(_, v)| *v).ok_or_else(|| {
        let known: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
        PyValueError::new_err(format!("{name} must be one of {known:?}, got {value:?}"))
    })
}

fn slice<'a>(a: &'a PyReadonlyArray1<'_, f32>, name: &str) -> PyResult<&'a [f32]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{name} must be a C-contiguous float32 array")))
}

/// A read-only borrow of a weight array: an error, not a panic, when something holds it mutably.
fn borrow<'py>(a: &Bound<'py, PyArray1<f32>>, name: &str) -> PyResult<PyReadonlyArray1<'py, f32>> {
    a.try_readonly().map_err(|e| PyValueError::new_err(format!("{name} is being written elsewhere: {e}")))
}

/// The step's weights from borrowed arrays.
fn weights<'a>(
    flat: &'a PyReadonlyArray1<'_, f32>,
    tok_emb: &'a PyReadonlyArray1<'_, f32>,
    pos_emb: Option<&'a PyReadonlyArray1<'_, f32>>,
) -> PyResult<Weights<'a>> {
    Ok(Weights {
        flat: slice(flat, "flat")?,
        tok_emb: slice(tok_emb, "tok_emb")?,
        pos_emb: match pos_emb {
            Some(p) => Some(slice(p, "pos_emb")?),
            None => None,
        },
    })
}

#[pymethods]
impl CoreDecoder {
    #[new]
    #[pyo3(signature = (
        *, vocab, context, n_layer, n_head, n_kv_head, head_dim, d_model, hidden, norm, eps, mlp, positions, bias
    ))]
    // pyo3 binds each keyword of the Python signature to one parameter: many, but all named.
    #[allow(clippy::too_many_arguments)]
    fn new(
        vocab: usize,
        context: usize,
        n_layer: usize,
        n_head: usize,
        n_kv_head: usize,
        head_dim: usize,
        d_model: usize,
        hidden: usize,
        norm: &str,
        eps: f32,
        mlp: &str,
        positions: &str,
        bias: bool,
    ) -> PyResult<Self> {
        let config = Config {
            vocab,
            context,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            d_model,
            hidden,
            norm: parse(norm, "norm", &[("layernorm", Norm::Layer), ("rmsnorm", Norm::Rms)])?,
            eps,
            mlp: parse(mlp, "mlp", &[("gelu", Mlp::Gelu), ("gelu_tanh", Mlp::GeluTanh), ("swiglu", Mlp::SwiGlu)])?,
            positions: parse(positions, "positions", &[("learned", Positions::Learned), ("rope", Positions::Rope)])?,
            bias,
        };
        Ok(CoreDecoder { model: Model::new(config).py_err()?, flat: None, tok_emb: None, pos_emb: None })
    }

    /// [(name, offset, shape)] of the flat weight buffer, in order.
    fn layout(&self) -> Vec<LayoutEntry> {
        self.model.layout.entries.iter().map(|e| (e.name.clone(), e.offset, e.shape.clone())).collect()
    }

    /// Floats in the flat weight buffer.
    #[getter]
    fn total(&self) -> usize {
        self.model.layout.total
    }

    /// Keeps references to the weights (1-D float32 views): the flat buffer, the token embedding
    /// (vocab * d_model) and the position embedding (context * d_model) with learned positions.
    #[pyo3(signature = (flat, tok_emb, pos_emb=None))]
    fn set_weights(
        &mut self,
        flat: Bound<'_, PyArray1<f32>>,
        tok_emb: Bound<'_, PyArray1<f32>>,
        pos_emb: Option<Bound<'_, PyArray1<f32>>>,
    ) -> PyResult<()> {
        {
            let (f, t) = (borrow(&flat, "flat")?, borrow(&tok_emb, "tok_emb")?);
            let p = pos_emb.as_ref().map(|p| borrow(p, "pos_emb")).transpose()?;
            self.model.check(&weights(&f, &t, p.as_ref())?).py_err()?;
        }
        self.flat = Some(flat.unbind());
        self.tok_emb = Some(tok_emb.unbind());
        self.pos_emb = pos_emb.map(Bound::unbind);
        Ok(())
    }

    /// An empty cache for up to `capacity` tokens.
    fn state(&self, capacity: usize) -> PyResult<CoreDecodeState> {
        Ok(CoreDecodeState { inner: self.model.state(capacity).py_err()? })
    }

    /// Copies `n` tokens of K and V of `layer`, each (n_kv_head, n, head_dim) flattened.
    #[pyo3(signature = (state, *, layer, k, v, n))]
    fn load(
        &self,
        mut state: PyRefMut<'_, CoreDecodeState>,
        layer: usize,
        k: PyReadonlyArray1<'_, f32>,
        v: PyReadonlyArray1<'_, f32>,
        n: usize,
    ) -> PyResult<()> {
        self.model.load(&mut state.inner, layer, slice(&k, "k")?, slice(&v, "v")?, n).py_err()
    }

    /// Makes the first `n` loaded slots visible.
    fn set_len(&self, mut state: PyRefMut<'_, CoreDecodeState>, n: usize) -> PyResult<()> {
        self.model.set_len(&mut state.inner, n).py_err()
    }

    /// Runs `token` at `position` (its K/V join `state`) on `num_threads` threads (1: the calling
    /// thread, no pool), without the GIL. Returns the argmax of the logits when `greedy`, else
    /// the logits as a new (vocab,) float32 array.
    #[pyo3(signature = (state, *, token, position, num_threads, greedy))]
    fn step<'py>(
        &self,
        py: Python<'py>,
        mut state: PyRefMut<'py, CoreDecodeState>,
        token: usize,
        position: usize,
        num_threads: usize,
        greedy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let missing = || PyValueError::new_err("set_weights was not called");
        let f = borrow(self.flat.as_ref().ok_or_else(missing)?.bind(py), "flat")?;
        let t = borrow(self.tok_emb.as_ref().ok_or_else(missing)?.bind(py), "tok_emb")?;
        let p = self.pos_emb.as_ref().map(|p| borrow(p.bind(py), "pos_emb")).transpose()?;
        let w = weights(&f, &t, p.as_ref())?;
        let st = &mut state.inner;
        let model = &self.model;
        if num_threads <= 1 {
            py.detach(|| model.step(&w, st, token, position, false)).py_err()?;
        } else {
            let pool = pool::pool(Some(num_threads))?;
            py.detach(|| pool.install(|| model.step(&w, st, token, position, true))).py_err()?;
        }
        if greedy {
            return Ok(st.argmax().into_pyobject(py)?.into_any());
        }
        Ok(PyArray1::from_slice(py, st.logits()).into_any())
    }
}

#[pymethods]
impl CoreDecodeState {
    /// Tokens held.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

/// GELU (tanh approximation) in place on a contiguous float32 array, with the decode step's
/// vectorised kernel: the batched torch decode step's GELU, where ATen's cost ~4 ns per element.
#[pyfunction]
pub fn gelu_tanh_(py: Python<'_>, mut x: PyReadwriteArrayDyn<'_, f32>) -> PyResult<()> {
    let v = x.as_slice_mut().map_err(|_| PyValueError::new_err("gelu_tanh_ needs a contiguous float32 array"))?;
    py.detach(|| kernels::gelu_tanh(v));
    Ok(())
}
