/* Time for every Tardigrade module, in one place: milliseconds (or
 * microseconds) on the monotonic clock for deadlines and durations, wall
 * clock milliseconds for timestamps people read, and a sleep. */
#ifndef TG_CLOCK_H
#define TG_CLOCK_H

#include <stdint.h>

int64_t tg_clock_mono_ms(void);
int64_t tg_clock_mono_us(void);
int64_t tg_clock_unix_ms(void);

/* Sleeps ms milliseconds (resumed after signals); nothing for ms <= 0. */
void tg_clock_sleep_ms(int64_t ms);

#endif
