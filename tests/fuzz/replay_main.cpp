// connpool - tests: replays fuzz inputs through the fuzz target, without libFuzzer
// SPDX-License-Identifier: MIT

// Every build (g++ and clang, every sanitizer) runs the seed corpus of tests/fuzz/corpus through
// LLVMFuzzerTestOneInput, plus a few thousand pseudo-random inputs from a fixed seed, so the
// model check stays a regression test where libFuzzer is not available.
//
// Usage: connpool_fuzz_replay [--random N] <file or directory>...

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

int replay(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "connpool_fuzz_replay: cannot read %s\n", file.c_str());
    return 1;
  }
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  long random_inputs = 0;
  long files = 0;
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--random" && i + 1 < argc) {
      random_inputs = std::strtol(argv[++i], nullptr, 10);
      continue;
    }
    const std::filesystem::path path(arg);
    if (std::filesystem::is_directory(path)) {
      for (const auto& entry : std::filesystem::directory_iterator(path)) {
        if (entry.is_regular_file()) {
          failures += replay(entry.path());
          ++files;
        }
      }
    } else {
      failures += replay(path);
      ++files;
    }
  }
  std::mt19937 rng(20261127);
  for (long n = 0; n < random_inputs; ++n) {
    std::vector<std::uint8_t> input(rng() % 256);
    for (auto& b : input) {
      b = static_cast<std::uint8_t>(rng());
    }
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf("connpool_fuzz_replay: %ld corpus files and %ld random inputs agree with the model\n",
              files, random_inputs);
  return failures == 0 ? 0 : 1;
}
