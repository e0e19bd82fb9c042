// The int8 mode (blob flags 1): int8 activations and weights, int32 biases,
// accumulators and scores (wrapping). The kernels are quant.cuh's, one entry
// point each.
#include "quant.cuh"

DWS_KERNEL void quantize_i8(const QuantArgs a) { quantize_q<Int8Mode>(a); }
DWS_KERNEL void gather_i8(const GatherArgs a) { gather_q<Int8Mode>(a); }
DWS_KERNEL void linear_i8(const LinearQArgs a) { linear_q<Int8Mode>(a); }
DWS_KERNEL void set_pool_i8(const SetPoolArgs a) { set_pool_q<Int8Mode>(a); }
DWS_KERNEL void attention_i8(const AttnQArgs a) { attention_q<Int8Mode>(a); }
DWS_KERNEL void attention_set_i8(const AttnQArgs a) { attention_set_q<Int8Mode>(a); }
DWS_KERNEL void scatter_i8(const ScatterQArgs a) { scatter_q<Int8Mode>(a); }
DWS_KERNEL void resample_gather_i8(const ResGatherArgs a) { resample_gather_q<Int8Mode>(a); }
DWS_KERNEL void resample_scatter_i8(const ResScatterQArgs a) { resample_scatter_q<Int8Mode>(a); }
DWS_KERNEL void affine_relu_i8(const AffineArgs a) { affine_relu_q<Int8Mode>(a); }
DWS_KERNEL void input_skip_i8(const SkipArgs a) { input_skip_q<Int8Mode>(a); }
DWS_KERNEL void head_pool_i8(const HeadPoolArgs a) { head_pool_q<Int8Mode>(a); }
DWS_KERNEL void dequant_i8(const DequantArgs a) { dequant_q<Int8Mode>(a); }
