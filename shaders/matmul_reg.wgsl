// Batched matmul without workgroup memory or barriers, for adapters that are CPUs
// (lavapipe): there, workgroup barriers are expensive and "global" reads hit the CPU's
// caches, so each invocation accumulates an 8x8 register block straight from A and B.
// Same params and bindings as matmul.wgsl; workgroup 8x8 covers a 64x64 output tile (8x8 per invocation).
// bindings: a and b, then c and the params (standalone) or a fused epilogue's outputs

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let M = p_m();
    let N = p_n();
    let K = p_k();
    let batch = wid.z + p_batch_base();
    let bases = batch_bases(batch);
    let a_base = bases.x;
    let b_base = bases.y;
    let a_rs = p_a_rs();
    let a_cs = p_a_cs();
    let b_rs = p_b_rs();
    let b_cs = p_b_cs();
    let r0 = (wid.y * 8u + lid3.y) * 8u;
    let c0 = (wid.x * 8u + lid3.x) * 8u;
    if (r0 >= M || c0 >= N) { return; }
    // clamp the rows / columns read past the edge (their results are not stored)
    var ra: array<u32, 8>;
    var cb: array<u32, 8>;
    for (var j = 0u; j < 8u; j = j + 1u) {
        ra[j] = a_base + min(r0 + j, M - 1u) * a_rs;
        cb[j] = b_base + min(c0 + j, N - 1u) * b_cs;
    }
    var lo: array<vec4<T>, 8>;
    var hi: array<vec4<T>, 8>;
    for (var j = 0u; j < 8u; j = j + 1u) { lo[j] = vec4<T>(T(0)); hi[j] = vec4<T>(T(0)); }
    for (var k = 0u; k < K; k = k + 1u) {
        let kb = k * b_rs;
        let bl = vec4<T>(b[cb[0] + kb], b[cb[1] + kb], b[cb[2] + kb], b[cb[3] + kb]);
        let bh = vec4<T>(b[cb[4] + kb], b[cb[5] + kb], b[cb[6] + kb], b[cb[7] + kb]);
        let ka = k * a_cs;
        let x0 = a[ra[0] + ka]; let x1 = a[ra[1] + ka]; let x2 = a[ra[2] + ka]; let x3 = a[ra[3] + ka];
        let x4 = a[ra[4] + ka]; let x5 = a[ra[5] + ka]; let x6 = a[ra[6] + ka]; let x7 = a[ra[7] + ka];
        lo[0] = lo[0] + x0 * bl; hi[0] = hi[0] + x0 * bh;
        lo[1] = lo[1] + x1 * bl; hi[1] = hi[1] + x1 * bh;
        lo[2] = lo[2] + x2 * bl; hi[2] = hi[2] + x2 * bh;
        lo[3] = lo[3] + x3 * bl; hi[3] = hi[3] + x3 * bh;
        lo[4] = lo[4] + x4 * bl; hi[4] = hi[4] + x4 * bh;
        lo[5] = lo[5] + x5 * bl; hi[5] = hi[5] + x5 * bh;
        lo[6] = lo[6] + x6 * bl; hi[6] = hi[6] + x6 * bh;
        lo[7] = lo[7] + x7 * bl; hi[7] = hi[7] + x7 * bh;
    }
    let c_base = batch * M * N;
    for (var j = 0u; j < 8u; j = j + 1u) {
        store_row(c_base, r0 + j, c0, M, N, lo[j]);
        store_row(c_base, r0 + j, c0 + 4u, M, N, hi[j]);
    }
}
