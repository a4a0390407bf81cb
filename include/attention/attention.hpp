#pragma once
// SPDX-License-Identifier: MIT
//
// attention: exact scaled dot-product and multi-head attention on Eigen.
//   #include <attention/attention.hpp>
// brings in every public header.

#include "attention/alibi.hpp"
#include "attention/cache_attention.hpp"
#include "attention/errors.hpp"
#include "attention/heads.hpp"
#include "attention/int8_kv_cache.hpp"
#include "attention/isa.hpp"
#include "attention/kv_cache.hpp"
#include "attention/low_precision.hpp"
#include "attention/mask.hpp"
#include "attention/multi_head.hpp"
#include "attention/multi_head_backward.hpp"
#include "attention/multi_head_positions.hpp"
#include "attention/multi_head_shape.hpp"
#include "attention/multi_head_weights.hpp"
#include "attention/options.hpp"
#include "attention/partial.hpp"
#include "attention/projection.hpp"
#include "attention/rope.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/scaled_dot_product_backward.hpp"
#include "attention/scratch.hpp"
#include "attention/softmax.hpp"
#include "attention/types.hpp"
#include "attention/version.hpp"
#include "attention/workspace.hpp"
