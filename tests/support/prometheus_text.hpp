// connpool - test support: reading the Prometheus text exposition format
// SPDX-License-Identifier: MIT
#pragma once

#include <map>
#include <string>

#include "catch.hpp"

namespace connpool_test {

/// The samples of a Prometheus text exposition: "name{labels}" -> value; comment lines are
/// checked to be HELP or TYPE lines and skipped.
inline std::map<std::string, std::string> prometheus_samples(const std::string& text) {
  std::map<std::string, std::string> samples;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = text.find('\n', pos);
    REQUIRE(end != std::string::npos);  // every line ends with a newline
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind('#', 0) == 0) {
      CHECK((line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0));
      continue;
    }
    const std::size_t space = line.rfind(' ');
    REQUIRE(space != std::string::npos);
    samples[line.substr(0, space)] = line.substr(space + 1);
  }
  return samples;
}

}  // namespace connpool_test
