#pragma once
// SPDX-License-Identifier: MIT
// Types that are almost masks: each misses one member of the mask protocol
// (attention/masks/protocol.hpp) or has it in a form the protocol does not accept. Used by
// tests/masks/protocol_test.cpp (none is a mask) and tests/masks/protocol_compile_errors.cpp (each
// passed to an entry point fails to compile with a message naming the member).

#include <attention/masks/protocol.hpp>

namespace support {

struct NoCheck {
  attention::TileVisibility visibility(attention::Index, attention::Index, attention::Index,
                                       attention::Index) const {
    return attention::TileVisibility::mixed;
  }
  template <typename Scalar>
  void apply(Scalar*, attention::Index, attention::Index, attention::Index, attention::Index,
             attention::Index) const {}
};

struct NoVisibility {
  void check(const char*, attention::Index, attention::Index) const {}
  template <typename Scalar>
  void apply(Scalar*, attention::Index, attention::Index, attention::Index, attention::Index,
             attention::Index) const {}
};

struct NoApply {
  void check(const char*, attention::Index, attention::Index) const {}
  attention::TileVisibility visibility(attention::Index, attention::Index, attention::Index,
                                       attention::Index) const {
    return attention::TileVisibility::mixed;
  }
};

/// visibility() that is not const: the kernels ask a const mask.
struct NonConstVisibility : NoVisibility {
  attention::TileVisibility visibility(attention::Index, attention::Index, attention::Index,
                                       attention::Index) {
    return attention::TileVisibility::mixed;
  }
};

/// What bind() returns must answer visibility() and apply(); here it cannot.
struct BindWithoutVisibility {
  void check(const char*, attention::Index, attention::Index) const {}
  NoVisibility bind(attention::Index, attention::Index) const { return {}; }
};

/// A mask for float scores only: apply() is no template. A mask (is_mask_v), but not for double.
struct ApplyForFloatOnly : NoApply {
  void apply(float*, attention::Index, attention::Index, attention::Index, attention::Index,
             attention::Index) const {}
};

}  // namespace support
