// A draw from a device-side generator: copy its state [seed_lo, seed_hi, offset_lo,
// offset_hi] into the draw's snapshot, then advance the offset past the draw's Philox blocks
// (64-bit, with carry). Replays of a jitted step advance it exactly as eager calls do.
// params: AdvanceParams

@compute @workgroup_size(1)
fn main() {
    for (var i = 0u; i < 4u; i = i + 1u) {
        snapshot[i] = state[i];
    }
    let lo = state[2] + p_blocks_lo();
    let carry = select(0u, 1u, lo < state[2]);
    state[2] = lo;
    state[3] = state[3] + p_blocks_hi() + carry;
}
