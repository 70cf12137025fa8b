/* promptloop: prepended (clang -include) when generating the mlx-c bindings on Linux x86_64.
 * The same half-precision declarations mlx-c makes on aarch64: __fp16 (a storage-only type
 * clang accepts on every target) becomes bindgen's __BindgenFloat16(u16), and bfloat16_t is a
 * plain u16, as bindgen renders __bf16. compat.hpp gives the C++ side the matching 16-bit types. */
#include <stdint.h>
typedef __fp16 float16_t;
typedef uint16_t bfloat16_t;
#define HAS_FLOAT16
#define HAS_BFLOAT16
