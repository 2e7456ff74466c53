// connpool - tests: a strict UTF-8 check, independent of the library's own
// SPDX-License-Identifier: MIT
#pragma once

// Decodes code points arithmetically (where the library validates byte ranges by table) and
// rejects overlong forms, UTF-16 surrogates, code points above U+10FFFF and truncated or stray
// bytes: a bug shared by both would have to be made twice.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace connpool_test {

/// Whether `s` is well-formed UTF-8 (Unicode 15, section 3.9, D92).
inline bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    std::size_t length = 0;
    std::uint32_t cp = 0;
    if (lead < 0x80) {
      length = 1;
      cp = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      length = 2;
      cp = lead & 0x1Fu;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3;
      cp = lead & 0x0Fu;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4;
      cp = lead & 0x07u;
    } else {
      return false;  // a continuation byte, or 0xF8..0xFF
    }
    if (s.size() - i < length) {
      return false;  // truncated
    }
    for (std::size_t k = 1; k < length; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (c & 0x3Fu);
    }
    constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < smallest[length] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;  // overlong, out of range, or a surrogate
    }
    i += length;
  }
  return true;
}

}  // namespace connpool_test
