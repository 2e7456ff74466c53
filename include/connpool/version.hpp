// connpool - version macros
// SPDX-License-Identifier: MIT
#pragma once

// The single source of truth for the version: CMakeLists.txt reads these three lines.
#define CONNPOOL_VERSION_MAJOR 0
#define CONNPOOL_VERSION_MINOR 1
#define CONNPOOL_VERSION_PATCH 0

/// The version as one number: major * 10000 + minor * 100 + patch.
#define CONNPOOL_VERSION \
  (CONNPOOL_VERSION_MAJOR * 10000 + CONNPOOL_VERSION_MINOR * 100 + CONNPOOL_VERSION_PATCH)
