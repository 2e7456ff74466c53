// connpool - the umbrella header
// SPDX-License-Identifier: MIT
#pragma once

// Includes every core header of connpool. Optional adapters (such as an Asio adapter) are not
// included here; include them yourself when you want them.

#include <connpool/async_multi_host_pool.hpp>
#include <connpool/async_pool.hpp>
#include <connpool/concepts.hpp>
#include <connpool/deadline.hpp>
#include <connpool/errors.hpp>
#include <connpool/handle.hpp>
#include <connpool/histogram.hpp>
#include <connpool/manual_clock.hpp>
#include <connpool/multi_host_pool.hpp>
#include <connpool/options.hpp>
#include <connpool/pool.hpp>
#include <connpool/stats.hpp>
#include <connpool/task.hpp>
#include <connpool/version.hpp>
