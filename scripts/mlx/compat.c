/* promptloop: Linux definition of the macOS call mlx-rs makes to seed its random state
 * (mlx_rs::random::RandomState::new). A monotonic clock in nanoseconds serves the same role. */
#include <stdint.h>
#include <time.h>

uint64_t mach_approximate_time(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}
