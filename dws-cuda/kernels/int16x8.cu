// The 16x8 mode (blob flags 2): int16 activations, int8 weights, int64
// biases, batch-norm offsets, linear accumulators and attention scores
// (exact). The kernels are quant.cuh's, one entry point each.
#include "quant.cuh"

DWS_KERNEL void quantize_i16(const QuantArgs a) { quantize_q<Int16x8Mode>(a); }
DWS_KERNEL void gather_i16(const GatherArgs a) { gather_q<Int16x8Mode>(a); }
DWS_KERNEL void linear_i16(const LinearQArgs a) { linear_q<Int16x8Mode>(a); }
DWS_KERNEL void set_pool_i16(const SetPoolArgs a) { set_pool_q<Int16x8Mode>(a); }
DWS_KERNEL void attention_i16(const AttnQArgs a) { attention_q<Int16x8Mode>(a); }
DWS_KERNEL void attention_set_i16(const AttnQArgs a) { attention_set_q<Int16x8Mode>(a); }
DWS_KERNEL void scatter_i16(const ScatterQArgs a) { scatter_q<Int16x8Mode>(a); }
DWS_KERNEL void resample_gather_i16(const ResGatherArgs a) { resample_gather_q<Int16x8Mode>(a); }
DWS_KERNEL void resample_scatter_i16(const ResScatterQArgs a) { resample_scatter_q<Int16x8Mode>(a); }
DWS_KERNEL void affine_relu_i16(const AffineArgs a) { affine_relu_q<Int16x8Mode>(a); }
DWS_KERNEL void input_skip_i16(const SkipArgs a) { input_skip_q<Int16x8Mode>(a); }
DWS_KERNEL void head_pool_i16(const HeadPoolArgs a) { head_pool_q<Int16x8Mode>(a); }
DWS_KERNEL void dequant_i16(const DequantArgs a) { dequant_q<Int16x8Mode>(a); }
