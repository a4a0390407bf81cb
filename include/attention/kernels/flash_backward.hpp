#pragma once
// SPDX-License-Identifier: MIT
//
// The tiled backward kernel under its former name (backward.hpp, backward_tiles.hpp). New code
// includes kernels/backward.hpp.

#include "attention/kernels/backward.hpp"
