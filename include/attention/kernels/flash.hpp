#pragma once
// SPDX-License-Identifier: MIT
//
// The tiled forward kernel under its former name: the forward tile loop (forward.hpp), the
// split-key decode path (decode.hpp) and their workspace. detail::flash names the same namespace
// as detail::kernels (simd.hpp). New code includes the header it needs.

#include "attention/kernels/decode.hpp"
#include "attention/kernels/forward.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/workspace.hpp"
