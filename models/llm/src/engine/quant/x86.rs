//! The AVX2 and AVX-512 VNNI kernels: safe functions compiled for those instruction sets, which
//! callers may only enter after [`available`] / [`vnni`] said yes (hence `unsafe` at the call
//! sites).

use super::{BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use std::arch::x86_64::*;

/// Whether AVX2 and FMA are present (cached by std).
#[inline]
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn load32(bytes: &[i8; QK]) -> __m256i {
    // SAFETY: 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma")]
pub fn attend(head: &super::Head<'_>, q: &[f32], scores: &mut Vec<f32>, dst: &mut [f32]) {
    head.attend_portable(q, scores, dst);
}

#[target_feature(enable = "avx2,fma")]
pub fn quantize_row(xs: &[f32], out: &mut [BlockQ8_1]) {
    super::quantize_row_portable(xs, out);
}

/// The kernels for one instruction set: `$features` to compile for, `$dot` the sum of four
/// u8 x i8 products per 32-bit lane (`maddubs` + `madd` on AVX2, one `vpdpbusd` with
/// AVX-512 VNNI).
macro_rules! tiles {
    ($q4:ident, $q8:ident, $features:literal, $dot:ident) => {
        /// Q4_1 row against `N` activation rows of at least as many blocks.
        #[target_feature(enable = $features)]
        pub fn $q4<const N: usize>(w: &[BlockQ4_1], xs: &[&[BlockQ8_1]; N]) -> [f32; N] {
            let n = w.len();
            let xs: [&[BlockQ8_1]; N] = std::array::from_fn(|k| &xs[k][..n]);
            let mask = _mm256_set1_epi8(0x0f);
            let mut acc = [_mm256_setzero_ps(); N];
            let mut mins = [0.0f32; N];
            for (b, wb) in w.iter().enumerate() {
                // SAFETY: 16 readable bytes; unaligned load.
                let packed = unsafe { _mm_loadu_si128(wb.qs.as_ptr().cast()) };
                let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
                let q = _mm256_and_si256(both, mask);
                for k in 0..N {
                    let xb = &xs[k][b];
                    let p = $dot(q, load32(&xb.qs));
                    let scale = _mm256_set1_ps(wb.d * xb.d);
                    acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[k]);
                    mins[k] += wb.m * xb.s;
                }
            }
            let mut out = [0.0f32; N];
            for k in 0..N {
                out[k] = hsum(acc[k]) + mins[k];
            }
            out
        }

        /// Q8_0 row against `N` activation rows of at least as many blocks.
        #[target_feature(enable = $features)]
        pub fn $q8<const N: usize>(w: &[BlockQ8_0], xs: &[&[BlockQ8_1]; N]) -> [f32; N] {
            let n = w.len();
            let xs: [&[BlockQ8_1]; N] = std::array::from_fn(|k| &xs[k][..n]);
            let mut acc = [_mm256_setzero_ps(); N];
            for (b, wb) in w.iter().enumerate() {
                let q = load32(&wb.qs);
                // Unsigned by signed: |w| times x carrying w's sign.
                let abs = _mm256_sign_epi8(q, q);
                for k in 0..N {
                    let xb = &xs[k][b];
                    let p = $dot(abs, _mm256_sign_epi8(load32(&xb.qs), q));
                    let scale = _mm256_set1_ps(wb.d * xb.d);
                    acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[k]);
                }
            }
            let mut out = [0.0f32; N];
            for k in 0..N {
                out[k] = hsum(acc[k]);
            }
            out
        }
    };
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_avx2(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
#[inline]
fn dot_vnni(u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
}

tiles!(dot_q4_1_tile, dot_q8_0_tile, "avx2,fma", dot_avx2);
tiles!(
    dot_q4_1_tile_vnni,
    dot_q8_0_tile_vnni,
    "avx2,fma,avx512vnni,avx512vl",
    dot_vnni
);

/// Whether AVX-512 VNNI (with VL, for 256-bit registers) is present as well.
#[inline]
pub fn vnni() -> bool {
    available() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
}

#[target_feature(enable = "avx2,fma")]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, the length of both slices.
        unsafe {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                acc1,
            );
        }
        i += 16;
    }
    let mut total = hsum(_mm256_add_ps(acc0, acc1));
    while i < n {
        total += a[i] * b[i];
        i += 1;
    }
    total
}
