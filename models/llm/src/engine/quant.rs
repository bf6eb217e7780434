//! Weight matrices as the forward pass holds them, activations quantized per 32 values, and the
//! dot products between them, with AVX2 kernels chosen at run time and portable ones beside them.
//!
//! Written by hand because candle 0.11 has no SIMD kernel for Q4_1 (its scalar
//! `BlockQ4_1::vec_dot_unopt` took 86 % of a SmolLM2 generation in `perf`) and no batched
//! quantized matmul for prompts. The arithmetic is GGML's: a Q4_1 block is 32 four-bit values
//! `q` with a scale `d` and an offset `m` (value `d * q + m`); Q4_0 (`d * (q - 8)`) is held as
//! Q4_1 with `m = -8 d`, which is exact; a Q8_0 block is 32 signed bytes with a scale.
//! Activations are quantized like GGML's Q8_1 (signed bytes, `d = max |x| / 127`, `s = d * sum
//! q`), so `sum(w * x) = d_w d_x sum(q_w q_x) + m_w s_x` per block. Scales are held as f32
//! (GGML keeps f16): 4 more bytes per block, no conversion in the inner loop.
//!
//! `unsafe` is allowed here only for `std::arch` intrinsics behind a run-time AVX2/FMA check.
#![allow(unsafe_code)]

/// Values per quantized block.
pub const QK: usize = 32;

/// 32 four-bit weights: value `d * q + m`; `qs[j]` holds element `j` in its low nibble and
/// element `j + 16` in its high nibble, as GGML stores them.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f32,
    /// Offset.
    pub m: f32,
    /// Packed nibbles.
    pub qs: [u8; 16],
}

/// 32 eight-bit weights: value `d * q`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f32,
    /// Values.
    pub qs: [i8; QK],
}

/// 32 activations quantized to signed bytes: value `d * q`; `s = d * sum(q)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f32,
    /// `d` times the sum of `qs`.
    pub s: f32,
    /// Values.
    pub qs: [i8; QK],
}

impl Default for BlockQ8_1 {
    fn default() -> Self {
        Self {
            d: 0.0,
            s: 0.0,
            qs: [0; QK],
        }
    }
}

/// How a matrix's values are held.
#[derive(Debug, Clone)]
pub enum MatrixData {
    /// Four-bit blocks, `rows * cols / 32` of them, row-major.
    Q4_1(Vec<BlockQ4_1>),
    /// Eight-bit blocks, row-major.
    Q8_0(Vec<BlockQ8_0>),
    /// Plain values, row-major.
    F32(Vec<f32>),
}

/// A `rows x cols` weight matrix (rows are output features): `y = W x`.
#[derive(Debug, Clone)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: MatrixData,
}

impl Matrix {
    /// A matrix from its values; `None` when the length does not match or a quantized `cols` is
    /// not a multiple of 32.
    pub fn new(rows: usize, cols: usize, data: MatrixData) -> Option<Self> {
        let n = rows.checked_mul(cols)?;
        let ok = match &data {
            MatrixData::Q4_1(b) => cols.is_multiple_of(QK) && b.len() == n / QK,
            MatrixData::Q8_0(b) => cols.is_multiple_of(QK) && b.len() == n / QK,
            MatrixData::F32(v) => v.len() == n,
        };
        ok.then_some(Self { rows, cols, data })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values.
    pub fn data(&self) -> &MatrixData {
        &self.data
    }

    /// GGML's name of the format the values are held in.
    pub fn type_name(&self) -> &'static str {
        match self.data {
            MatrixData::Q4_1(_) => "Q4_1",
            MatrixData::Q8_0(_) => "Q8_0",
            MatrixData::F32(_) => "F32",
        }
    }

    /// Whether a product with this matrix needs the quantized activations.
    pub fn wants_quantized(&self) -> bool {
        !matches!(self.data, MatrixData::F32(_))
    }

    /// Row `r` as f32 values into `out` (`cols` long).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let per = self.cols / QK;
        match &self.data {
            MatrixData::Q4_1(b) => {
                for (block, chunk) in b[r * per..(r + 1) * per].iter().zip(out.chunks_mut(QK)) {
                    for j in 0..16 {
                        chunk[j] = block.d * f32::from(block.qs[j] & 0x0f) + block.m;
                        chunk[j + 16] = block.d * f32::from(block.qs[j] >> 4) + block.m;
                    }
                }
            }
            MatrixData::Q8_0(b) => {
                for (block, chunk) in b[r * per..(r + 1) * per].iter().zip(out.chunks_mut(QK)) {
                    for (o, &q) in chunk.iter_mut().zip(&block.qs) {
                        *o = block.d * f32::from(q);
                    }
                }
            }
            MatrixData::F32(v) => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
        }
    }

    /// All values as f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_mut(self.cols.max(1)).enumerate() {
            self.row_into(r, row);
        }
        out
    }

    /// The same matrix re-encoded as Q8_0 (`None` when `cols` is not a multiple of 32).
    pub fn to_q8_0(&self) -> Option<Self> {
        if !self.cols.is_multiple_of(QK) {
            return None;
        }
        if let MatrixData::Q8_0(_) = self.data {
            return Some(self.clone());
        }
        let values = self.to_f32();
        let blocks = values.chunks_exact(QK).map(quantize_q8_0).collect();
        Self::new(self.rows, self.cols, MatrixData::Q8_0(blocks))
    }

    /// The same matrix as f32 values.
    pub fn to_f32_matrix(&self) -> Self {
        Self {
            rows: self.rows,
            cols: self.cols,
            data: MatrixData::F32(self.to_f32()),
        }
    }

    /// `parts` stacked by rows into one matrix (one product instead of several), when they share
    /// `cols` and a format.
    pub fn stack(parts: &[&Matrix]) -> Option<Self> {
        let first = parts.first()?;
        let cols = first.cols;
        let mut rows = 0usize;
        let mut data = match first.data {
            MatrixData::Q4_1(_) => MatrixData::Q4_1(Vec::new()),
            MatrixData::Q8_0(_) => MatrixData::Q8_0(Vec::new()),
            MatrixData::F32(_) => MatrixData::F32(Vec::new()),
        };
        for part in parts {
            if part.cols != cols {
                return None;
            }
            rows += part.rows;
            match (&mut data, &part.data) {
                (MatrixData::Q4_1(all), MatrixData::Q4_1(b)) => all.extend_from_slice(b),
                (MatrixData::Q8_0(all), MatrixData::Q8_0(b)) => all.extend_from_slice(b),
                (MatrixData::F32(all), MatrixData::F32(b)) => all.extend_from_slice(b),
                _ => return None,
            }
        }
        Self::new(rows, cols, data)
    }
}

/// One Q8_0 block of 32 values (GGML's rounding: half away from zero).
pub fn quantize_q8_0(xs: &[f32]) -> BlockQ8_0 {
    let amax = xs.iter().fold(0.0f32, |a, x| a.max(x.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, &x) in qs.iter_mut().zip(xs) {
        *q = (x * id).round() as i8;
    }
    BlockQ8_0 { d, qs }
}

/// `xs` (a multiple of 32 long) quantized into `out` (`xs.len() / 32` blocks).
pub fn quantize_row(xs: &[f32], out: &mut [BlockQ8_1]) {
    #[cfg(target_arch = "x86_64")]
    if Kernels::current() >= Kernels::Avx2 {
        // SAFETY: AVX2 and FMA are present (`Kernels` checked at run time).
        unsafe { x86::quantize_row(xs, out) };
        return;
    }
    quantize_row_portable(xs, out);
}

#[inline(always)]
fn quantize_row_portable(xs: &[f32], out: &mut [BlockQ8_1]) {
    for (chunk, block) in xs.chunks_exact(QK).zip(out.iter_mut()) {
        let mut amax = 0.0f32;
        for &x in chunk {
            amax = amax.max(x.abs());
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &x) in block.qs.iter_mut().zip(chunk) {
            let v = (x * id).round() as i8;
            *q = v;
            sum += i32::from(v);
        }
        block.d = d;
        block.s = d * sum as f32;
    }
}

/// `sum(w * x)` for a Q4_1 row and quantized activations (the same number of blocks).
#[inline(always)]
pub fn dot_q4_1_portable(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut total = 0.0f32;
    for (wb, xb) in w.iter().zip(x) {
        let mut sum = 0i32;
        for j in 0..16 {
            sum += i32::from(wb.qs[j] & 0x0f) * i32::from(xb.qs[j]);
            sum += i32::from(wb.qs[j] >> 4) * i32::from(xb.qs[j + 16]);
        }
        total += wb.d * xb.d * sum as f32 + wb.m * xb.s;
    }
    total
}

/// `sum(w * x)` for a Q8_0 row and quantized activations.
#[inline(always)]
pub fn dot_q8_0_portable(w: &[BlockQ8_0], x: &[BlockQ8_1]) -> f32 {
    let mut total = 0.0f32;
    for (wb, xb) in w.iter().zip(x) {
        let mut sum = 0i32;
        for (&a, &b) in wb.qs.iter().zip(&xb.qs) {
            sum += i32::from(a) * i32::from(b);
        }
        total += wb.d * xb.d * sum as f32;
    }
    total
}

/// `sum(a * b)` in f32.
#[inline(always)]
pub fn dot_f32_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = (a.chunks_exact(8), a.len() / 8 * 8);
    for (x, y) in ca.zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut total: f32 = acc.iter().sum();
    for i in ra..a.len() {
        total += a[i] * b[i];
    }
    total
}

/// `sum(a * b)` in f32, AVX2 when present.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Kernels::current() >= Kernels::Avx2 {
        // SAFETY: AVX2 and FMA are present (`Kernels` checked at run time).
        return unsafe { x86::dot_f32(a, b) };
    }
    dot_f32_portable(a, b)
}

/// One query head's view of the KV cache: position `j`'s key for this head is
/// `keys[j * stride + offset..][..head_dim]`, likewise its value.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// Keys, `positions x stride` at least.
    pub keys: &'a [f32],
    /// Values, laid out as the keys.
    pub values: &'a [f32],
    /// Values per cached position (all key/value heads).
    pub stride: usize,
    /// Where this head's key/value head starts within a position.
    pub offset: usize,
    /// Positions attended to (the causal prefix).
    pub positions: usize,
    /// Score scale (`1 / sqrt(head_dim)`).
    pub scale: f32,
}

impl Head<'_> {
    /// Softmax-weighted sum of the values, weights `softmax(scale * q . k_j)`, into `dst`
    /// (`q.len()` values); `scores` is scratch.
    pub fn attend(&self, q: &[f32], scores: &mut Vec<f32>, dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if Kernels::current() >= Kernels::Avx2 {
            // SAFETY: AVX2 and FMA are present (`Kernels` checked at run time).
            unsafe { x86::attend(self, q, scores, dst) };
            return;
        }
        self.attend_portable(q, scores, dst);
    }

    #[inline(always)]
    fn attend_portable(&self, q: &[f32], scores: &mut Vec<f32>, dst: &mut [f32]) {
        let hd = q.len();
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for j in 0..self.positions {
            let at = j * self.stride + self.offset;
            let key = &self.keys[at..at + hd];
            let mut acc = [0.0f32; 8];
            for (a, b) in q.chunks_exact(8).zip(key.chunks_exact(8)) {
                for i in 0..8 {
                    acc[i] += a[i] * b[i];
                }
            }
            let mut dot: f32 = acc.iter().sum();
            for i in hd / 8 * 8..hd {
                dot += q[i] * key[i];
            }
            let s = dot * self.scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        dst.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let at = j * self.stride + self.offset;
            let value = &self.values[at..at + hd];
            let w = p / sum;
            for (o, &v) in dst.iter_mut().zip(value) {
                *o += w * v;
            }
        }
    }
}

/// Tokens handled together against one weight row: the row is unpacked once for all of them.
pub const TILE: usize = 4;

/// Activations of `tokens` rows of `cols` values, as f32 and (when a matrix wants them)
/// quantized.
#[derive(Debug, Default)]
pub struct Input {
    /// `tokens x cols` values.
    pub f32: Vec<f32>,
    /// `tokens x cols / 32` blocks (empty unless quantized).
    pub q: Vec<BlockQ8_1>,
    /// Rows.
    pub tokens: usize,
    /// Values per row.
    pub cols: usize,
}

impl Input {
    /// Takes `values` (`tokens x cols`) and quantizes them when `quantize`.
    pub fn set(&mut self, values: &[f32], tokens: usize, cols: usize, quantize: bool) {
        self.tokens = tokens;
        self.cols = cols;
        self.f32.clear();
        self.f32.extend_from_slice(values);
        self.q.clear();
        if quantize && cols.is_multiple_of(QK) {
            self.q.resize(values.len() / QK, BlockQ8_1::default());
            quantize_row(values, &mut self.q);
        }
    }
}

/// One weight row against the quantized activations of tokens `tokens` (`per` blocks each):
/// [`TILE`] tokens at a time through `tile`, the rest one by one through `single`; each result
/// goes to `put(token, value)`.
#[inline(always)]
fn tiles(
    tokens: std::ops::Range<usize>,
    per: usize,
    q: &[BlockQ8_1],
    tile: impl Fn(&[&[BlockQ8_1]; TILE]) -> [f32; TILE],
    single: impl Fn(&[BlockQ8_1]) -> f32,
    mut put: impl FnMut(usize, f32),
) {
    let row = |t: usize| &q[t * per..(t + 1) * per];
    let mut tok = tokens.start;
    while tok + TILE <= tokens.end {
        let xs = [row(tok), row(tok + 1), row(tok + 2), row(tok + 3)];
        for (j, v) in tile(&xs).into_iter().enumerate() {
            put(tok + j, v);
        }
        tok += TILE;
    }
    for t in tok..tokens.end {
        put(t, single(row(t)));
    }
}

const _: () = assert!(TILE == 4, "tiles() spells out four rows");

/// Rows `rows` of `W x` for the tokens `tokens` into `out`: the value of row `r` for token `t`
/// at `(t - tokens.start) * stride + r - rows.start`.
fn product(
    k: Kernels,
    m: &Matrix,
    input: &Input,
    rows: std::ops::Range<usize>,
    tokens: std::ops::Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    let cols = m.cols;
    let per = cols / QK;
    let (r0, t0) = (rows.start, tokens.start);
    // Tokens in chunks whose activations stay in the first-level cache while every row of the
    // range passes over them (a long prompt's whole activations would not).
    for c0 in tokens.clone().step_by(CHUNK) {
        let chunk = c0..(c0 + CHUNK).min(tokens.end);
        for r in rows.clone() {
            let mut put = |t: usize, v: f32| out[(t - t0) * stride + r - r0] = v;
            match &m.data {
                MatrixData::Q4_1(b) => {
                    let w = &b[r * per..(r + 1) * per];
                    tiles(
                        chunk.clone(),
                        per,
                        &input.q,
                        |xs| q4_1_rows(k, w, xs),
                        |x| q4_1_rows(k, w, &[x])[0],
                        &mut put,
                    );
                }
                MatrixData::Q8_0(b) => {
                    let w = &b[r * per..(r + 1) * per];
                    tiles(
                        chunk.clone(),
                        per,
                        &input.q,
                        |xs| q8_0_rows(k, w, xs),
                        |x| q8_0_rows(k, w, &[x])[0],
                        &mut put,
                    );
                }
                MatrixData::F32(v) => {
                    let w = &v[r * cols..(r + 1) * cols];
                    for t in chunk.clone() {
                        put(t, dot_f32(w, &input.f32[t * cols..(t + 1) * cols]));
                    }
                }
            }
        }
    }
}

/// Tokens per pass over a range of weight rows ([`product`]).
const CHUNK: usize = 32;

/// A Q4_1 row against `N` activation rows with the kernels `k` (as [`Kernels::clamp`] left it).
#[inline(always)]
fn q4_1_rows<const N: usize>(k: Kernels, w: &[BlockQ4_1], xs: &[&[BlockQ8_1]; N]) -> [f32; N] {
    match k {
        // SAFETY: a clamped `Kernels` names only instructions the CPU has.
        #[cfg(target_arch = "x86_64")]
        Kernels::Vnni => unsafe { x86::dot_q4_1_tile_vnni(w, xs) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Kernels::Avx2 => unsafe { x86::dot_q4_1_tile(w, xs) },
        _ => xs.map(|x| dot_q4_1_portable(w, x)),
    }
}

/// A Q8_0 row against `N` activation rows with the kernels `k` (as [`Kernels::clamp`] left it).
#[inline(always)]
fn q8_0_rows<const N: usize>(k: Kernels, w: &[BlockQ8_0], xs: &[&[BlockQ8_1]; N]) -> [f32; N] {
    match k {
        // SAFETY: a clamped `Kernels` names only instructions the CPU has.
        #[cfg(target_arch = "x86_64")]
        Kernels::Vnni => unsafe { x86::dot_q8_0_tile_vnni(w, xs) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Kernels::Avx2 => unsafe { x86::dot_q8_0_tile(w, xs) },
        _ => xs.map(|x| dot_q8_0_portable(w, x)),
    }
}

/// Which quantized dot products run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernels {
    /// Plain Rust, any CPU.
    Portable,
    /// AVX2 and FMA.
    Avx2,
    /// AVX2 with AVX-512 VNNI's `vpdpbusd` on 256-bit registers.
    Vnni,
}

impl Kernels {
    /// The best this CPU has.
    pub fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if x86::vnni() {
                return Self::Vnni;
            }
            if x86::available() {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// `self`, or the best this CPU has when that is less.
    pub fn clamp(self) -> Self {
        self.min(Self::detected())
    }

    /// What the engine uses: [`Kernels::detected`], capped by `INFERMESH_LLM_KERNELS`
    /// (`portable`, `avx2` or `vnni`) when set, read once.
    pub fn current() -> Self {
        static CURRENT: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(|| {
            let cap = match std::env::var("INFERMESH_LLM_KERNELS").as_deref() {
                Ok("portable") => Self::Portable,
                Ok("avx2") => Self::Avx2,
                _ => Self::Vnni,
            };
            cap.clamp()
        })
    }

    /// Lower-case name (`portable`, `avx2`, `vnni`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Vnni => "vnni",
        }
    }
}

/// `out[token][row] = (W x_token)[row]` for every token of `input` (`out` is `tokens x rows`),
/// split over the current rayon pool (by rows for a few tokens, by tokens for a prompt).
pub fn matmul(m: &Matrix, input: &Input, out: &mut Vec<f32>) {
    matmul_with(Kernels::current(), m, input, out);
}

/// [`matmul`] with the kernels `kernels` (or the best the CPU has, when less).
pub fn matmul_with(kernels: Kernels, m: &Matrix, input: &Input, out: &mut Vec<f32>) {
    use rayon::prelude::*;
    let k = kernels.clamp();
    let t = input.tokens;
    let rows = m.rows;
    debug_assert_eq!(input.cols, m.cols);
    debug_assert!(!m.wants_quantized() || input.q.len() * QK == t * m.cols);
    out.clear();
    out.resize(rows * t, 0.0);
    // Enough pieces for every thread, few enough that one costs far more than its scheduling.
    let threads = rayon::current_num_threads().max(1);
    let work = rows * m.cols * t;
    if work < 64 * 1024 || threads == 1 {
        product(k, m, input, 0..rows, 0..t, out, rows);
    } else if t >= TOKEN_SPLIT {
        // A prompt: each piece takes a run of tokens through every row (its outputs are
        // contiguous; each piece reads the whole matrix, which the arithmetic outweighs).
        let per = t.div_ceil(threads * 2).max(1);
        out.par_chunks_mut(per * rows)
            .enumerate()
            .for_each(|(i, chunk)| {
                let start = i * per;
                let end = start + chunk.len() / rows;
                product(k, m, input, 0..rows, start..end, chunk, rows);
            });
    } else {
        // One token or a few: each piece takes a run of rows for every token.
        let per = rows.div_ceil((threads * 2).min(rows)).max(1);
        if t == 1 {
            out.par_chunks_mut(per).enumerate().for_each(|(i, chunk)| {
                let start = i * per;
                let n = chunk.len();
                product(k, m, input, start..start + n, 0..1, chunk, n);
            });
        } else {
            let starts: Vec<usize> = (0..rows).step_by(per).collect();
            let blocks: Vec<(usize, Vec<f32>)> = starts
                .into_par_iter()
                .map(|start| {
                    let n = per.min(rows - start);
                    let mut block = vec![0.0f32; n * t];
                    product(k, m, input, start..start + n, 0..t, &mut block, n);
                    (start, block)
                })
                .collect();
            for (start, block) in blocks {
                let n = block.len() / t;
                for (j, token) in block.chunks(n).enumerate() {
                    out[j * rows + start..j * rows + start + n].copy_from_slice(token);
                }
            }
        }
    }
}

/// From this many tokens on, a product is split over threads by tokens rather than by rows.
const TOKEN_SPLIT: usize = 16;

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q4_blocks(seed: &[u8], n: usize) -> Vec<BlockQ4_1> {
        (0..n)
            .map(|i| BlockQ4_1 {
                d: 0.01 + f32::from(seed[i % seed.len()]) / 1000.0,
                m: -0.05 * f32::from(seed[(i + 1) % seed.len()] % 7),
                qs: std::array::from_fn(|j| seed[(i * 16 + j) % seed.len()]),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn kernels_agree_with_the_portable_code_and_the_dequantized_product(
            seed in proptest::collection::vec(any::<u8>(), 64..200),
            values in proptest::collection::vec(-4.0f32..4.0, 96..=96),
            tokens in 1usize..7,
        ) {
            let blocks = 3;
            let rows = 5;
            let w4 = q4_blocks(&seed, rows * blocks);
            let m4 = Matrix::new(rows, blocks * QK, MatrixData::Q4_1(w4.clone())).expect("valid");
            let m8 = m4.to_q8_0().expect("valid");
            let mf = m4.to_f32_matrix();
            let xs: Vec<f32> = (0..tokens).flat_map(|t| values.iter().map(move |v| v * (t as f32 + 1.0))).collect();
            let mut input = Input::default();
            input.set(&xs, tokens, blocks * QK, true);
            let mut out = Vec::new();
            for (m, kernels) in [&m4, &m8, &mf].into_iter().flat_map(|m| {
                [Kernels::Portable, Kernels::Avx2, Kernels::Vnni].map(|k| (m, k))
            }) {
                matmul_with(kernels, m, &input, &mut out);
                let dense = m.to_f32();
                for t in 0..tokens {
                    let x = &xs[t * 96..(t + 1) * 96];
                    let xq = &input.q[t * blocks..(t + 1) * blocks];
                    for r in 0..rows {
                        let got = out[t * rows + r];
                        // Against the portable kernel on the same quantized activations.
                        let portable = match m.data() {
                            MatrixData::Q4_1(b) => dot_q4_1_portable(&b[r * blocks..(r + 1) * blocks], xq),
                            MatrixData::Q8_0(b) => dot_q8_0_portable(&b[r * blocks..(r + 1) * blocks], xq),
                            MatrixData::F32(_) => dot_f32_portable(&dense[r * 96..(r + 1) * 96], x),
                        };
                        prop_assert!((got - portable).abs() <= 1e-3 * (1.0 + portable.abs()), "{} {kernels:?} {got} {portable}", m.type_name());
                        // Against the exact product: within the activation quantization error.
                        let exact: f32 = dense[r * 96..(r + 1) * 96].iter().zip(x).map(|(a, b)| a * b).sum();
                        let bound: f32 = dense[r * 96..(r + 1) * 96].iter().map(|a| a.abs()).sum::<f32>() * 4.0 * (t as f32 + 1.0) / 127.0;
                        prop_assert!((got - exact).abs() <= bound + 1e-3, "{} {got} {exact}", m.type_name());
                    }
                }
            }
        }
    }

    #[test]
    fn products_split_over_threads_equal_one_thread_bit_for_bit() {
        let (rows, cols) = (300, 256);
        let seed: Vec<u8> = (0..251u32).map(|i| (i * 7 + 3) as u8).collect();
        let m4 = Matrix::new(
            rows,
            cols,
            MatrixData::Q4_1(q4_blocks(&seed, rows * cols / QK)),
        )
        .expect("valid");
        let m8 = m4.to_q8_0().expect("valid");
        let mf = m4.to_f32_matrix();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("valid");
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("valid");
        // One token (split by rows), a few (rows, then placed), a prompt (split by tokens).
        for tokens in [1, 5, 40] {
            let xs: Vec<f32> = (0..tokens * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let mut input = Input::default();
            input.set(&xs, tokens, cols, true);
            for m in [&m4, &m8, &mf] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                one.install(|| matmul(m, &input, &mut a));
                two.install(|| matmul(m, &input, &mut b));
                assert_eq!(a.len(), tokens * rows);
                assert_eq!(a, b, "{} with {tokens} tokens", m.type_name());
                // Token-major: token 3's row 7 is its own product.
                let t = tokens.min(4) - 1;
                let xq = &input.q[t * cols / QK..(t + 1) * cols / QK];
                let expected = match m.data() {
                    MatrixData::Q4_1(w) => dot_q4_1_portable(&w[7 * 8..8 * 8], xq),
                    MatrixData::Q8_0(w) => dot_q8_0_portable(&w[7 * 8..8 * 8], xq),
                    MatrixData::F32(w) => {
                        dot_f32_portable(&w[7 * cols..8 * cols], &xs[t * cols..(t + 1) * cols])
                    }
                };
                let got = a[t * rows + 7];
                assert!(
                    (got - expected).abs() <= 1e-3 * (1.0 + expected.abs()),
                    "{got} {expected}"
                );
            }
        }
    }

    #[test]
    fn attention_weights_sum_to_one_and_follow_the_scores() {
        // Two positions, one head of 8 values: keys give scores 0 and ln 3 (scale 1).
        let keys = [0.0f32; 8]
            .iter()
            .copied()
            .chain([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3f32.ln()])
            .collect::<Vec<_>>();
        let values = [1.0f32; 8]
            .iter()
            .copied()
            .chain([5.0f32; 8])
            .collect::<Vec<_>>();
        let head = Head {
            keys: &keys,
            values: &values,
            stride: 8,
            offset: 0,
            positions: 2,
            scale: 1.0,
        };
        let q = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let (mut scores, mut dst) = (Vec::new(), [0.0f32; 8]);
        head.attend(&q, &mut scores, &mut dst);
        // Weights 1/4 and 3/4: 0.25 * 1 + 0.75 * 5 = 4.
        for v in dst {
            assert!((v - 4.0).abs() < 1e-5, "{v}");
        }
        let mut portable = [0.0f32; 8];
        head.attend_portable(&q, &mut scores, &mut portable);
        assert_eq!(dst, portable);
        // Only the first position: its value.
        let first = Head {
            positions: 1,
            ..head
        };
        first.attend(&q, &mut scores, &mut dst);
        assert_eq!(dst, [1.0; 8]);
    }

    #[test]
    fn stacking_concatenates_rows_and_refuses_mixed_formats() {
        let a = Matrix::new(2, QK, MatrixData::F32(vec![1.0; 2 * QK])).expect("valid");
        let b = Matrix::new(3, QK, MatrixData::F32(vec![2.0; 3 * QK])).expect("valid");
        let s = Matrix::stack(&[&a, &b]).expect("valid");
        assert_eq!((s.rows(), s.cols()), (5, QK));
        assert_eq!(s.to_f32()[2 * QK], 2.0);
        let q = b.to_q8_0().expect("valid");
        assert!(Matrix::stack(&[&a, &q]).is_none());
        assert!(Matrix::new(2, 33, MatrixData::Q8_0(vec![])).is_none());
    }

    #[test]
    fn q8_0_quantization_is_ggml_rounding() {
        let xs: Vec<f32> = (0..QK).map(|i| i as f32 - 15.5).collect();
        let b = quantize_q8_0(&xs);
        assert_eq!(b.qs[0], -127);
        assert!((b.d - 15.5 / 127.0).abs() < 1e-7);
        let zero = quantize_q8_0(&[0.0; QK]);
        assert_eq!((zero.d, zero.qs), (0.0, [0; QK]));
    }
}
