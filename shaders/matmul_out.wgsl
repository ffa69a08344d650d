// The output and params bindings of a standalone matmul (matmul.wgsl, matmul_reg.wgsl); a
// fused epilogue declares its own outputs and store_row.
@group(0) @binding(2) var<storage, read_write> c: array<T>;
@group(0) @binding(3) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;
