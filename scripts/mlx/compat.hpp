// promptloop: forced include (g++ -include) for building mlx-c 0.7.0 against the mlx-cpu wheel
// on Linux x86_64. Written for promptloop; see scripts/setup.sh (step `mlx`).
//
// 1. GCC 12's libstdc++ has no <format>; mlx-c's private/io.h only calls std::format with "{}"
//    placeholders and streamable arguments, so a sequential "{}" substitution covers it.
// 2. mlx-c declares float16_t / bfloat16_t (and the functions that use them) only on aarch64,
//    while mlx-rs uses them on every target. On x86_64 MLX's own half types are 16-bit structs
//    (one uint16_t), which is the layout the Rust bindings (u16 newtype / u16) expect.
#pragma once
#ifdef __cplusplus
#include <version>

#ifndef __cpp_lib_format
#include <sstream>
#include <string>
#include <string_view>

namespace promptloop_compat {
inline void format_into(std::ostringstream& out, std::string_view fmt) {
  out << fmt;
}
template <class T, class... Rest>
void format_into(
    std::ostringstream& out,
    std::string_view fmt,
    const T& value,
    const Rest&... rest) {
  const auto at = fmt.find("{}");
  if (at == std::string_view::npos) {
    out << fmt;
    return;
  }
  out << fmt.substr(0, at) << value;
  format_into(out, fmt.substr(at + 2), rest...);
}
} // namespace promptloop_compat

namespace std {
template <class... Args>
string format(string_view fmt, const Args&... args) {
  ostringstream out;
  promptloop_compat::format_into(out, fmt, args...);
  return out.str();
}
} // namespace std
#endif // __cpp_lib_format

// (guarded: cmake's compiler probe compiles without the MLX include path)
#if defined(__x86_64__) && __has_include("mlx/types/half_types.h")
#include "mlx/types/half_types.h"
typedef mlx::core::float16_t float16_t;
typedef mlx::core::bfloat16_t bfloat16_t;
#define HAS_FLOAT16
#define HAS_BFLOAT16
#endif
#endif // __cplusplus
