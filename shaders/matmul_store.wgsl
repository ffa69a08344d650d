// Shared by the matmul kernels that declare a scalar output `c`.

// Store up to four consecutive outputs of row r from column col (bounds-checked).
fn store_row(c_base: u32, r: u32, col: u32, M: u32, N: u32, v: vec4<T>) {
    if (r >= M) { return; }
    let o = c_base + r * N + col;
    if (col < N) { c[o] = v.x; }
    if (col + 1u < N) { c[o + 1u] = v.y; }
    if (col + 2u < N) { c[o + 2u] = v.z; }
    if (col + 3u < N) { c[o + 3u] = v.w; }
}
