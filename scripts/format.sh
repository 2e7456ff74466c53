#!/usr/bin/env bash
# connpool - the format check: clang-format-14 over include tests bench examples.
#
# Usage: scripts/format.sh          check only (--dry-run --Werror); exit 1 on any difference
#        scripts/format.sh --fix    rewrite the files in place
# Pinned to clang-format-14 (Debian 12): newer releases format differently. Override with
# CLANG_FORMAT=<path> at your own risk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clang_format=${CLANG_FORMAT:-clang-format-14}
if ! command -v "$clang_format" >/dev/null 2>&1; then
  echo "format: $clang_format not found (apt-get install clang-format-14)" >&2
  exit 1
fi

dirs=()
for dir in include tests bench examples; do
  [[ -d $dir ]] && dirs+=("$dir")
done
files=()
if ((${#dirs[@]} > 0)); then
  mapfile -d '' files < <(find "${dirs[@]}" -type f \( -name '*.hpp' -o -name '*.cpp' \) -print0 |
    sort -z)
fi
if ((${#files[@]} == 0)); then
  echo "format: no *.hpp or *.cpp files under include tests bench examples"
  exit 0
fi

if [[ ${1:-} == --fix ]]; then
  "$clang_format" -i "${files[@]}"
  echo "format: reformatted ${#files[@]} files with $clang_format"
elif "$clang_format" --dry-run --Werror "${files[@]}"; then
  echo "format: ${#files[@]} files OK ($clang_format)"
else
  echo "format: files above are not formatted; run scripts/format.sh --fix" >&2
  exit 1
fi
