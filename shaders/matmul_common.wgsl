// Shared by the matmul skeletons (which declare `params` and the output `c`).
// params: [M, N, K, batch_rank, batch_base, a_off, a_rs, a_cs, b_off, b_rs, b_cs, 0,
//          batch_shape[6] @12, a_batch_strides[6] @18, b_batch_strides[6] @24]

// Offsets of batch `batch`'s A and B matrices (batch dims broadcast by stride 0).
fn batch_bases(batch: u32) -> vec2<u32> {
    var a_base = param(5);
    var b_base = param(8);
    var rem = batch;
    var d = param(3);
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = param(12u + d);
        let idx = rem % size;
        rem = rem / size;
        a_base = a_base + idx * param(18u + d);
        b_base = b_base + idx * param(24u + d);
    }
    return vec2<u32>(a_base, b_base);
}

// Store up to four consecutive outputs of row r from column col (bounds-checked).
fn store_row(c_base: u32, r: u32, col: u32, M: u32, N: u32, v: vec4<T>) {
    if (r >= M) { return; }
    let o = c_base + r * N + col;
    if (col < N) { c[o] = v.x; }
    if (col + 1u < N) { c[o + 1u] = v.y; }
    if (col + 2u < N) { c[o + 2u] = v.z; }
    if (col + 3u < N) { c[o + 3u] = v.w; }
}
