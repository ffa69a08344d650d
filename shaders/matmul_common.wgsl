// Shared by the matmul kernels (which declare `params`).
// params: MatmulParams

// Offsets of batch `batch`'s A and B matrices (batch dims broadcast by stride 0).
fn batch_bases(batch: u32) -> vec2<u32> {
    var a_base = p_a_off();
    var b_base = p_b_off();
    var rem = batch;
    var d = p_batch_rank();
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = p_batch_shape(d);
        let idx = rem % size;
        rem = rem / size;
        a_base = a_base + idx * p_a_batch_strides(d);
        b_base = b_base + idx * p_b_batch_strides(d);
    }
    return vec2<u32>(a_base, b_base);
}
